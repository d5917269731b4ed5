"""The fused time loop of a recurrent LIF layer (`snn.recurrent.Recurrent` wrapping LIF, IF or PLIF) on CPU: one
autograd function for the whole sequence, its loops in C++ (csrc/recurrent.cpp).

Forward, event-driven: I'[t] = I[t] + W s[t-1] adds W's columns only for the neurons that spiked at t-1, then the
LIF step (snn/neurons.py's equations). Backward through time: dL/ds[t] gets W^T dL/dI'[t+1] (a dense product per
step), then LIF's backward per step; dW = sum_t dL/dI'[t]^T s[t-1] is one GEMM after the loop. Only the membranes are
stored for backward (the spikes are membrane > threshold). Same numbers as the plain step loop up to float rounding
(the feedback's sum runs in another order).

Where it does not apply (SNN_KERNELS=0, no compiler, a GPU, bf16 autocast, a neuron with other dynamics or a
surrogate without a kernel) `Recurrent` runs its plain step loop: `applies` is the one place that decides.
"""

import torch

from snn import kernels
from snn.neurons import LIF
from snn.surrogates import Surrogate


def applies(neuron, current: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the fused loop runs: a neuron with LIF's own dynamics (LIF, IF, PLIF; not a subclass that overrides
    them, such as SnntorchLeaky), a surrogate with a kernel, and float32 CPU tensors outside autocast (bf16 autocast
    takes the plain path, whose products autocast lowers)."""
    plain_lif = isinstance(neuron, LIF) and type(neuron).run is LIF.run and type(neuron).step is LIF.step
    return plain_lif and neuron.surrogate.kernel_id is not None and kernels.usable(current, weight)


def run(neuron: LIF, weight: torch.Tensor, current: torch.Tensor, steps: int | None = None):
    """(spikes, membrane), both `[T, B, *shape]`; `current` `[T, B, *shape]` or `[1, B, *shape]` with `steps=T`."""
    T = steps or len(current)
    flat = current.reshape(len(current), current.shape[1], -1)
    args = (T, neuron.beta, neuron.threshold, neuron.reset == "zero", neuron.surrogate)
    spikes, membrane = _RecurrentLeaky.apply(flat, weight, *args)
    shape = (T, *current.shape[1:])
    return spikes.view(shape), membrane.view(shape)


class _RecurrentLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, weight, steps: int, beta, threshold: float, zero_reset: bool, surrogate: Surrogate):
        b = float(beta)
        spikes, membrane = kernels.load().recurrent_lif_forward(current, weight, steps, b, threshold, zero_reset)
        ctx.save_for_backward(membrane, weight)  # spikes are membrane > threshold: not kept
        ctx.set_materialize_grads(False)
        ctx.beta, ctx.threshold, ctx.zero_reset, ctx.surrogate = b, threshold, zero_reset, surrogate
        ctx.beta_needs_grad = isinstance(beta, torch.Tensor) and beta.requires_grad
        ctx.repeated = len(current) < steps
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, weight = ctx.saved_tensors
        threshold, zero_reset = ctx.threshold, ctx.zero_reset
        surrogate = ctx.surrogate
        # detached: the C++ loop's products run on torch's worker threads, where grad mode is on (thread-local)
        grad, grad_weight = kernels.load().recurrent_lif_backward(
            grad_spikes, grad_membrane, membrane, weight.detach(), ctx.beta, threshold, zero_reset, surrogate.kernel_id,
            surrogate.slope, ctx.needs_input_grad[1],
        )  # fmt: skip
        grad_beta = None
        if ctx.beta_needs_grad:  # dU[t]/dbeta = U[t-1] (times "did not fire" for the zero reset)
            previous = membrane[:-1] * (membrane[:-1] <= threshold) if zero_reset else membrane[:-1]
            grad_beta = (grad[1:] * previous).sum().reshape(())
        if ctx.repeated:
            grad = grad.sum(0, keepdim=True)
        return grad, grad_weight, None, grad_beta, None, None, None
