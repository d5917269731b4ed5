"""Surrogate gradients: the forward pass is a Heaviside step, the backward pass a smooth bump.

Every surrogate is written as a function of x = membrane - threshold and peaks at x = 0.
`derivative` is used both by the fused neurons' hand-written backward and by `__call__`.
"""

import math

import torch

from snn.checks import is_number, require


class Surrogate:
    default_slope = 1.0
    kernel_id = None  # the same formula's number in csrc/time_loop.h's `Surrogate` enum, if it has one

    def __init__(self, slope: float | None = None):
        self.slope = float(self.default_slope if slope is None else slope)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _Heaviside.apply(x, self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slope={self.slope})"


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


class ATan(Surrogate):
    """d/dx of arctan(pi/2 * slope * x) / pi, as in snnTorch and Fang et al. (2021)."""

    default_slope = 2.0
    kernel_id = 0

    def derivative(self, x):
        u = x * (math.pi / 2 * self.slope)  # in place from here on: this runs on [T, B, N] tensors
        return u.square_().add_(1).reciprocal_().mul_(self.slope / 2)


class FastSigmoid(Surrogate):
    """1 / (slope * |x| + 1)^2 (Zenke & Ganguli's SuperSpike)."""

    default_slope = 25.0
    kernel_id = 1

    def derivative(self, x):
        return x.abs().mul_(self.slope).add_(1).square_().reciprocal_()


class Sigmoid(Surrogate):
    """Derivative of sigmoid(slope * x)."""

    default_slope = 25.0
    kernel_id = 2

    def derivative(self, x):
        kx = self.slope * x  # s(kx) * s(-kx) rather than s * (1 - s): no underflow to 0 for large x
        return self.slope * torch.sigmoid(kx) * torch.sigmoid(-kx)


class Triangle(Surrogate):
    """The ZIF triangle: (1/gamma)^2 * max(0, gamma - |x|) with gamma = 1 / slope."""

    default_slope = 1.0
    kernel_id = 3

    def derivative(self, x):
        return (self.slope - self.slope**2 * x.abs()).clamp_min(0)


class StraightThrough(Surrogate):
    """Passes the gradient unchanged (slope is ignored)."""

    kernel_id = 4

    def derivative(self, x):
        return torch.ones_like(x)


SURROGATES = {
    "atan": ATan,
    "fast_sigmoid": FastSigmoid,
    "sigmoid": Sigmoid,
    "triangle": Triangle,
    "straight_through": StraightThrough,
}


def surrogate_by_name(name: str, slope: float | None = None) -> Surrogate:
    require(name in SURROGATES, "surrogate", name, ", ".join(SURROGATES))
    require(slope is None or (is_number(slope) and slope > 0), "slope", slope, "a number > 0, or null for the default")
    return SURROGATES[name](slope)
