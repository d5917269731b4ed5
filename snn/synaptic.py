"""`Synaptic`: the current-based (second-order) LIF of snnTorch's `Synaptic` and NIR's `CubaLIF`. A synaptic current
with its own decay alpha feeds the membrane; the reset signal is detached and applied one step late, as in snnTorch:

    syn[t] = alpha * syn[t-1] + I[t]
    subtract:    U[t] = beta * U[t-1] + syn[t] - threshold * S[t-1]
    zero:        U[t] = (beta * U[t-1] + syn[t]) * (1 - S[t-1])      (snnTorch's Synaptic: 0 the step after a spike)
    zero_leaky:  U[t] = beta * U[t-1] * (1 - S[t-1]) + syn[t]        (LIF's zero reset; NIR's CubaLIF)
    S[t] = H(U[t] - threshold),   syn[-1] = U[-1] = S[-1] = 0

`zero` is snnTorch's Synaptic(reset_mechanism="zero") step for step; it also drops the step's synaptic current after a
spike, which NIR's CubaLIF (reset the membrane, keep integrating the current) does not: only `zero_leaky` exports.
`run` goes through time in C++ on CPU (csrc/synaptic.cpp: forward and backward, storing only the membrane), elsewhere
(and with SNN_KERNELS=0) it steps `step` with plain autograd.
"""

import torch

from snn import kernels
from snn.checks import is_number, require
from snn.spiking_layer import SpikingLayer
from snn.surrogates import Surrogate, surrogate_by_name

RESETS = ("subtract", "zero", "zero_leaky")
RESET_NOT_LEAKY = (
    "its synaptic neurons were trained with a reset other than zero_leaky (NIR's CubaLIF resets the membrane only)",
    "neuron.reset=zero_leaky",
)


def fused(current: torch.Tensor, surrogate: Surrogate) -> bool:
    """Whether the C++ time loops run `current` (CPU, float32 or bf16, built, a surrogate they know)."""
    return (
        kernels.mode != "triton"
        and kernels.usable(current, dtypes=kernels.FLOAT_OR_BF16)
        and (surrogate.kernel_id is not None)
    )


class _SynapticSequence(torch.autograd.Function):
    """`current` `[steps or 1, E]` -> (spikes, membrane) `[steps, E]`; a `[1, E]` current is repeated over time and
    its gradient summed by the kernel."""

    @staticmethod
    def forward(ctx, current, steps: int, alpha: float, beta: float, threshold: float, reset: int, surrogate):
        spikes, membrane = kernels.load().synaptic_forward(current, steps, alpha, beta, threshold, reset)
        ctx.save_for_backward(membrane)
        ctx.set_materialize_grads(False)
        ctx.args = (alpha, beta, threshold, reset, surrogate.kernel_id, surrogate.slope)
        ctx.dtype, ctx.repeated = current.dtype, len(current) < steps
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        (membrane,) = ctx.saved_tensors
        grad = kernels.load().synaptic_backward(
            grad_spikes, grad_membrane, membrane, *ctx.args, ctx.dtype, ctx.repeated
        )
        return grad, None, None, None, None, None, None


class Synaptic(SpikingLayer):
    """Current-based LIF (snnTorch's Synaptic): synaptic current decay `alpha`, membrane decay `beta`."""

    def __init__(
        self,
        alpha: float = 0.8,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(shape)
        require(is_number(alpha) and 0 <= alpha <= 1, "alpha", alpha, "a number in [0, 1]")
        require(is_number(beta) and 0 <= beta <= 1, "beta", beta, "a number in [0, 1]")
        require(is_number(threshold) and threshold > 0, "threshold", threshold, "a number > 0")
        require(reset in RESETS, "reset", reset, ", ".join(RESETS))
        self.alpha, self.beta, self.threshold, self.reset = float(alpha), float(beta), float(threshold), reset
        self.surrogate = surrogate_by_name(surrogate, slope)

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(spikes, membrane) `[T, B, ...]`; `current` `[T, B, ...]`, or `[1, B, ...]` with `steps=T` (repeated)."""
        if not fused(current, self.surrogate):
            return super().run(current, steps)
        steps, shape = steps or len(current), current.shape[1:]
        reset = RESETS.index(self.reset)
        args = (steps, self.alpha, self.beta, self.threshold, reset, self.surrogate)
        spikes, membrane = _SynapticSequence.apply(current.reshape(len(current), -1), *args)
        return spikes.view(steps, *shape), membrane.view(steps, *shape)

    def step(self, current_t: torch.Tensor, state=None):
        """The state is (membrane, synaptic current); the reset signal is U[t-1] > threshold, detached."""
        if state is None:
            syn = current_t
            membrane = syn
        else:
            membrane, syn = state
            spiked = (membrane > self.threshold).to(membrane.dtype)
            syn = self.alpha * syn + current_t
            if self.reset == "subtract":
                membrane = self.beta * membrane + syn - spiked * self.threshold
            elif self.reset == "zero":
                membrane = (self.beta * membrane + syn) * (1 - spiked)
            else:
                membrane = membrane * (1 - spiked) * self.beta + syn
        return self.surrogate(membrane - self.threshold), (membrane, syn)

    def nir_node(self, dt: float):
        """nir.CubaLIF, with snnTorch's mapping: tau_syn = dt / (1 - alpha), tau_mem = dt / (1 - beta),
        r = tau_mem / dt, w_in = tau_syn / dt (input gains of 1); refused unless reset=zero_leaky, alpha, beta < 1."""
        import nir  # only where a graph is made

        from snn.nir_graph import NIRError, _per_neuron, must_retrain

        if self.reset != "zero_leaky":
            raise must_retrain(RESET_NOT_LEAKY)
        if self.shape is None:
            raise NIRError("a neuron built without its shape has no NIR node (its parameters are arrays of that shape)")
        if self.alpha == 1 or self.beta == 1:
            raise NIRError(
                f"Synaptic with alpha={self.alpha:g}, beta={self.beta:g} has no CubaLIF node: a decay of 1 is an "
                "infinite time constant"
            )
        tau_syn, tau_mem = dt / (1 - self.alpha), dt / (1 - self.beta)
        return nir.CubaLIF(
            tau_syn=_per_neuron(self.shape, tau_syn),
            tau_mem=_per_neuron(self.shape, tau_mem),
            r=_per_neuron(self.shape, tau_mem / dt),
            v_leak=_per_neuron(self.shape, 0.0),
            v_threshold=_per_neuron(self.shape, self.threshold),
            v_reset=_per_neuron(self.shape, 0.0),
            w_in=_per_neuron(self.shape, tau_syn / dt),
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha:.4g}, beta={self.beta:.4g}, threshold={self.threshold}, reset={self.reset}, "
            f"surrogate={self.surrogate}"
        )
