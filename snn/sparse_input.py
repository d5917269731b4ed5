"""Event-driven linear layers: when the input is spikes (mostly zeros), add up only the weights of the inputs
that fired, in the forward pass and in the weight gradient.

On CPU this runs the C++ kernel `csrc/sparse_input.cpp` (see `snn.kernels`). On other devices, for too dense
inputs, or where the kernel cannot be built, `nn.Linear`'s dense product runs instead; both give the same numbers
up to float rounding.
"""

import torch
from torch import nn

from snn import kernels
from snn.checks import require

MODES = ("auto", "always", "never")


class _SparseInputProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, row_start, column, value):
        ctx.save_for_backward(weight, row_start, column, value)
        ctx.in_features, ctx.has_bias = x.shape[1], bias is not None
        return kernels.load().sparse_mm(row_start, column, value, weight.t(), bias)

    @staticmethod
    def backward(ctx, grad_out):
        weight, *csr = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:  # dW^T = x^T dy, walking x column by column
            x_t = kernels.load().transpose_csr(*csr, ctx.in_features)
            grad_weight = kernels.load().sparse_mm(*x_t, grad_out, None).t()
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None


class SparseInputLinear(nn.Linear):
    """`nn.Linear` for spike inputs. `mode`: auto (event-driven on CPU when at most `max_density` of the
    inputs are non-zero), always (event-driven on CPU whatever the density), never (dense).
    0.4 is where both cost the same for the 784-1000 layer on the 2-core development machine (docs/speed.md)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, mode: str = "auto", max_density: float = 0.4
    ):
        super().__init__(in_features, out_features, bias)
        require(mode in MODES, "sparse_input", mode, ", ".join(MODES))
        self.mode, self.max_density = mode, max_density

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eligible = self.mode != "never" and x.dim() == 2 and self.out_features >= 16  # the kernel's smallest block
        if not eligible or not kernels.usable(x, self.weight):
            return super().forward(x)
        csr = kernels.load().to_csr(x.detach())
        if self.mode == "auto" and csr[1].numel() > self.max_density * x.numel():
            return super().forward(x)
        return _SparseInputProduct.apply(x, self.weight, self.bias, *csr)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparse_input={self.mode}"
