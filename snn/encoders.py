"""Input encoders: a `[B, C, H, W]` batch of intensities in [0, 1] becomes a `[T, B, *step shape]` sequence: the
image itself at every step (`[T, B, C, H, W]`), or its pixels one by one, rows one by one (sequential), or events
(snn/delta.py). `output_shape` says the step shape, and the spiking network is sized by it (snn/build.py)."""

import functools
from collections.abc import Sequence

import torch
from torch import nn

from snn import kernels
from snn.checks import ConfigError, is_count, is_number, require


class Encoder(nn.Module):
    stochastic = False  # whether the same image gives different inputs on every pass

    def __init__(self, T: int):
        super().__init__()
        require(is_count(T), "T", T, "an integer >= 1")
        self.T = int(T)

    def extra_repr(self) -> str:
        return f"T={self.T}"

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of one sample at one step, for an image of `input_shape` ([C, H, W]): the image's own here."""
        return tuple(input_shape)


class RateEncoder(Encoder):
    """Bernoulli spikes: at each step a pixel fires with probability min(1, gain * intensity)."""

    stochastic = True

    def __init__(self, T: int, gain: float = 1.0):
        super().__init__(T)
        require(is_number(gain) and gain > 0, "gain", gain, "a number > 0")
        self.gain = float(gain)

    def forward(self, images):
        p = (images * self.gain).clamp_(0, 1)
        # 16-bit uniforms: P(fire) = round(p * 2^16) / 2^16, within 2^-17 of p. One seed from torch's (CPU) generator
        # per batch, the uniforms from a counter-based generator (splitmix64_words): the same spikes on every device,
        # with or without the C++ kernel (csrc/rate.cpp, which draws and compares in one parallel pass).
        threshold = (p * 65536).round_().to(torch.int32) - 32768
        seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64))
        if kernels.usable(images, dtypes=kernels.FLOAT_OR_BF16):
            return kernels.load().rate_spikes(seed, threshold, self.T, images.dtype)
        n = self.T * p.numel()
        uniform = splitmix64_words(seed, (n + 3) // 4, images.device).view(torch.int16)[:n].view(self.T, *p.shape)
        return (uniform < threshold).to(images.dtype)


def _logical_shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)  # torch's >> on int64 copies the sign bit


def _signed(constant: int) -> int:
    return constant - 2**64 if constant >= 2**63 else constant


def splitmix64_words(seed: int, count: int, device) -> torch.Tensor:
    """Words k = 0..count-1 of SplitMix64 (Steele et al. 2014) from `seed`, as int64 (products wrap as in C)."""
    z = torch.arange(1, count + 1, dtype=torch.int64, device=device) * _signed(0x9E3779B97F4A7C15) + seed
    z = (z ^ _logical_shift(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _logical_shift(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _logical_shift(z, 31)


class LatencyEncoder(Encoder):
    """One spike per nonzero pixel at step round((1 - intensity) * (T - 1)): brighter fires earlier."""

    def forward(self, images):
        x = images.clamp(0, 1)
        fire_at = torch.round((1 - x) * (self.T - 1)).long()
        steps = torch.arange(self.T, device=images.device).view(-1, *[1] * images.dim())
        return ((steps == fire_at) & (x > 0)).to(images.dtype)


class DirectEncoder(Encoder):
    """The analog image is the input current at every step (an expanded view: no copy)."""

    def forward(self, images):
        return images.expand(self.T, *images.shape)


ORDERS = ("pixels", "rows")


@functools.cache
def permutation(n: int, seed: int) -> torch.Tensor:
    """A fixed permutation of n pixel positions: from its own seeded generator (never the global one), so every run,
    process and machine with this torch draws the same; tests/test_sequence_encoders.py pins its first values."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed), device="cpu")


class SequentialEncoder(Encoder):
    """The image as a sequence of its analog values (sequential MNIST): `order=pixels` one pixel per step (T = H*W,
    C values per step), `order=rows` one row per step (T = H, C*W values). `permute`: the pixel positions in a fixed
    order drawn from `permutation_seed` first (PS-MNIST; with rows, each step holds the next W permuted pixels)."""

    def __init__(self, T: int, order: str = "pixels", permute: bool = False, permutation_seed: int = 0):
        super().__init__(T)
        require(order in ORDERS, "order", order, " | ".join(ORDERS))
        require(isinstance(permute, bool), "permute", permute, "true or false")
        require(is_count(permutation_seed, 0), "permutation_seed", permutation_seed, "an integer >= 0")
        self.order, self.permute, self.permutation_seed = order, permute, int(permutation_seed)

    def extra_repr(self) -> str:
        return f"T={self.T}, order={self.order}, permute={self.permute}, permutation_seed={self.permutation_seed}"

    def _steps(self, input_shape: Sequence[int]) -> int:
        """The one T this order allows for images of `input_shape`; a ConfigError (one line) for any other."""
        _, height, width = input_shape
        steps, what = (height * width, "pixel") if self.order == "pixels" else (height, "row")
        if self.T != steps:
            raise ConfigError(
                f"T={self.T} is not allowed with encoder=sequential order={self.order}: T must be {steps} (one step "
                f"per {what} of a {height}x{width} image); set T={steps}"
            )
        return steps

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        channels, _, width = input_shape
        self._steps(input_shape)
        return (channels,) if self.order == "pixels" else (channels * width,)

    def forward(self, images):
        B, C, H, W = images.shape
        steps = self._steps((C, H, W))
        x = images.flatten(2)  # [B, C, H*W]: pixel positions in reading order
        if self.permute:
            x = x[:, :, permutation(H * W, self.permutation_seed).to(images.device)]
        # [B, C, T, pixels per step] -> [T, B, C * pixels per step]: a row's values follow each other per channel
        return x.view(B, C, steps, -1).permute(2, 0, 1, 3).reshape(steps, B, -1)
