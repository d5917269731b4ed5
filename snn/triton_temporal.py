"""The ALIF and Synaptic recurrences (snn/alif.py, snn/synaptic.py) as fused Triton kernels, for GPUs: as
`snn.triton_kernels` does for LIF, one program per block of neurons walks through all time steps with the state in
registers, forward and backward through time. Same formulas and operation order as csrc/alif.cpp and
csrc/synaptic.cpp, no fused multiply-adds: the spikes are the C++ kernels' and the tensor code's bit for bit. The
functions take and return what their C++ namesakes do, so the autograd functions call either backend.

This is the module `snn.kernels.time_loops("triton")` returns: it also carries the LIF kernels' entry points.
"""

import torch
import triton
import triton.language as tl

# lif_forward, lif_backward and INTERPRETED: re-exported, one module per backend (see __all__)
from snn.triton_kernels import (
    BLOCK,
    INTERPRETED,
    NO_FUSION,
    _grid,
    _on,
    _surrogate_derivative,
    lif_backward,
    lif_forward,
)

__all__ = [
    "INTERPRETED",
    "alif_backward",
    "alif_forward",
    "lif_backward",
    "lif_forward",
    "synaptic_backward",
    "synaptic_forward",
]


@triton.jit
def _alif_forward(I, U, A, S, Bt, R, T, E, step, th, adp, ZERO_RESET: tl.constexpr, BLOCK: tl.constexpr):
    """I: [T or 1, E] (step = E or 0); beta Bt, rho R: [E] -> U, A: [T, E] float32, S: [T, E] in I's type."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    b = tl.load(Bt + offs, mask=mask, other=0.0)
    r = tl.load(R + offs, mask=mask, other=0.0)
    u = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.zeros([BLOCK], tl.float32)
    s = (u > a * adp + th).to(tl.float32)
    tl.store(U + offs, u, mask=mask)
    tl.store(A + offs, a, mask=mask)
    tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)
    for _ in range(1, T):
        I += step
        U += E
        A += E
        S += E
        i = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
        a_next = r * a + (1.0 - r) * s
        if ZERO_RESET:
            u = u * (1.0 - s) * b + i
        else:
            u = b * u + i - (a * adp + th) * s  # the threshold that was crossed
        a = a_next
        s = (u > a * adp + th).to(tl.float32)
        tl.store(U + offs, u, mask=mask)
        tl.store(A + offs, a, mask=mask)
        tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)


@triton.jit
def _alif_backward(
    G, GB, GR, GS, GM, U, A, Bt, R, T, E, last, th, adp, slope,
    ZERO_RESET: tl.constexpr, KIND: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr,
    SUM_TIME: tl.constexpr, PARAMS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """csrc/alif.cpp's alif_backward: the carries dL/dU[t+1] and dL/da[t+1] in float32, backwards through time;
    with PARAMS, dL/dbeta and dL/drho per element into GB, GR [E]."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    b = tl.load(Bt + offs, mask=mask, other=0.0)
    r = tl.load(R + offs, mask=mask, other=0.0)
    U += last
    A += last
    GS += last
    GM += last
    if not SUM_TIME:
        G += last
    carry_u = tl.zeros([BLOCK], tl.float32)
    carry_a = tl.zeros([BLOCK], tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    grad_beta = tl.zeros([BLOCK], tl.float32)
    grad_rho = tl.zeros([BLOCK], tl.float32)
    for _ in range(T):  # at the last step the carries are 0: adding them changes nothing
        u = tl.load(U + offs, mask=mask, other=0.0)
        a = tl.load(A + offs, mask=mask, other=0.0)
        theta = a * adp + th
        spiked = (u > theta).to(tl.float32)
        g_spike = tl.zeros([BLOCK], tl.float32)
        if HAS_GS:
            g_spike = tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
        g_spike += (1.0 - r) * carry_a  # S[t] raised a[t+1]
        d = _surrogate_derivative(u - theta, slope, KIND) * g_spike
        if ZERO_RESET:
            keep = 1.0 - spiked
        else:
            keep = tl.full([BLOCK], 1.0, tl.float32)
        g_u = d
        if HAS_GM:
            g_u += tl.load(GM + offs, mask=mask, other=0.0)
        g_a = -adp * d
        g_u += b * keep * carry_u
        g_a += r * carry_a
        if PARAMS:
            grad_beta += carry_u * keep * u
            grad_rho += carry_a * (a - spiked)
        carry_u = g_u
        carry_a = g_a
        if SUM_TIME:
            total += g_u
        else:
            tl.store(G + offs, g_u.to(G.dtype.element_ty), mask=mask)
            G -= E
        U -= E
        A -= E
        GS -= E
        GM -= E
    if SUM_TIME:
        tl.store(G + offs, total.to(G.dtype.element_ty), mask=mask)
    if PARAMS:
        tl.store(GB + offs, grad_beta, mask=mask)
        tl.store(GR + offs, grad_rho, mask=mask)


@triton.jit
def _synaptic_forward(I, U, S, T, E, step, al, b, th, RESET: tl.constexpr, BLOCK: tl.constexpr):
    """RESET: 0 subtract, 1 zero, 2 zero_leaky (snn/synaptic.py's RESETS). I: [T or 1, E] -> U [T, E], S [T, E]."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    syn = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
    u = syn
    s = (u > th).to(tl.float32)
    tl.store(U + offs, u, mask=mask)
    tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)
    for _ in range(1, T):
        I += step
        U += E
        S += E
        syn = al * syn + tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
        if RESET == 0:
            u = b * u + syn - s * th
        elif RESET == 1:
            u = (b * u + syn) * (1.0 - s)
        else:
            u = u * (1.0 - s) * b + syn
        s = (u > th).to(tl.float32)
        tl.store(U + offs, u, mask=mask)
        tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)


@triton.jit
def _synaptic_backward(
    G, GS, GM, U, T, E, last, al, b, th, slope,
    RESET: tl.constexpr, KIND: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr,
    SUM_TIME: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """csrc/synaptic.cpp's synaptic_backward: dL/dU and dL/dsyn carried in float32, backwards through time."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    U += last
    GS += last
    GM += last
    if not SUM_TIME:
        G += last
    carry_u = tl.zeros([BLOCK], tl.float32)
    carry_syn = tl.zeros([BLOCK], tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for k in range(T):  # t = T - 1 - k
        u = tl.load(U + offs, mask=mask, other=0.0)
        d = tl.zeros([BLOCK], tl.float32)
        if HAS_GS:
            d = _surrogate_derivative(u - th, slope, KIND) * tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_GM:
            d += tl.load(GM + offs, mask=mask, other=0.0)
        if RESET == 0:
            d += b * carry_u
        else:
            d += b * (u <= th).to(tl.float32) * carry_u
        carry_u = d
        g = d
        if RESET == 1:  # U[t] = (...) * (1 - S[t-1]): no gradient reaches syn[t] the step after a spike
            before = tl.load(U - E + offs, mask=mask & (k < T - 1), other=0.0)
            g = d * (1.0 - (before > th).to(tl.float32))
        g += al * carry_syn
        carry_syn = g
        if SUM_TIME:
            total += g
        else:
            tl.store(G + offs, g.to(G.dtype.element_ty), mask=mask)
            G -= E
        U -= E
        GS -= E
        GM -= E
    if SUM_TIME:
        tl.store(G + offs, total.to(G.dtype.element_ty), mask=mask)


def _outputs(current: torch.Tensor, T: int, states: int):
    """(the current contiguous, its step, spikes [T, E] in its type, `states` float32 [T, E] tensors)."""
    current = current.contiguous()
    E = current.shape[1]
    spikes = torch.empty((T, E), dtype=current.dtype, device=current.device)
    empty = [torch.empty((T, E), dtype=torch.float32, device=current.device) for _ in range(states)]
    return current, (0 if len(current) == 1 else E), spikes, empty


def _gradients(grad_spikes, grad_membrane, membrane, dtype, sum_over_time):
    """(grad_spikes in `dtype`, grad_membrane in float32: the missing ones replaced by `membrane`, never read, the
    flags saying which are there, the current's gradient to fill)."""
    T, E = membrane.shape
    gs = membrane if grad_spikes is None else grad_spikes.to(dtype).contiguous()
    gm = membrane if grad_membrane is None else grad_membrane.to(torch.float32).contiguous()
    grad = torch.empty((1 if sum_over_time else T, E), dtype=dtype, device=membrane.device)
    return gs, gm, {"HAS_GS": grad_spikes is not None, "HAS_GM": grad_membrane is not None}, grad


def alif_forward(current, T: int, beta, rho, threshold: float, adaptation: float, zero_reset: bool):
    """current [T or 1, E], beta and rho [E] -> spikes [T, E] (current's type), membrane and a [T, E] (float32)."""
    current, step, spikes, (membrane, adapt) = _outputs(current, T, 2)
    beta, rho = (p.to(torch.float32).contiguous() for p in (beta, rho))
    E = current.shape[1]
    with _on(current.device):
        _alif_forward[_grid(E)](
            current, membrane, adapt, spikes, beta, rho, T, E, step, threshold, adaptation,
            ZERO_RESET=zero_reset, BLOCK=BLOCK, **NO_FUSION,
        )  # fmt: skip
    return spikes, membrane, adapt


def alif_backward(
    grad_spikes, grad_membrane, membrane, adapt, beta, rho, threshold, adaptation, zero_reset, kind, slope, dtype,
    sum_over_time, param_grads,
):  # fmt: skip
    """(dL/dI in `dtype`, [T, E] or summed over time [1, E]; dL/dbeta, dL/drho [E] float32, or None without
    param_grads), as csrc/alif.cpp's alif_backward."""
    membrane, adapt = membrane.contiguous(), adapt.contiguous()
    beta, rho = (p.to(torch.float32).contiguous() for p in (beta, rho))
    T, E = membrane.shape
    gs, gm, flags, grad = _gradients(grad_spikes, grad_membrane, membrane, dtype, sum_over_time)
    # without param_grads the kernel never writes them: the membrane stands in (an empty tensor's pointer may be null)
    grad_beta, grad_rho = [torch.empty(E, device=membrane.device) for _ in "br"] if param_grads else [membrane] * 2
    with _on(membrane.device):
        _alif_backward[_grid(E)](
            grad, grad_beta, grad_rho, gs, gm, membrane, adapt, beta, rho, T, E, (T - 1) * E, threshold, adaptation,
            slope, ZERO_RESET=zero_reset, KIND=kind, SUM_TIME=sum_over_time, PARAMS=param_grads, BLOCK=BLOCK,
            **flags, **NO_FUSION,
        )  # fmt: skip
    return grad, grad_beta if param_grads else None, grad_rho if param_grads else None


def synaptic_forward(current, T: int, alpha: float, beta: float, threshold: float, reset: int):
    """current [T or 1, E] -> spikes [T, E] (current's type), membrane [T, E] (float32); reset as RESET above."""
    current, step, spikes, (membrane,) = _outputs(current, T, 1)
    E = current.shape[1]
    with _on(current.device):
        _synaptic_forward[_grid(E)](
            current, membrane, spikes, T, E, step, alpha, beta, threshold, RESET=reset, BLOCK=BLOCK, **NO_FUSION
        )
    return spikes, membrane


def synaptic_backward(grad_spikes, grad_membrane, membrane, alpha, beta, threshold, reset, kind, slope, dtype,
                      sum_over_time):  # fmt: skip
    """dL/dI in `dtype`, [T, E] or summed over time [1, E], as csrc/synaptic.cpp's synaptic_backward."""
    membrane = membrane.contiguous()
    T, E = membrane.shape
    gs, gm, flags, grad = _gradients(grad_spikes, grad_membrane, membrane, dtype, sum_over_time)
    with _on(membrane.device):
        _synaptic_backward[_grid(E)](
            grad, gs, gm, membrane, T, E, (T - 1) * E, alpha, beta, threshold, slope,
            RESET=reset, KIND=kind, SUM_TIME=sum_over_time, BLOCK=BLOCK, **flags, **NO_FUSION,
        )  # fmt: skip
    return grad
