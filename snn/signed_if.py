"""A signed burst integrate-and-fire neuron for ANN -> SNN conversion (python -m snn.convert neuron_model=signed_if).

A plain IF neuron converts a ReLU/QCFS activation only on average: a neuron whose input is positive early and
negative later has already fired and cannot take it back, and it fires at most once a step, so deep stages lag and
over-fire at small T (snn/conversion.py; docs/conversion.md). This neuron may fire a burst of several spikes in one
step and negative spikes that take back earlier ones (the burst spikes of Li & Zeng 2022, the signed spikes of
Wang et al. 2022), so that its spike count follows the integral of its input:

    U[t] = V[t-1] + I[t]                                        (V[-1] = initial x threshold)
    S[t] = clip(floor(U[t] / threshold), -N[t-1], T - N[t-1])   (an integer: the spikes of step t, signed)
    N[t] = N[t-1] + S[t]                                        (the spikes so far, kept in [0, T])
    V[t] = U[t] - threshold * S[t]

so N[t] = clip(floor(sum of I up to t / threshold + initial), 0, T) at every step. With initial = 0.5 and T = L, the
count of a converted QCFS net's neuron is exactly its ANN activation x L / lambda, and the converted net computes
the ANN's logits (tests/test_conversion.py). Every unit of |S| is one spike event for the SynOps count. Spikes are
integers, not 0/1, so it has no NIR node; it trains with a straight-through gradient of the floor.
"""

import torch

from snn.checks import is_number, require
from snn.spiking_layer import SpikingLayer


class SignedIF(SpikingLayer):
    def __init__(self, threshold: float = 1.0, initial: float = 0.5, *, shape: tuple[int, ...] | None = None):
        super().__init__(shape)
        require(is_number(threshold) and threshold > 0, "threshold", threshold, "a number > 0")
        require(is_number(initial) and 0 <= initial < 1, "initial", initial, "a number in [0, 1) (x threshold)")
        self.threshold, self.initial = float(threshold), float(initial)

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        steps = steps or len(current)
        current = current.expand(steps, *current.shape[1:])
        potential = torch.full_like(current[0], self.initial * self.threshold)
        count = torch.zeros_like(potential)
        spikes, membranes = [], []
        for t in range(steps):
            membrane = potential + current[t]
            scaled = membrane / self.threshold
            floored = scaled + (torch.floor(scaled) - scaled).detach()  # floor forward, identity backward
            spikes_t = torch.clamp(floored, -count.detach(), steps - count.detach())
            potential = membrane - self.threshold * spikes_t
            count = count + spikes_t
            spikes.append(spikes_t)
            membranes.append(membrane)
        return torch.stack(spikes), torch.stack(membranes)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, initial={self.initial}"
