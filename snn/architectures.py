"""Network architectures. Spiking nets take `[T, B, ...]` and run stateless layers on the
time-flattened `[T*B, ...]` batch; `spiking = False` nets take the plain `[B, ...]` image."""
from collections.abc import Callable, Sequence

import torch
from torch import nn

from snn.spike_stats import Trace

READOUTS = ("spike_count", "membrane")


def _check_sizes(hidden_sizes: Sequence[int]) -> list[int]:
    sizes = list(hidden_sizes)
    if any(int(h) != h or h < 1 for h in sizes):
        raise ValueError(f"hidden sizes must be positive integers, got {sizes}")
    return [int(h) for h in sizes]


class SpikingMLP(nn.Module):
    """784 -> hidden... -> 10, every Linear followed by a spiking neuron (output layer included)."""

    spiking = True

    def __init__(self, neuron: Callable[[], nn.Module], hidden_sizes: Sequence[int] = (1000,),
                 readout: str = "spike_count", in_features: int = 784, num_classes: int = 10):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; allowed: {', '.join(READOUTS)}")
        sizes = [in_features, *_check_sizes(hidden_sizes), num_classes]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.neurons = nn.ModuleList(neuron() for _ in self.linears)
        self.readout = readout

    def forward(self, x: torch.Tensor, trace: bool = False):
        """Logits `[B, classes]`; with `trace=True`, `(logits, Trace)` for spike statistics and plots."""
        T, B = x.shape[:2]
        if x.stride(0) == 0:  # the same input at every step (direct encoding): one product, not T
            current = self.linears[0](x[0].reshape(B, -1)).expand(T, B, -1)
        else:
            current = self.linears[0](x.reshape(T * B, -1)).view(T, B, -1)
        record = Trace(inputs=x)
        for i, neuron in enumerate(self.neurons):
            if i:
                current = self.linears[i](spikes.view(T * B, -1)).view(T, B, -1)
            spikes, membrane = neuron.run(current)
            record.spikes.append(spikes)
        record.membrane = membrane
        logits = spikes.sum(0) if self.readout == "spike_count" else membrane.mean(0)
        return (logits, record) if trace else logits


class MLP(nn.Module):
    """The ANN baseline: the same shape with ReLU."""

    spiking = False

    def __init__(self, hidden_sizes: Sequence[int] = (1000,), in_features: int = 784, num_classes: int = 10):
        super().__init__()
        sizes = [in_features, *_check_sizes(hidden_sizes)]
        layers = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, trace: bool = False):
        logits = self.layers(x)
        return (logits, Trace(inputs=x)) if trace else logits
