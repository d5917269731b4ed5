"""The fused time loop of a recurrent layer (`snn.recurrent.Recurrent` wrapping LIF, IF, PLIF, ALIF or Synaptic) on
CPU: one autograd function for the whole sequence, its loops in C++ (csrc/recurrent.cpp; the neurons' per-step
equations in csrc/recurrent_neurons.h, those of snn/neurons.py, alif.py and synaptic.py).

Forward, event-driven: I'[t] = I[t] + W s[t-1] adds W's columns only for the neurons that spiked at t-1, then the
neuron's step. Backward through time: dL/ds[t] gets W^T dL/dI'[t+1] (a dense product per step), then the neuron's
backward per step (ALIF's: with learned beta and rho's gradients); dW = sum_t dL/dI'[t]^T s[t-1] after the loop,
event-driven. Stored for backward: the membranes (ALIF: and the adaptation; the spikes are recomputed from them).
Same numbers as the plain step loop up to float rounding (the feedback's sum runs in another order).

Under bf16 autocast the loop runs in float32 (autocast's bf16 current cast up) except for the backward's dense
products through W, which are bf16 GEMMs (float32 sums): the precision autocast gives a Linear, at twice the speed.
Where it does not apply (SNN_KERNELS=0, no compiler, a GPU, a neuron with other dynamics or a surrogate without a
kernel) `Recurrent` runs its plain step loop: `applies` is the one place that decides.
"""

import torch

from snn import kernels
from snn.alif import ALIF
from snn.neurons import LIF
from snn.synaptic import RESETS, Synaptic

# The share of a block of batch rows' neurons spiking at t-1 above which the forward computes the block's feedback as
# one dense GEMM instead of adding W's columns spike by spike (measured on the 2-core machine: docs/speed.md).
DENSE_ABOVE = 0.4


def _own_dynamics(neuron, cls) -> bool:
    """An instance of cls that does not override its run or step (SnntorchLeaky, a LIF subclass, does)."""
    return isinstance(neuron, cls) and type(neuron).run is cls.run and type(neuron).step is cls.step


def applies(neuron, current: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the fused loop runs: a neuron with LIF's, ALIF's or Synaptic's own dynamics (not a subclass that
    overrides them), a surrogate with a kernel, a float32 weight and CPU tensors (a bf16 current: autocast's)."""
    known = any(_own_dynamics(neuron, cls) for cls in (LIF, ALIF, Synaptic))
    floats = (torch.float32, torch.bfloat16)
    usable = weight.dtype == torch.float32 and kernels.usable(current, weight, dtypes=floats)
    return known and neuron.surrogate.kernel_id is not None and usable


def _bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def run(neuron, weight: torch.Tensor, current: torch.Tensor, steps: int | None = None):
    """(spikes, membrane), both `[T, B, *shape]`; `current` `[T, B, *shape]` or `[1, B, *shape]` with `steps=T`."""
    T = steps or len(current)
    flat = current.reshape(len(current), current.shape[1], -1).float()
    low = _bf16_autocast()
    with torch.autocast("cpu", enabled=False):  # the loop's own products stay float32
        if isinstance(neuron, ALIF):
            per_neuron = [p.float().expand(neuron.shape).reshape(-1) for p in (neuron.beta, neuron.rho)]
            args = (T, neuron.threshold, neuron.adaptation, neuron.reset == "zero", neuron.surrogate, low)
            spikes, membrane = _RecurrentAdaptive.apply(flat, weight, *per_neuron, *args)
        elif isinstance(neuron, Synaptic):
            args = (T, neuron.alpha, neuron.beta, neuron.threshold, RESETS.index(neuron.reset), neuron.surrogate, low)
            spikes, membrane = _RecurrentSynaptic.apply(flat, weight, *args)
        else:
            args = (T, neuron.beta, neuron.threshold, neuron.reset == "zero", neuron.surrogate, low)
            spikes, membrane = _RecurrentLeaky.apply(flat, weight, *args)
    shape = (T, *current.shape[1:])
    return spikes.view(shape), membrane.view(shape)


def _input_grad(ctx, grad):
    """A `[1, B, n]` current repeated over the steps gets the gradient summed over time."""
    return grad.sum(0, keepdim=True) if ctx.repeated else grad


def _backward_weight(ctx, weight: torch.Tensor) -> torch.Tensor:
    """W for the backward's products: in bf16 when the forward ran under bf16 autocast (the C++ loop then runs them as
    bf16 GEMMs). Detached: the loop's products run on torch's worker threads, where grad mode is on (thread-local)."""
    return weight.detach().to(torch.bfloat16) if ctx.low else weight.detach()


class _RecurrentLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, weight, steps: int, beta, threshold: float, zero_reset: bool, surrogate, low: bool):
        b = float(beta)
        spikes, membrane = kernels.load().recurrent_lif_forward(
            current, weight, steps, b, threshold, zero_reset, DENSE_ABOVE
        )
        ctx.save_for_backward(membrane, weight)  # spikes are membrane > threshold: not kept
        ctx.set_materialize_grads(False)
        ctx.beta, ctx.threshold, ctx.zero_reset, ctx.surrogate = b, threshold, zero_reset, surrogate
        ctx.beta_needs_grad = isinstance(beta, torch.Tensor) and beta.requires_grad
        ctx.repeated, ctx.low = len(current) < steps, low
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, weight = ctx.saved_tensors
        threshold, zero_reset = ctx.threshold, ctx.zero_reset
        surrogate = ctx.surrogate
        grad, grad_weight = kernels.load().recurrent_lif_backward(
            grad_spikes, grad_membrane, membrane, _backward_weight(ctx, weight), ctx.beta, threshold, zero_reset,
            surrogate.kernel_id, surrogate.slope, ctx.needs_input_grad[1],
        )  # fmt: skip
        grad_beta = None
        if ctx.beta_needs_grad:  # dU[t]/dbeta = U[t-1] (times "did not fire" for the zero reset)
            previous = membrane[:-1] * (membrane[:-1] <= threshold) if zero_reset else membrane[:-1]
            grad_beta = (grad[1:] * previous).sum().reshape(())
        return _input_grad(ctx, grad), grad_weight, None, grad_beta, *[None] * 4


class _RecurrentAdaptive(torch.autograd.Function):
    """ALIF; beta and rho `[n]` (per neuron: the gradients are summed over the batch and time by the C++ loop)."""

    @staticmethod
    def forward(ctx, current, weight, beta, rho, steps: int, threshold, adaptation, zero_reset: bool, surrogate, low):
        loops = kernels.load()
        spikes, membrane, adapt = loops.recurrent_alif_forward(
            current, weight, steps, beta, rho, threshold, adaptation, zero_reset, DENSE_ABOVE
        )
        ctx.save_for_backward(membrane, adapt, weight, beta, rho)
        ctx.set_materialize_grads(False)
        ctx.args = (threshold, adaptation, zero_reset, surrogate.kernel_id, surrogate.slope)
        ctx.repeated, ctx.low = len(current) < steps, low
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, adapt, weight, beta, rho = ctx.saved_tensors
        params = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        grad, grad_weight, grad_params = kernels.load().recurrent_alif_backward(
            grad_spikes, grad_membrane, membrane, adapt, _backward_weight(ctx, weight), beta.detach(), rho.detach(),
            *ctx.args, ctx.needs_input_grad[1], params,
        )  # fmt: skip
        grad_beta, grad_rho = (grad_params[0], grad_params[1]) if params else (None, None)
        return _input_grad(ctx, grad), grad_weight, grad_beta, grad_rho, *[None] * 6


class _RecurrentSynaptic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, weight, steps: int, alpha, beta, threshold: float, reset: int, surrogate, low: bool):
        loops = kernels.load()
        spikes, membrane, _ = loops.recurrent_synaptic_forward(
            current, weight, steps, alpha, beta, threshold, reset, DENSE_ABOVE
        )
        ctx.save_for_backward(membrane, weight)  # the synaptic current is not needed backwards
        ctx.set_materialize_grads(False)
        ctx.args = (alpha, beta, threshold, reset, surrogate.kernel_id, surrogate.slope)
        ctx.repeated, ctx.low = len(current) < steps, low
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, weight = ctx.saved_tensors
        grad, grad_weight = kernels.load().recurrent_synaptic_backward(
            grad_spikes, grad_membrane, membrane, _backward_weight(ctx, weight), *ctx.args, ctx.needs_input_grad[1]
        )
        return _input_grad(ctx, grad), grad_weight, *[None] * 7
