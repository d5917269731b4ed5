"""2x2 max-pooling for channels-last spike maps on CPU (`csrc/pooling.cpp`): one pass each way and a one-byte index
for backward, where torch's pooling keeps an int64 index and zero-fills the input gradient before scattering into it.
Same outputs and gradients as `nn.MaxPool2d(2)` (ties go to the window's first maximum, as there); other layouts,
devices and types, or no compiled kernels, run `nn.MaxPool2d` itself.
"""

import torch
from torch import nn

from snn import kernels


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        pooled, index = kernels.load().max_pool2x2_forward(x.permute(0, 2, 3, 1))
        ctx.save_for_backward(index)
        ctx.size = x.shape[2:]
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return kernels.load().max_pool2x2_backward(grad.permute(0, 2, 3, 1), index, *ctx.size).permute(0, 3, 1, 2)


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d(2)` (2x2 windows, stride 2), faster on channels-last CPU tensors."""

    def __init__(self, kernel_size: int = 2):
        super().__init__(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (
            self.kernel_size == 2
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and kernels.usable(x, dtypes=kernels.FLOAT_OR_BF16)
        )
        return _MaxPool2x2.apply(x) if fast else super().forward(x)
