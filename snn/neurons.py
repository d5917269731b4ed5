"""Multi-step spiking neurons: `[T, B, ...]` input currents in, `[T, B, ...]` spikes out.

Membrane dynamics follow snnTorch's `Leaky` exactly (reset signal detached, applied one step late):

    subtract:  U[t] = beta * U[t-1]                + I[t] - threshold * S[t-1]
    zero:      U[t] = beta * U[t-1] * (1 - S[t-1]) + I[t]
    S[t] = H(U[t] - threshold)

`LIF`, `IF` and `PLIF` run the whole sequence in one autograd function (`_LeakySequence`): a forward
loop without a per-step graph and a hand-written backward through time, storing only the membrane
for backward (the spikes are `membrane > threshold`). `step` is the same equations for one time step, for containers
that step a neuron (snn.recurrent). Every neuron here is a `SpikingLayer` (the contract: snn/spiking_layer.py).
"""

import math

import snntorch
import torch
from torch import nn

from snn import kernels
from snn.checks import is_number, require
from snn.spiking_layer import SpikingLayer
from snn.surrogates import Surrogate, surrogate_by_name

RESETS = ("subtract", "zero")


def _leaky_loop(current, b: float, threshold: float, zero_reset: bool):
    membrane = torch.empty_like(current, dtype=torch.float32)  # bf16 (autocast) would round the sum away
    spikes = torch.empty_like(membrane)
    membrane[0] = current[0]
    torch.gt(current[0], threshold, out=spikes[0])
    for t in range(1, current.shape[0]):
        if zero_reset:  # (1 - S) * U first, exactly as snnTorch orders it
            torch.mul(membrane[t - 1], 1 - spikes[t - 1], out=membrane[t])
            membrane[t].mul_(b).add_(current[t])
        else:
            torch.mul(membrane[t - 1], b, out=membrane[t])
            membrane[t].add_(current[t]).sub_(spikes[t - 1], alpha=threshold)
        torch.gt(membrane[t], threshold, out=spikes[t])
    return spikes.to(current.dtype), membrane


def _leaky_loop_backward_(grad, membrane, b: float, threshold: float, zero_reset: bool) -> None:
    keep = (membrane <= threshold).to(membrane.dtype) if zero_reset else None
    for t in range(membrane.shape[0] - 2, -1, -1):
        if zero_reset:
            grad[t].addcmul_(grad[t + 1], keep[t], value=b)
        else:
            grad[t].add_(grad[t + 1], alpha=b)


def _storage_order(x: torch.Tensor) -> list[int]:
    """Time first, then the other dimensions from the outermost in memory to the innermost."""
    rest = sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    return [0, *rest]


class _LeakySequence(torch.autograd.Function):
    """The time loops run in C++ on CPU (`csrc/lif.cpp`), in Triton on GPUs (`snn.triton_kernels`), elsewhere as
    tensor ops per step (`kernels.backend` decides); same numbers.
    `current` is `[steps, ...]`, or `[1, ...]`: one step repeated (direct encoding), whose gradient is the sum over
    time, summed by the kernel as it goes (no `[T, ...]` gradient written and read back)."""

    @staticmethod
    def forward(ctx, current, steps: int, beta, threshold: float, zero_reset: bool, surrogate: Surrogate):
        b, shape = float(beta), (steps, *current.shape[1:])
        ctx.backend = kernels.backend(current)
        if ctx.backend != "torch":
            flat = current.reshape(len(current), -1)
            spikes, membrane = kernels.time_loops(ctx.backend).lif_forward(flat, steps, b, threshold, zero_reset)
            spikes, membrane = spikes.view(shape), membrane.view(shape)
        else:
            spikes, membrane = _leaky_loop(current.expand(shape), b, threshold, zero_reset)
        ctx.save_for_backward(membrane)  # spikes are membrane > threshold: no need to keep them
        ctx.set_materialize_grads(False)  # an output nobody used gets None, not a tensor of zeros to add
        ctx.beta, ctx.threshold, ctx.zero_reset, ctx.surrogate = b, threshold, zero_reset, surrogate
        ctx.beta_needs_grad = isinstance(beta, torch.Tensor) and beta.requires_grad
        ctx.dtype, ctx.repeated = current.dtype, len(current) < steps
        return spikes, membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        (membrane,) = ctx.saved_tensors
        b, threshold, zero_reset = ctx.beta, ctx.threshold, ctx.zero_reset
        sum_in_kernel = ctx.repeated and not ctx.beta_needs_grad  # the decay's gradient needs every step's
        # dL/dU[t] = dL/dS[t] * S'(U[t]) + dL/dU[t] (direct) + beta * keep[t] * dL/dU[t+1]
        if ctx.backend != "torch" and ctx.surrogate.kernel_id is not None:
            T = len(membrane)
            flat = [None if g is None else g.reshape(T, -1) for g in (grad_spikes, grad_membrane)]
            # float32 where the decay's gradient and the sum over time are still to come: bf16 rounds once, at the end
            dtype = torch.float32 if ctx.beta_needs_grad else ctx.dtype
            args = (b, threshold, zero_reset, ctx.surrogate.kernel_id, ctx.surrogate.slope, dtype, sum_in_kernel)
            grad = kernels.time_loops(ctx.backend).lif_backward(*flat, membrane.view(T, -1), *args)
            grad = grad.view(len(grad), *membrane.shape[1:])
        else:
            if grad_spikes is None:
                grad = torch.zeros_like(membrane)
            else:
                grad = ctx.surrogate.derivative(membrane - threshold).mul_(grad_spikes)
            if grad_membrane is not None:
                grad += grad_membrane
            _leaky_loop_backward_(grad, membrane, b, threshold, zero_reset)
        grad_beta = None
        if ctx.beta_needs_grad:
            previous = membrane[:-1] * (membrane[:-1] <= threshold) if zero_reset else membrane[:-1]
            grad_beta = (grad[1:] * previous).sum().reshape(())
        if ctx.repeated and len(grad) > 1:  # not summed by the kernel
            grad = grad.sum(0, keepdim=True)
        return grad.to(ctx.dtype), None, grad_beta, None, None, None


class LIF(SpikingLayer):
    """Leaky integrate-and-fire neuron with a fixed decay `beta`."""

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        initial: float = 0.0,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(shape)
        require(is_number(beta) and 0 < beta <= 1, "beta", beta, "a number in (0, 1]")
        require(is_number(threshold) and threshold > 0, "threshold", threshold, "a number > 0")
        require(reset in RESETS, "reset", reset, ", ".join(RESETS))
        require(is_number(initial) and 0 <= initial < 1, "initial", initial, "a number in [0, 1) (x threshold)")
        self.threshold, self.reset = float(threshold), reset
        self.initial = float(initial)  # U[-1] = initial x threshold: 0.5 for a converted QCFS net (snn/conversion.py)
        self.surrogate = surrogate_by_name(surrogate, slope)
        self._beta = float(beta)

    @property
    def beta(self):
        return self._beta

    def run(self, current: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (spikes, membrane), both `[T, B, ...]` and laid out in memory as `current` is (channels-last
        stays channels-last: the neuron is elementwise, so it runs on the storage order and copies nothing).
        `current`: `[T, B, ...]`, or `[1, B, ...]` with `steps=T` for the same current at every step."""
        order, steps = _storage_order(current), steps or len(current)
        args = (steps, self.beta, self.threshold, self.reset == "zero", self.surrogate)
        current = current.permute(order)
        if self.initial:  # U[0] = beta * U[-1] + I[0]: the starting membrane enters as a first-step current
            current = current.expand(steps, *current.shape[1:])
            current = torch.cat([current[:1] + self.beta * self.initial * self.threshold, current[1:]])
        spikes, membrane = _LeakySequence.apply(current, *args)
        back = sorted(range(len(order)), key=order.__getitem__)
        return spikes.permute(back), membrane.permute(back)

    def step(self, current_t: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """snnTorch Leaky's step: the state is the membrane, the reset signal S[t-1] = (U[t-1] > threshold) detached."""
        if state is None:  # U[-1] = initial x threshold (0 by default), S[-1] = 0
            membrane = current_t + self.beta * self.initial * self.threshold if self.initial else current_t
        else:
            reset = (state > self.threshold).to(state.dtype)
            if self.reset == "zero":
                membrane = self.beta * (state * (1 - reset)) + current_t
            else:
                membrane = self.beta * state + current_t - reset * self.threshold
        return self.surrogate(membrane - self.threshold), membrane

    def nir_node(self, dt: float):
        """nir.LIF, or nir.IF when beta = 1 (the mapping: snn/nir_graph.py); refused for reset=subtract."""
        from snn.nir_graph import RESET_SUBTRACT, leaky_node, must_retrain  # nir only where a graph is made

        if self.reset != "zero":
            raise must_retrain(RESET_SUBTRACT)
        if self.initial:
            from snn.nir_graph import NIRError

            raise NIRError(f"{type(self).__name__}'s membrane starts at {self.initial} x threshold; NIR's at rest")
        return leaky_node(float(torch.as_tensor(self.beta).detach()), self.threshold, self.shape, dt)

    def extra_repr(self) -> str:
        beta, initial = float(self.beta), f", initial={self.initial}" if self.initial else ""
        return f"beta={beta:.4g}, threshold={self.threshold}, reset={self.reset}, surrogate={self.surrogate}{initial}"


class IF(LIF):
    """Integrate-and-fire: no leak (beta = 1)."""

    def __init__(
        self,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        initial: float = 0.0,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(1.0, threshold, reset, surrogate, slope, initial, shape=shape)


class PLIF(LIF):
    """Parametric LIF (Fang et al., 2021): beta = sigmoid(w) is learned, initialised at `beta`."""

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        require(not is_number(beta) or beta < 1, "beta", beta, "a number in (0, 1) (PLIF learns it through a sigmoid)")
        super().__init__(beta, threshold, reset, surrogate, slope, shape=shape)
        self.beta_logit = nn.Parameter(torch.tensor(math.log(beta / (1 - beta))))

    @property
    def beta(self):
        return torch.sigmoid(self.beta_logit)


class SnntorchLeaky(LIF):
    """`snntorch.Leaky` stepped over time in Python: the reference and the familiar snnTorch path."""

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        slope: float | None = None,
        *,
        shape: tuple[int, ...] | None = None,
    ):
        super().__init__(beta, threshold, reset, surrogate, slope, shape=shape)
        self.leaky = snntorch.Leaky(beta=beta, threshold=threshold, reset_mechanism=reset, spike_grad=self.surrogate)

    def run(self, current, steps: int | None = None):
        self.leaky.reset_mem()
        current = current.expand(steps or len(current), *current.shape[1:])
        spikes, membranes = zip(*(self.leaky(step) for step in current))
        return torch.stack(spikes), torch.stack(membranes)

    nir_node = LIF.nir_node  # the same dynamics as LIF, run by snnTorch
