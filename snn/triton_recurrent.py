"""The recurrent layer (`snn.recurrent.Recurrent`) wrapping LIF / IF / PLIF, ALIF or Synaptic, on GPUs: one autograd
function for the whole sequence whose time loop alternates a GEMM and one Triton kernel per step.

Forward, per step t: the feedback W s[t-1] as one GEMM (torch.mm into a preallocated buffer: cuBLAS on a GPU, the
same product the plain step loop computes), then one kernel adds it to I[t] and advances the neuron's state (the
membrane, and ALIF's adaptation trace or Synaptic's synaptic current) in float32, storing what backward reads.
Backward through time, per step from the last: one kernel for the neuron's backward step (its carries from t + 1,
dL/ds[t] plus the feedback's W^T dL/dI'[t+1]) writing dL/dI'[t], then dL/ds[t-1]'s feedback part dL/dI'[t] W as one
GEMM; dW = sum_t dL/dI'[t]^T s[t-1] is one GEMM after the loop. The kernels use the equations and operation order of
the neurons' `step` (and of csrc/*.cpp, snn/triton_temporal.py), without fused multiply-adds: the spikes are the
plain step loop's bit for bit. The feedback products run in float32, also for bf16 currents (whose spikes and the
current's gradient come back in the current's type) and under autocast.

No CUDA graph: the per-step launches stay in Python (a graph would need static shapes per T and batch size).
Imported only where `kernels.backend` chose "triton" (Triton imports there).
"""

import torch
import triton
import triton.language as tl

from snn.alif import ALIF
from snn.neurons import LIF
from snn.synaptic import RESETS as SYNAPTIC_RESETS
from snn.synaptic import Synaptic
from snn.triton_kernels import BLOCK as _BLOCK
from snn.triton_kernels import NO_FUSION, _grid, _on, _surrogate_derivative

NEURONS = (LIF, ALIF, Synaptic)  # NEURON in the kernels: their index here


@triton.jit
def _step_forward(
    I, FB, U, Up, A, Ap, S, Sp, Bt, R, E, th, adp,
    NEURON: tl.constexpr, RESET: tl.constexpr, FIRST: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Step t: I'[t] = I[t] + FB, then U, S at t (float32) from Up, Sp at t - 1. A from Ap: ALIF's a (a[t] from
    a[t-1]), Synaptic's synaptic current (A = Ap, in place). Per element: Bt beta; R rho (ALIF) or alpha (Synaptic).
    RESET: LIF, ALIF 0 subtract, 1 zero; Synaptic as snn/synaptic.py's RESETS."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    i = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
    if FIRST:  # U[-1] = S[-1] = a[-1] = syn[-1] = 0, and no feedback
        u = i
        if NEURON == 2:
            a = i
        else:
            a = tl.zeros([BLOCK], tl.float32)
    else:
        i = i + tl.load(FB + offs, mask=mask, other=0.0)  # current_t + feedback, as Recurrent.step adds them
        b = tl.load(Bt + offs, mask=mask, other=0.0)
        up = tl.load(Up + offs, mask=mask, other=0.0)
        s = tl.load(Sp + offs, mask=mask, other=0.0)
        if NEURON == 0:  # LIF.step
            if RESET == 1:
                u = up * (1.0 - s) * b + i
            else:
                u = up * b + i - th * s
        elif NEURON == 1:  # ALIF.step
            r = tl.load(R + offs, mask=mask, other=0.0)
            ap = tl.load(Ap + offs, mask=mask, other=0.0)
            a = r * ap + (1.0 - r) * s
            if RESET == 1:
                u = up * (1.0 - s) * b + i
            else:
                u = b * up + i - (ap * adp + th) * s  # the threshold that was crossed
        else:  # Synaptic.step
            a = tl.load(R + offs, mask=mask, other=0.0) * tl.load(Ap + offs, mask=mask, other=0.0) + i
            if RESET == 0:
                u = b * up + a - s * th
            elif RESET == 1:
                u = (b * up + a) * (1.0 - s)
            else:
                u = up * (1.0 - s) * b + a
    if NEURON == 1:
        s = (u > a * adp + th).to(tl.float32)
    else:
        s = (u > th).to(tl.float32)
    tl.store(U + offs, u, mask=mask)
    tl.store(S + offs, s, mask=mask)
    if NEURON != 0:
        tl.store(A + offs, a, mask=mask)


@triton.jit
def _step_backward(
    G, Gn, C, GS, GFB, GM, U, Up, A, Bt, R, GB, GR, E, t, th, adp, slope,
    NEURON: tl.constexpr, RESET: tl.constexpr, KIND: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr,
    PARAMS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Step t backwards, in float32: G = dL/dI'[t] from dL/dS[t] (GS, plus GFB = W^T dL/dI'[t+1]), dL/dU[t] (GM) and
    the carries from t + 1 (0 past the last step): Gn = dL/dI'[t+1] (LIF, ALIF: dL/dU[t+1]; Synaptic: dL/dsyn[t+1])
    and C, updated in place (ALIF: dL/da[t+1]; Synaptic: dL/dU[t+1]). PARAMS: dL/dbeta (and ALIF's dL/drho) per
    element added into GB (and GR). The neuron backward steps of snn/triton_kernels.py, snn/triton_temporal.py."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    u = tl.load(U + offs, mask=mask, other=0.0)
    b = tl.load(Bt + offs, mask=mask, other=0.0)
    carry = tl.load(Gn + offs, mask=mask, other=0.0)
    g_spike = tl.load(GFB + offs, mask=mask, other=0.0)
    if HAS_GS:
        g_spike += tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
    if NEURON == 1:  # ALIF
        r = tl.load(R + offs, mask=mask, other=0.0)
        a = tl.load(A + offs, mask=mask, other=0.0)
        carry_a = tl.load(C + offs, mask=mask, other=0.0)
        theta = a * adp + th
        g_spike += (1.0 - r) * carry_a  # S[t] raised a[t+1]
    else:
        theta = th
    d_spike = _surrogate_derivative(u - theta, slope, KIND) * g_spike  # through S[t]
    d = d_spike
    if HAS_GM:
        d += tl.load(GM + offs, mask=mask, other=0.0)
    if RESET == 0:
        keep = tl.full([BLOCK], 1.0, tl.float32)
    else:  # U[t+1] drops U[t] after a spike
        keep = (u <= theta).to(tl.float32)
    if NEURON == 2:  # Synaptic: C is dL/dU[t+1], Gn dL/dsyn[t+1]
        d += b * keep * tl.load(C + offs, mask=mask, other=0.0)
        tl.store(C + offs, d, mask=mask)
        g = d
        if RESET == 1:  # U[t] = (...) * (1 - S[t-1]): no gradient reaches syn[t] the step after a spike
            before = tl.load(Up + offs, mask=mask & (t > 0), other=0.0)
            g = d * (1.0 - (before > th).to(tl.float32))
        g += tl.load(R + offs, mask=mask, other=0.0) * carry
    else:
        g = d + b * (keep * carry)
        if PARAMS:
            grad_beta = tl.load(GB + offs, mask=mask, other=0.0)
            tl.store(GB + offs, grad_beta + carry * keep * u, mask=mask)
        if NEURON == 1:
            tl.store(C + offs, -adp * d_spike + r * carry_a, mask=mask)
            if PARAMS:
                grad_rho = tl.load(GR + offs, mask=mask, other=0.0)
                tl.store(GR + offs, grad_rho + carry_a * (a - (u > theta).to(tl.float32)), mask=mask)
    tl.store(G + offs, g, mask=mask)


def run(neuron, weight: torch.Tensor, current: torch.Tensor, steps: int | None = None):
    """(spikes, membrane) `[T, B, *shape]` of `Recurrent(neuron)` on `current` `[T, B, *shape]`, or `[1, B, *shape]`
    with `steps=T` (repeated); `neuron` an LIF, ALIF or Synaptic with its class's own `step`."""
    T = steps or len(current)
    kind = next(k for k, cls in enumerate(NEURONS) if isinstance(neuron, cls))
    if kind == 0 and neuron.initial:  # U[-1] = initial x threshold enters as a first-step current, as LIF.run does
        current = current.expand(T, *current.shape[1:])
        current = torch.cat([current[:1] + neuron.beta * neuron.initial * neuron.threshold, current[1:]])
    shape = current.shape[1:]

    def per_element(p):  # [E] = [B * n]: a learned decay's gradient is summed over the batch by autograd
        return torch.as_tensor(p, dtype=torch.float32, device=current.device).expand(shape).contiguous().view(-1)

    rho = neuron.rho if kind == 1 else neuron.alpha if kind == 2 else 0.0
    reset = SYNAPTIC_RESETS.index(neuron.reset) if kind == 2 else int(neuron.reset == "zero")
    adaptation = neuron.adaptation if kind == 1 else 0.0
    flat = current.reshape(len(current), current.shape[1], -1)
    args = (T, kind, reset, neuron.threshold, adaptation, neuron.surrogate)
    spikes, membrane = _RecurrentLoop.apply(flat, weight, per_element(neuron.beta), per_element(rho), *args)
    return spikes.view(T, *shape), membrane.view(T, *shape)


class _RecurrentLoop(torch.autograd.Function):
    """`current` `[T or 1, B, n]`, `weight` `[n, n]`, beta and rho `[B * n]` -> (spikes, membrane) `[T, B * n]`."""

    @staticmethod
    def forward(ctx, current, weight, beta, rho, steps, kind, reset, threshold, adaptation, surrogate):
        T, (_, B, n) = steps, current.shape
        E, device, f32 = B * n, current.device, torch.float32
        current, W = current.contiguous(), weight.to(f32)
        membrane, spikes = torch.empty(T, E, dtype=f32, device=device), torch.empty(T, E, dtype=f32, device=device)
        state = torch.empty(T if kind == 1 else 1, E, dtype=f32, device=device)  # ALIF's a[t]; Synaptic's syn
        feedback = torch.empty(B, n, dtype=f32, device=device)
        flags = {"NEURON": kind, "RESET": reset, "BLOCK": _BLOCK, **NO_FUSION}
        with _on(device), torch.autocast(device.type, enabled=False):  # the products in float32
            for t in range(T):
                if t:
                    torch.mm(spikes[t - 1].view(B, n), W.t(), out=feedback)
                a = state[t if kind == 1 else 0]
                ap = state[t - 1] if kind == 1 else a
                _step_forward[_grid(E)](
                    current[t if len(current) > 1 else 0], feedback, membrane[t], membrane[t - 1], a, ap,
                    spikes[t], spikes[t - 1], beta, rho, E, threshold, adaptation, FIRST=t == 0, **flags,
                )  # fmt: skip
        ctx.save_for_backward(membrane, state, spikes, W, beta, rho)
        ctx.set_materialize_grads(False)
        ctx.args = (kind, reset, threshold, adaptation, surrogate.kernel_id, surrogate.slope)
        ctx.dtype, ctx.repeated, ctx.weight_dtype = current.dtype, len(current) < T, weight.dtype
        return spikes.to(current.dtype), membrane

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        membrane, state, spikes, W, beta, rho = ctx.saved_tensors
        kind, reset, threshold, adaptation, kernel_id, slope = ctx.args
        (T, E), n = membrane.shape, W.shape[0]
        B, device, f32 = E // n, membrane.device, torch.float32
        grad = torch.zeros(T + 1, E, dtype=f32, device=device)  # dL/dI'[t]; row T: past the last step, 0
        carry = torch.zeros(E, dtype=f32, device=device)
        feedback = torch.zeros(B, n, dtype=f32, device=device)  # W^T dL/dI'[t+1]: 0 at the last step
        gs = None if grad_spikes is None else grad_spikes.reshape(T, E).contiguous()
        gm = None if grad_membrane is None else grad_membrane.reshape(T, E).to(f32).contiguous()
        params = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        grad_beta, grad_rho = [torch.zeros(E, dtype=f32, device=device) for _ in "br"] if params else [carry] * 2
        flags = {"NEURON": kind, "RESET": reset, "KIND": kernel_id, "HAS_GS": gs is not None, "HAS_GM": gm is not None}
        flags.update(PARAMS=params, BLOCK=_BLOCK, **NO_FUSION)
        with _on(device), torch.autocast(device.type, enabled=False):
            for t in range(T - 1, -1, -1):  # a missing gradient: the membrane stands in, never read
                _step_backward[_grid(E)](
                    grad[t], grad[t + 1], carry, membrane[t] if gs is None else gs[t], feedback,
                    membrane[t] if gm is None else gm[t], membrane[t], membrane[t - 1], state[t if kind == 1 else 0],
                    beta, rho, grad_beta, grad_rho, E, t, threshold, adaptation, slope, **flags,
                )  # fmt: skip
                if t:
                    torch.mm(grad[t].view(B, n), W, out=feedback)
            grad_weight = None
            if ctx.needs_input_grad[1]:  # one GEMM over all steps: [n, (T-1) B] x [(T-1) B, n]
                grad_weight = grad[1:T].view(-1, n).t().mm(spikes[:-1].view(-1, n)).to(ctx.weight_dtype)
        grad_current = grad[:T].sum(0, keepdim=True) if ctx.repeated else grad[:T]
        grad_current = grad_current.view(len(grad_current), B, n).to(ctx.dtype)
        if not params:
            grad_beta = grad_rho = None
        return grad_current, grad_weight, grad_beta, grad_rho, *[None] * 6
