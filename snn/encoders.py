"""Input encoders: a `[B, C, H, W]` batch of intensities in [0, 1] becomes a `[T, B, C, H, W]` sequence."""

import torch
from torch import nn

from snn import kernels
from snn.checks import is_count, is_number, require


class Encoder(nn.Module):
    stochastic = False  # whether the same image gives different inputs on every pass

    def __init__(self, T: int):
        super().__init__()
        require(is_count(T), "T", T, "an integer >= 1")
        self.T = int(T)

    def extra_repr(self) -> str:
        return f"T={self.T}"


class RateEncoder(Encoder):
    """Bernoulli spikes: at each step a pixel fires with probability min(1, gain * intensity)."""

    stochastic = True

    def __init__(self, T: int, gain: float = 1.0):
        super().__init__(T)
        require(is_number(gain) and gain > 0, "gain", gain, "a number > 0")
        self.gain = float(gain)

    def forward(self, images):
        p = (images * self.gain).clamp_(0, 1)
        # 16-bit uniforms, four per 64-bit random word: drawing numbers, not comparing them, is the cost on a CPU
        # (3 ms instead of 9 ms for a batch of 128 at T=25). P(fire) = round(p * 2^16) / 2^16, within 2^-17 of p.
        threshold = (p * 65536).round_().to(torch.int32) - 32768
        n = self.T * p.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=images.device)
        uniform = words.view(torch.int16)[:n].view(self.T, *p.shape)
        if kernels.usable(images, dtypes=kernels.FLOAT_OR_BF16):  # the same comparison in one pass (csrc/rate.cpp)
            return kernels.load().rate_spikes(uniform, threshold, images.dtype)
        return (uniform < threshold).to(images.dtype)


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
