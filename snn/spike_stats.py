"""Spike statistics per inference: firing rates, synaptic operations and an energy estimate.

- firing rate of a spiking layer: mean spikes per neuron per time step.
- SynOps: each spike that reaches a weighted layer triggers one accumulate per synapse it drives (its fan-out:
  every output of a Linear, C_out x k x k outputs of a convolution, fewer at the borders). They are counted
  exactly by running the layer with all weights set to 1 on the binary spikes and summing the result (integer spike
  counts, e.g. snn.signed_if's bursts and negative spikes, count |count| events: one binary map per unit). A spiking
  layer's own connections (e.g. a recurrent weight) are counted by the layer itself: its `synops(spikes)`.
- MACs: dense multiply-accumulates of a weighted layer on analog input: every layer of an ANN, and the first
  layer of a spiking net under `encoder=direct` (the same current at every step, so computed, and counted,
  once per sample).
- energy per sample = 0.9 pJ x SynOps + 4.6 pJ x MACs (45 nm CMOS figures, Horowitz 2014).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

PJ_PER_AC, PJ_PER_MAC = 0.9, 4.6
WEIGHTED = (nn.Linear, nn.Conv2d)


@dataclass
class Trace:
    """What a forward pass did: the first stage's input, each spiking stage's spikes, the output membrane."""

    inputs: torch.Tensor
    spikes: list[torch.Tensor] = field(default_factory=list)  # [T, B, ...] per spiking stage
    membrane: torch.Tensor | None = None  # [T, B, classes] of the output stage


def is_spikes(x: torch.Tensor) -> bool:
    return x.stride(0) != 0 and bool(((x == 0) | (x == 1)).all())


def spike_events(x: torch.Tensor) -> list[torch.Tensor]:
    """`x` as binary spike tensors whose sum is |x|: [x] for 0/1 spikes; for integer counts (snn/signed_if.py's
    bursts and negative spikes) one tensor per unit of magnitude, 1 where |x| >= k; [] for analog input."""
    if x.stride(0) == 0 or not bool((x == torch.round(x)).all()):
        return []
    magnitude = x.abs()
    top = int(magnitude.max()) if x.numel() else 0
    return [x] if top <= 1 and bool((x >= 0).all()) else [(magnitude >= k).to(x.dtype) for k in range(1, top + 1)]


def count_accumulates(layers: nn.Module, x: torch.Tensor) -> float:
    """Accumulates the weighted layer in `layers` performs on input `x` if only nonzero inputs count."""
    for layer in layers.modules() if isinstance(layers, nn.Sequential) else [layers]:
        if isinstance(layer, nn.Sequential):
            continue
        if isinstance(layer, nn.Linear):
            return float((x != 0).sum()) * layer.out_features
        if isinstance(layer, nn.Conv2d):
            ones = torch.ones(1, *layer.weight.shape[1:], device=x.device)
            reached = F.conv2d((x != 0).float(), ones, stride=layer.stride, padding=layer.padding)
            return float(reached.sum(dtype=torch.float64)) * layer.out_channels
        if not isinstance(layer, nn.BatchNorm2d):  # BN folds into the weights: no operations of its own
            x = layer(x)
    raise ValueError(f"no Linear or Conv2d in {layers}")


class SpikeStats:
    """Accumulates a Trace per batch; `compute()` returns per-sample averages."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.spiking = getattr(net, "spiking", False)
        self.dense_macs: list[float] | None = None  # per weighted layer, measured on the first batch's shape
        self.reset()

    def _dense_macs(self, inputs: torch.Tensor) -> list[float]:
        """MACs per sample of each weighted layer on dense input, read off one forward pass of one sample."""
        weighted = [m for m in self.net.modules() if isinstance(m, WEIGHTED)]
        macs = []
        hooks = [
            layer.register_forward_pre_hook(
                lambda m, args: macs.append(count_accumulates(m, torch.ones_like(args[0][:1])))
            )
            for layer in weighted
        ]
        dummy = torch.zeros_like(inputs[:1, :1] if self.spiking else inputs[:1])
        training = self.net.training
        with torch.no_grad():
            self.net.eval()(dummy)  # eval: leave BatchNorm's running statistics alone
        self.net.train(training)
        for hook in hooks:
            hook.remove()
        return macs

    def reset(self) -> None:
        self.samples, self.synops, self.macs = 0, 0.0, 0.0
        self.layer_spikes: list[float] = []
        self.layer_steps: list[int] = []
        self.neuron_rates: list[torch.Tensor] = []  # summed per-neuron rates, divided by samples at the end

    @torch.no_grad()
    def update(self, trace: Trace) -> None:
        with torch.autocast(trace.inputs.device.type, enabled=False):  # counts in bf16 would be rounded
            self._update(trace)

    def _update(self, trace: Trace) -> None:
        if self.dense_macs is None:
            self.dense_macs = self._dense_macs(trace.inputs)
        if not self.spiking:
            self.samples += trace.inputs.shape[0]
            self.macs += trace.inputs.shape[0] * sum(self.dense_macs)
            return
        batch = trace.inputs.shape[1]
        self.samples += batch
        stage_inputs = [trace.inputs, *trace.spikes][: len(self.net.stages)]  # an integrator output: no spikes
        for i, (stage, x) in enumerate(zip(self.net.stages, stage_inputs)):
            events = spike_events(x)  # each spike drives its fan-out once; a burst of k spikes, k times
            if events:
                self.synops += sum(count_accumulates(stage, e.flatten(0, 1)) for e in events)
            else:
                self.macs += batch * self.dense_macs[i]
        for neuron, spikes in zip(self.net.neurons, trace.spikes):
            self.synops += float(neuron.synops(spikes))
        if not self.layer_spikes:
            self.layer_spikes = [0.0] * len(trace.spikes)
            self.layer_steps = [0] * len(trace.spikes)
            self.neuron_rates = [torch.zeros(s[0, 0].numel()) for s in trace.spikes]
        for i, spikes in enumerate(trace.spikes):
            spikes = spikes.abs()  # a negative spike is a spike too
            self.layer_spikes[i] += float(spikes.sum(dtype=torch.float64))  # exact counts, bf16 spikes too
            self.layer_steps[i] += spikes.numel()
            self.neuron_rates[i] += spikes.float().mean(0).flatten(1).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        n = max(self.samples, 1)
        stats = {
            f"firing_rate/layer{i}": s / max(steps, 1)
            for i, (s, steps) in enumerate(zip(self.layer_spikes, self.layer_steps), start=1)
        }
        if self.spiking:
            stats["spikes_per_sample"] = sum(self.layer_spikes) / n
        stats["synops"] = self.synops / n
        stats["macs"] = self.macs / n
        stats["energy_nJ"] = (PJ_PER_AC * self.synops + PJ_PER_MAC * self.macs) / n / 1000
        return stats

    def per_neuron_rates(self) -> list[torch.Tensor]:
        return [r / max(self.samples, 1) for r in self.neuron_rates]
