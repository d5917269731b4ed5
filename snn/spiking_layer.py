"""The contract of a spiking layer, written down here once.

Every spiking neuron layer (snn.neurons' LIF, IF, PLIF; snn.recurrent's Recurrent; snn.nir_import's
LeakyIntegrator; a layer of your own) is a `SpikingLayer`. The architectures, the spike statistics, the figures and
the NIR export read a layer only through what is listed here.

A layer must
- take `shape` as a keyword argument: its neurons' shape without time and batch, e.g. `(1000,)` or `(32, 28, 28)`.
  The architectures build one layer per stage as `neuron(shape=...)`; it is stored as `self.shape`, so a layer can
  size per-neuron parameters or weights by it.
- implement `step` or `run` (or both):
  `step(current_t, state) -> (spikes_t, state)`: one time step, `current_t` `[B, *shape]`, pure (the state goes in
  and comes out; the layer itself does not change), `state=None` at t = 0. The state is the membrane potential
  `[B, *shape]`, or a tuple whose first entry is a state (the membrane comes first). A container (e.g. Recurrent)
  steps the layer it wraps through this.
  `run(current, steps=None) -> (spikes, membrane)`, both `[T, B, *shape]`: the whole sequence. `current` is
  `[T, B, *shape]`, or `[1, B, *shape]` with `steps=T` for the same current at every step (direct encoding). The
  default steps `step` over time; a layer with a faster way (LIF's fused kernels) overrides it: fused kernels are an
  implementation detail of the layers that have them.
A layer may
- set `threshold` (a float; None, the default, when it has none): the line the figures draw over the membrane.
- override `synops(spikes)`: the accumulates its OWN connections perform for its output `spikes` `[T, B, *shape]`,
  summed over the batch. 0 by default: a plain neuron has no connections of its own (the weighted layer of the next
  stage counts its input's fan-out). A recurrent layer counts each spike fed back through its weight.
- return spikes that are 0/1, or integer counts (a burst neuron such as snn.signed_if's, negative ones included):
  the statistics count each unit of |spike| as one spike event.
- override `nir_node(dt)`: its NIR node (dt: seconds per step), or a subgraph (an `nir.NIRGraph`, as Recurrent's
  cycle). By default it refuses (NIRError, one line), so that nothing is exported as something else: a subclass
  that overrides `run` or `step` gets the refusing default back unless it defines `nir_node` itself (or, with the
  same dynamics, says `nir_node = Parent.nir_node`).
"""

from collections.abc import Sequence

import torch
from torch import nn


class SpikingLayer(nn.Module):
    threshold: float | None = None

    def __init__(self, shape: Sequence[int] | None = None):
        super().__init__()
        if shape is not None:
            shape = tuple(shape)
            if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
                raise ValueError(f"shape={shape} is not allowed: the layer's neurons' shape, integers >= 1")
        self.shape: tuple[int, ...] | None = shape

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if {"run", "step"} & vars(cls).keys() and "nir_node" not in vars(cls):
            cls.nir_node = SpikingLayer.nir_node  # other dynamics: not exported as its parent's node

    def step(self, current_t: torch.Tensor, state=None):
        raise NotImplementedError(f"{type(self).__name__} does not implement step (one time step)")

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if type(self).step is SpikingLayer.step:
            raise NotImplementedError(f"{type(self).__name__} implements neither run nor step")
        state, spikes, membranes = None, [], []
        for t in range(steps or len(current)):
            spikes_t, state = self.step(current[t if len(current) > 1 else 0], state)
            spikes.append(spikes_t)
            membranes.append(membrane(state))
        return torch.stack(spikes), torch.stack(membranes)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self.run(current)[0]

    def synops(self, spikes: torch.Tensor) -> float:
        return 0.0

    def nir_node(self, dt: float):
        from snn.nir_graph import NIRError  # nir only where a graph is made

        raise NIRError(
            f"{type(self).__name__} has no NIR node: it defines no nir_node for its own dynamics, so it cannot be "
            "exported"
        )


def membrane(state) -> torch.Tensor:
    """The membrane potential in a step's state: the state itself, or its first entry's."""
    while not isinstance(state, torch.Tensor):
        state = state[0]
    return state
