"""Spike statistics per inference: firing rates, synaptic operations and an energy estimate.

- firing rate of a spiking layer: mean spikes per neuron per time step.
- SynOps: each spike that reaches a Linear layer triggers one accumulate per output neuron (its fan-out),
  so a layer costs (spikes into it) x (its out_features) accumulates.
- MACs: dense multiply-accumulates, in_features x out_features per product. They are counted for every layer
  of an ANN and for the first layer of a spiking net whose input is analog (`encoder=direct`); that input is
  the same at every step, so its product is computed, and counted, once per sample.
- energy per sample = 0.9 pJ x SynOps + 4.6 pJ x MACs (45 nm CMOS figures, Horowitz 2014).
"""
from dataclasses import dataclass, field

import torch
from torch import nn

PJ_PER_AC, PJ_PER_MAC = 0.9, 4.6


@dataclass
class Trace:
    """What a forward pass did: the first layer's input, each spiking layer's spikes, the output membrane."""

    inputs: torch.Tensor
    spikes: list[torch.Tensor] = field(default_factory=list)  # [T, B, N] per spiking layer
    membrane: torch.Tensor | None = None  # [T, B, classes] of the output layer


def _is_spikes(x: torch.Tensor) -> bool:
    return x.stride(0) != 0 and bool(((x == 0) | (x == 1)).all())


class SpikeStats:
    """Accumulates a Trace per batch; `compute()` returns per-sample averages."""

    def __init__(self, net: nn.Module):
        self.linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        self.spiking = getattr(net, "spiking", False)
        self.reset()

    def reset(self) -> None:
        self.samples, self.synops, self.macs = 0, 0.0, 0.0
        self.layer_spikes: list[float] = []
        self.layer_steps: list[int] = []
        self.neuron_rates: list[torch.Tensor] = []  # summed per-neuron rates, divided by samples at the end

    @torch.no_grad()
    def update(self, trace: Trace) -> None:
        batch = trace.inputs.shape[1] if self.spiking else trace.inputs.shape[0]
        self.samples += batch
        if not self.spiking:
            self.macs += batch * sum(l.in_features * l.out_features for l in self.linears)
            return
        first = self.linears[0]
        if _is_spikes(trace.inputs):
            self.synops += float(trace.inputs.sum()) * first.out_features
        else:
            self.macs += batch * first.in_features * first.out_features
        for spikes, linear in zip(trace.spikes, self.linears[1:]):
            self.synops += float(spikes.sum()) * linear.out_features
        if not self.layer_spikes:
            self.layer_spikes = [0.0] * len(trace.spikes)
            self.layer_steps = [0] * len(trace.spikes)
            self.neuron_rates = [torch.zeros(s.shape[-1]) for s in trace.spikes]
        for i, spikes in enumerate(trace.spikes):
            self.layer_spikes[i] += float(spikes.sum())
            self.layer_steps[i] += spikes.numel()
            # per-neuron rate over time, summed over the batch
            self.neuron_rates[i] += spikes.float().mean(0).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        n = max(self.samples, 1)
        stats = {}
        for i, (spikes, steps) in enumerate(zip(self.layer_spikes, self.layer_steps), start=1):
            stats[f"firing_rate/layer{i}"] = spikes / max(steps, 1)
        if self.spiking:
            stats["spikes_per_sample"] = sum(self.layer_spikes) / n
        stats["synops"] = self.synops / n
        stats["macs"] = self.macs / n
        stats["energy_nJ"] = (PJ_PER_AC * self.synops + PJ_PER_MAC * self.macs) / n / 1000
        return stats

    def per_neuron_rates(self) -> list[torch.Tensor]:
        return [r / max(self.samples, 1) for r in self.neuron_rates]
