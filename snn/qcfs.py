"""QCFS, the quantisation-clip-floor-shift activation (Bu et al., ICLR 2022) for ANNs that are to become spiking nets:

    h(x) = lambda * clip(floor(x * L / lambda + 0.5) / L, 0, 1)

with `L` levels and a clip `lambda` learned per layer. An integrate-and-fire neuron with threshold lambda, reset by
subtraction and a membrane that starts at lambda / 2, fed a constant current x for L steps, fires h(x) * L / lambda
times: the converted net reproduces the ANN at T = L, and its expected error is zero at any T (the shift's doing).
The floor has a straight-through gradient: in (0, lambda) the gradient is ReLU's, and lambda learns as in PACT."""

import torch
from torch import nn


class QCFS(nn.Module):
    def __init__(self, levels: int = 8, clip: float = 8.0):
        super().__init__()
        self.levels = levels
        self.clip = nn.Parameter(torch.tensor(float(clip)))  # lambda; 8, as Bu et al.'s code starts it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clip first, then floor: the same values as the formula, but the gradient flows for every 0 < x < lambda
        # (after the floor, torch.clamp's gradient would be zero on the whole lowest step, x < lambda / 2L)
        scaled = torch.clamp(x / self.clip, 0, 1) * self.levels + 0.5
        floored = scaled + (torch.floor(scaled) - scaled).detach()  # floor forward, identity backward
        return floored / self.levels * self.clip  # floor(L + 0.5) = L: no clamp needed at the top

    def extra_repr(self) -> str:
        return f"levels={self.levels}, clip={float(self.clip):.4g}"
