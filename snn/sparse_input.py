"""Event-driven linear layers: when the input is spikes (mostly zeros), add up only the weights of the inputs
that fired, in the forward pass and in the weight gradient.

On CPU this runs the C++ kernel `csrc/sparse_input.cpp` (see `snn.kernels`). On other devices, for too dense
inputs, or where the kernel cannot be built, `nn.Linear`'s dense product runs instead; both give the same numbers
up to float rounding. Under bf16 autocast the kernel reads the weights (forward) and the output gradient (weight
gradient) in bf16 and returns a bf16 output as `nn.Linear` would, but adds up in float32 and returns the weight
gradient in float32 (autocast's dense product rounds it to bf16).
"""

import torch
from torch import nn

from snn import kernels
from snn.checks import require

MODES = ("auto", "always", "never")


class _SparseInputProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dtype, row_start, column, value):
        """dtype: the output's, float32 or (under autocast) bf16, in which the weights are then read too."""
        dense = kernels.load().transpose_to(weight, dtype)  # W^T, in bf16 kept for the input gradient
        saved = weight if dtype == torch.float32 else dense
        ctx.save_for_backward(saved, row_start, column, value)
        ctx.in_features, ctx.has_bias, ctx.x_dtype = x.shape[1], bias is not None, x.dtype
        return kernels.load().sparse_mm(row_start, column, value, dense, bias, dtype)

    @staticmethod
    def backward(ctx, grad_out):
        saved, *csr = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:  # saved: W, or W^T in bf16
            grad_x = grad_out @ saved if saved.dtype == torch.float32 else (grad_out @ saved.t()).to(ctx.x_dtype)
        grad_weight = grad_bias = None
        bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1]:  # dW^T = x^T dy, walking x column by column, float32 sums
            # with a row of ones appended to x^T, the same pass returns the bias gradient (the sum of dy's rows)
            x_t = kernels.load().transpose_csr(*csr, ctx.in_features, bias_grad)
            products = kernels.load().sparse_mm(*x_t, grad_out, None, torch.float32)
            grad_weight = kernels.load().transpose_to(products[: ctx.in_features], torch.float32)  # as W: no copy
            grad_bias = products[ctx.in_features] if bias_grad else None
        elif bias_grad:
            grad_bias = grad_out.sum(0, dtype=torch.float32)
        return grad_x, grad_weight, grad_bias, None, None, None, None


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
        dtype = self._output_dtype(x) if eligible and x.device.type == "cpu" else None
        if dtype is None or not kernels.usable(x, self.weight, dtypes=kernels.FLOAT_OR_BF16):
            return super().forward(x)
        csr = kernels.load().to_csr(x.detach())
        if self.mode == "auto" and csr[1].numel() > self.max_density * x.numel():
            return super().forward(x)
        return _SparseInputProduct.apply(x, self.weight, self.bias, dtype, *csr)

    def _output_dtype(self, x: torch.Tensor):
        """float32 for float32 tensors, bf16 under bf16 autocast (as nn.Linear's output), else None (dense)."""
        if torch.is_autocast_enabled("cpu"):
            return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
        return torch.float32 if x.dtype == self.weight.dtype == torch.float32 else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparse_input={self.mode}"
