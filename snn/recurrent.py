"""Recurrence as a layer: a spiking layer whose spikes are fed back, through a learned all-to-all weight, into its own
input current at the next step:

    I'[t] = I[t] + W s[t-1]   (s[-1] = 0),   s[t], state = neuron.step(I'[t], state)

`W` is `[n, n]` for the layer's n = prod(shape) neurons (W[i, j]: from neuron j to neuron i, self-connections
included). The wrapped neuron is any SpikingLayer that implements `step`; time runs through `SpikingLayer.run`'s step
loop with plain autograd, or, for LIF, IF, PLIF, ALIF and Synaptic, on CPU through one fused event-driven loop in
C++ (snn.recurrent_fused) and on GPUs through a GEMM and one Triton kernel per step (snn.triton_recurrent);
`kernels.backend` decides, SNN_KERNELS=0 keeps the step loop. `max_norm` (model.recurrent_max_norm) keeps W's spectral
norm at most that while training (projected gradient descent, applied as each training forward starts): Adam grows
W until backpropagation through hundreds of steps explodes (S-MNIST: within ~30 steps at lr 2e-3). As a neuron factory
(`neuron=partial(Recurrent, partial(LIF, beta=0.9))`, or a yaml with a nested `_partial_` neuron) it makes any
SpikingNet recurrent without changing `SpikingNet.forward`. `init` (model.recurrent_init): `uniform`, nn.Linear's
default, or `zero`, SRNN's (Yin et al., 2021).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snn import kernels, recurrent_fused
from snn.alif import ALIF
from snn.checks import is_number, require
from snn.neurons import LIF
from snn.spiking_layer import SpikingLayer
from snn.synaptic import Synaptic

INITS = ("uniform", "zero")  # the recurrent weight's initialisation (model.recurrent_init)
IN_TRITON = (LIF, ALIF, Synaptic)  # with their class's own step: snn.triton_recurrent runs its equations


def check_options(max_norm: float | None, init: str) -> None:
    """model.recurrent_max_norm and model.recurrent_init (checked also where unused, without model.recurrent)."""
    ok = max_norm is None or (is_number(max_norm) and 0 < max_norm < math.inf)
    require(ok, "recurrent_max_norm", max_norm, "null (no limit) or a finite number > 0")
    require(init in INITS, "recurrent_init", init, ", ".join(INITS))


class Recurrent(SpikingLayer):
    def __init__(
        self,
        neuron: Callable[..., SpikingLayer],
        *,
        shape: tuple[int, ...],
        max_norm: float | None = None,
        init: str = "uniform",
    ):
        super().__init__(shape)
        check_options(max_norm, init)
        if self.shape is None:
            raise ValueError("Recurrent needs its layer's shape (shape=...) to size its recurrent weight")
        self.neuron = neuron(shape=self.shape)
        if type(self.neuron).step is SpikingLayer.step:
            raise ValueError(f"Recurrent steps the neuron it wraps: {type(self.neuron).__name__} has no step")
        self.threshold = self.neuron.threshold
        n = math.prod(self.shape)
        # uniform: nn.Linear's default, U(-1/sqrt(n), 1/sqrt(n)) for a fan-in of n (spectral norm ~1.15);
        # zero: SRNN's, no feedback until training builds it (backpropagation through time starts stable)
        self.weight = nn.Parameter(torch.zeros(n, n))
        if init == "uniform":
            nn.init.uniform_(self.weight, -1 / math.sqrt(n), 1 / math.sqrt(n))
        self.max_norm = max_norm
        if max_norm is not None:  # the power iteration's vector, warm-started from step to step (not saved)
            self.register_buffer("_left", F.normalize(torch.randn(n), dim=0), persistent=False)

    @torch.no_grad()
    def limit_norm(self, iterations: int = 2) -> None:
        """Scale W down to spectral norm max_norm where it is above (the norm by power iteration)."""
        w = self.weight.float()
        u = self._left
        for _ in range(iterations):
            v = F.normalize(w.T @ u, dim=0)
            u = F.normalize(w @ v, dim=0)
        if not u.any():  # W = 0 (recurrent_init=zero): keep the vector, a zero one would never leave zero
            return
        self._left.copy_(u)
        norm = float(u @ w @ v)
        if norm > self.max_norm:
            self.weight.mul_(self.max_norm / norm)

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.max_norm is not None and self.training:
            self.limit_norm()
        backend = kernels.backend(current)  # the one place that decides (SNN_KERNELS=triton refuses where it can't)
        if backend == "triton" and _in_triton(self.neuron):
            from snn import triton_recurrent  # imports Triton, which kernels.backend found

            return triton_recurrent.run(self.neuron, self.weight, current, steps)
        if backend == "cpp" and recurrent_fused.applies(self.neuron, current, self.weight):
            return recurrent_fused.run(self.neuron, self.weight, current, steps)
        return super().run(current, steps)

    def step(self, current_t: torch.Tensor, state=None):
        """The state is (the wrapped neuron's state, this step's spikes): the membrane comes first."""
        inner, previous = (None, None) if state is None else state
        if previous is not None:
            feedback = previous.flatten(1).to(self.weight.dtype) @ self.weight.T
            current_t = current_t + feedback.view(current_t.shape).to(current_t.dtype)
        spikes, inner = self.neuron.step(current_t, inner)
        return spikes, (inner, spikes)

    def synops(self, spikes: torch.Tensor) -> float:
        """Each spike fed back reaches all n neurons; the last step's spikes are not fed back (there is no next)."""
        fed_back = float(spikes[:-1].sum(dtype=torch.float64)) * self.weight.shape[0]
        return fed_back + self.neuron.synops(spikes)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def nir_node(self, dt: float):
        """A NIR subgraph, snnTorch's RLeaky/RSynaptic form: input -> the neuron's node -> output, and the cycle
        neuron -> rec (nir.Linear, W) -> neuron, whose one-step delay NIR leaves implicit. `to_nir` inlines it, so
        the cycle lies in the exported graph itself. The wrapped neuron's refusals (ALIF, reset=subtract) stand."""
        import nir  # only where a graph is made
        import numpy as np

        from snn.nir_graph import NIRError, _weights

        node = self.neuron.nir_node(dt)
        if len(self.shape) != 1:
            raise NIRError(
                f"Recurrent of shape {self.shape} has no NIR node: NIR's Linear maps flat vectors, so only flat "
                "recurrent layers (model=rsnn) export"
            )
        if not isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
            raise NIRError(f"Recurrent around a {type(node).__name__} node has no NIR form: its neuron must spike")
        name, size = type(node).__name__.lower(), np.array(self.shape)
        return nir.NIRGraph(
            nodes={
                "input": nir.Input(input_type={"input": size}),
                name: node,
                "rec": nir.Linear(weight=_weights(self.weight)),
                "output": nir.Output(output_type={"output": size}),
            },
            edges=[("input", name), (name, "rec"), ("rec", name), (name, "output")],
            type_check=False,
        )


def _in_triton(neuron) -> bool:
    """Whether snn.triton_recurrent runs this neuron: LIF (IF, PLIF), ALIF or Synaptic stepping as its class does
    (not a subclass with other dynamics), with a surrogate that has a kernel."""
    own = next((cls for cls in IN_TRITON if isinstance(neuron, cls)), None)
    return own is not None and type(neuron).step is own.step and neuron.surrogate.kernel_id is not None
