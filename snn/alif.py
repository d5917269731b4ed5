"""`ALIF`: the adaptive-threshold LIF of LSNN (Bellec et al., 2018) and SRNN (Yin et al., 2021). Every spike raises
the neuron's threshold, which decays back with its own time constant; the reset is snnTorch Leaky's (detached,
applied one step late, strict `>`):

    a[t]     = rho * a[t-1] + (1 - rho) * S[t-1]                   rho = exp(-1 / tau_adaptation)
    theta[t] = threshold + adaptation * a[t]
    subtract:  U[t] = beta * U[t-1]                + I[t] - theta[t-1] * S[t-1]   (the threshold that was crossed)
    zero:      U[t] = beta * U[t-1] * (1 - S[t-1]) + I[t]
    S[t] = H(U[t] - theta[t]),   U[-1] = a[-1] = S[-1] = 0

a is LSNN's and SRNN's trace: it tends to the firing rate (spikes per step), so `adaptation` is the most a neuron
firing at every step can raise its threshold (LSNN's and SRNN's beta = 1.8, the default). Gradients flow through the
surrogate of U - theta with respect to U and to a, and through S[t-1] into a[t] (the adaptation path, which carries
credit over the adaptation's long time constant); the reset term (S[t-1] and theta[t-1]) is detached, as snnTorch
detaches its resets. `learnable=true` learns beta and rho per neuron (through sigmoids, initialised at the keys).

`run` goes through time in C++ on CPU (csrc/alif.cpp: forward and backward, storing the membrane and a), elsewhere
(and with SNN_KERNELS=0) it steps `step` with plain autograd. NIR has no adaptive neuron: no export.
"""

import math

import torch
from torch import nn

from snn import kernels
from snn.checks import is_number, require
from snn.spiking_layer import SpikingLayer
from snn.surrogates import surrogate_by_name
from snn.synaptic import fused

RESETS = ("subtract", "zero")


class _AdaptiveSequence(torch.autograd.Function):
    """`current` `[steps or 1, E]`, beta and rho `[E]` (float32) -> (spikes, membrane) `[steps, E]`."""

    @staticmethod
    def forward(ctx, current, beta, rho, steps: int, threshold: float, adaptation: float, zero_reset, surrogate):
        spikes, membrane, adapt = kernels.load().alif_forward(
            current, steps, beta, rho, threshold, adaptation, zero_reset
        )
        ctx.save_for_backward(membrane, adapt, beta, rho)
        ctx.set_materialize_grads(False)
        ctx.args = (threshold, adaptation, zero_reset, surrogate.kernel_id, surrogate.slope)
        ctx.dtype, ctx.repeated = current.dtype, len(current) < steps
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, adapt, beta, rho = ctx.saved_tensors
        params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad, grad_beta, grad_rho = kernels.load().alif_backward(
            grad_spikes, grad_membrane, membrane, adapt, beta, rho, *ctx.args, ctx.dtype, ctx.repeated, params
        )
        return grad, grad_beta if params else None, grad_rho if params else None, None, None, None, None, None


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class ALIF(SpikingLayer):
    """Adaptive LIF: threshold + adaptation * a, a a spike trace with time constant tau_adaptation (steps)."""

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        adaptation: float = 1.8,
        tau_adaptation: float = 200.0,
        learnable: bool = False,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(shape)
        require(isinstance(learnable, bool), "learnable", learnable, "true or false")
        top = "1) (learnable: it is learned through a sigmoid)" if learnable else "1]"
        require(
            is_number(beta) and 0 < beta and (beta < 1 or not learnable and beta == 1),
            "beta",
            beta,
            f"a number in (0, {top}",
        )
        require(is_number(threshold) and threshold > 0, "threshold", threshold, "a number > 0")
        require(is_number(adaptation) and adaptation >= 0, "adaptation", adaptation, "a number >= 0")
        require(is_number(tau_adaptation) and tau_adaptation > 0, "tau_adaptation", tau_adaptation, "steps > 0")
        require(reset in RESETS, "reset", reset, ", ".join(RESETS))
        if learnable and self.shape is None:
            raise ValueError("ALIF with learnable=true needs its layer's shape (shape=...) for its per-neuron decays")
        self.threshold, self.adaptation, self.reset = float(threshold), float(adaptation), reset
        self.learnable, self.surrogate = learnable, surrogate_by_name(surrogate, slope)
        rho = math.exp(-1 / tau_adaptation)
        if learnable:
            self.beta_logit = nn.Parameter(torch.full(self.shape, _logit(beta)))
            self.rho_logit = nn.Parameter(torch.full(self.shape, _logit(rho)))
        else:  # float32 tensors, so that 1 - rho rounds the same here and in the C++ loop
            self.register_buffer("_beta", torch.tensor(float(beta)), persistent=False)
            self.register_buffer("_rho", torch.tensor(rho), persistent=False)

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit) if self.learnable else self._beta

    @property
    def rho(self) -> torch.Tensor:
        return torch.sigmoid(self.rho_logit) if self.learnable else self._rho

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(spikes, membrane) `[T, B, ...]`; `current` `[T, B, ...]`, or `[1, B, ...]` with `steps=T` (repeated)."""
        if not fused(current, self.surrogate):
            return super().run(current, steps)
        steps, shape = steps or len(current), current.shape[1:]
        per_element = [p.float().expand(shape).reshape(-1) for p in (self.beta, self.rho)]  # grads sum over batch
        args = (steps, self.threshold, self.adaptation, self.reset == "zero", self.surrogate)
        spikes, membrane = _AdaptiveSequence.apply(current.reshape(len(current), -1), *per_element, *args)
        return spikes.view(steps, *shape), membrane.view(steps, *shape)

    def step(self, current_t: torch.Tensor, state=None):
        """The state is (membrane, a, spikes): the spikes keep their surrogate gradient for a's next step."""
        if state is None:
            membrane, adapt = current_t, torch.zeros_like(current_t, dtype=torch.float32)
        else:
            previous, adapt_before, spikes = state
            fired, rho = spikes.detach(), self.rho
            adapt = rho * adapt_before + (1 - rho) * spikes
            if self.reset == "zero":
                membrane = previous * (1 - fired) * self.beta + current_t
            else:
                crossed = (adapt_before.detach() * self.adaptation + self.threshold) * fired
                membrane = self.beta * previous + current_t - crossed
        spikes = self.surrogate(membrane - (adapt * self.adaptation + self.threshold))
        return spikes, (membrane, adapt, spikes)

    def nir_node(self, dt: float):
        from snn.nir_graph import NIRError

        raise NIRError("ALIF has no NIR node: NIR has no adaptive-threshold neuron, so neuron=alif cannot be exported")

    def extra_repr(self) -> str:
        tau = -1 / math.log(float(self.rho.mean())) if float(self.rho.mean()) > 0 else 0.0
        return (
            f"threshold={self.threshold}, adaptation={self.adaptation}, tau_adaptation~{tau:.4g}, "
            f"learnable={self.learnable}, reset={self.reset}, surrogate={self.surrogate}"
        )
