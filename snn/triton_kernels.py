"""The LIF recurrences of `snn.neurons` as fused Triton kernels, for GPUs: one program per block of neurons walks
through all time steps, keeping the membrane in registers (instead of a few tensor ops, each a kernel launch, per
step). Same formulas and operation order as the tensor code and csrc/lif.cpp, and no fused multiply-adds
(`enable_fp_fusion=False`), so the spikes are bit-identical to the tensor code's. Imported only by
`snn.kernels.triton()`: machines without Triton never import it. With TRITON_INTERPRET=1 in the environment before
this module is imported, Triton's interpreter runs the kernels on CPU tensors (how CI tests them).
"""

import contextlib
import math

import torch
import triton
import triton.language as tl

BLOCK = 256  # neurons per program
NO_FUSION = {"enable_fp_fusion": False}  # a fused u * b + i rounds once, the tensor code twice


@triton.jit
def _forward(I, U, S, T, E, step, b, th, ZERO_RESET: tl.constexpr, BLOCK: tl.constexpr):
    """I: [T or 1, E] (step = E or 0) -> U: [T, E] float32, S: [T, E] in I's type."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    u = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
    s = (u > th).to(tl.float32)
    tl.store(U + offs, u, mask=mask)
    tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)
    for _ in range(1, T):
        I += step  # pointer steps: 64-bit, however large T * E gets
        U += E
        S += E
        i = tl.load(I + offs, mask=mask, other=0.0).to(tl.float32)
        if ZERO_RESET:  # (1 - S) * U first, exactly as snnTorch orders it
            u = u * (1.0 - s) * b + i
        else:
            u = u * b + i - th * s
        s = (u > th).to(tl.float32)
        tl.store(U + offs, u, mask=mask)
        tl.store(S + offs, s.to(S.dtype.element_ty), mask=mask)


@triton.jit
def _surrogate_derivative(x, slope, KIND: tl.constexpr):
    """snn/surrogates.py's derivatives of x = membrane - threshold, by their kernel_id."""
    if KIND == 0:  # atan
        u = x * (1.5707963267948966 * slope)
        d = 1.0 / (u * u + 1.0) * (slope / 2)
    elif KIND == 1:  # fast sigmoid
        a = tl.abs(x) * slope + 1.0
        d = 1.0 / (a * a)
    elif KIND == 2:  # sigmoid, as s(kx) * s(-kx): no underflow to 0 for large x
        kx = slope * x
        d = slope / (1.0 + tl.exp(-kx)) / (1.0 + tl.exp(kx))
    elif KIND == 3:  # triangle
        d = tl.maximum(slope - slope * slope * tl.abs(x), 0.0)
    else:  # straight through
        d = tl.full(x.shape, 1.0, tl.float32)
    return d


@triton.jit
def _backward(
    G, GS, GM, U, T, E, last, b, th, slope,
    ZERO_RESET: tl.constexpr, KIND: tl.constexpr, HAS_GS: tl.constexpr, HAS_GM: tl.constexpr,
    SUM_TIME: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """dL/dU[t] = dL/dS[t] * S'(U[t] - th) + dL/dU[t] (direct) + b * keep[t] * dL/dU[t+1], backwards through time,
    carried in float32 (bf16 gradients are rounded once, not T times). SUM_TIME: G is [1, E], the sum over t (the
    current was one step repeated). last = (T - 1) * E, the last step's offset (computed by the caller: 64-bit)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    U += last
    GS += last
    GM += last
    if not SUM_TIME:
        G += last
    carry = tl.zeros([BLOCK], tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for _ in range(T):
        u = tl.load(U + offs, mask=mask, other=0.0)
        d = tl.zeros([BLOCK], tl.float32)
        if HAS_GS:
            gs = tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
            d = _surrogate_derivative(u - th, slope, KIND) * gs
        if HAS_GM:
            d += tl.load(GM + offs, mask=mask, other=0.0)
        if ZERO_RESET:
            d += b * (carry * (u <= th).to(tl.float32))
        else:
            d += b * carry
        carry = d
        if SUM_TIME:
            total += d
        else:
            tl.store(G + offs, d.to(G.dtype.element_ty), mask=mask)
            G -= E
        U -= E
        GS -= E
        GM -= E
    if SUM_TIME:
        tl.store(G + offs, total.to(G.dtype.element_ty), mask=mask)


INTERPRETED = type(_forward).__name__ == "InterpretedFunction"  # TRITON_INTERPRET=1: runs on CPU tensors


def _grid(E: int):
    return (max(1, math.ceil(E / BLOCK)),)


def _on(device: torch.device):
    """Launches go to the current CUDA device: make it the tensors' one (cuda:1 in a process that uses cuda:0)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def lif_forward(current: torch.Tensor, T: int, beta: float, threshold: float, zero_reset: bool):
    """current [T or 1, E] (float32 or bf16) -> spikes [T, E] (current's type), membrane [T, E] (float32)."""
    current = current.contiguous()
    E = current.shape[1]
    spikes = torch.empty((T, E), dtype=current.dtype, device=current.device)
    membrane = torch.empty((T, E), dtype=torch.float32, device=current.device)
    step = 0 if len(current) == 1 else E
    with _on(current.device):
        _forward[_grid(E)](
            current, membrane, spikes, T, E, step, beta, threshold, ZERO_RESET=zero_reset, BLOCK=BLOCK, **NO_FUSION
        )
    return spikes, membrane


def lif_backward(grad_spikes, grad_membrane, membrane, beta, threshold, zero_reset, kind, slope, dtype, sum_over_time):
    """As csrc/lif.cpp's lif_backward: the current's gradient in `dtype`, [T, E] or (sum_over_time) [1, E]."""
    membrane = membrane.contiguous()
    T, E = membrane.shape
    gs = None if grad_spikes is None else grad_spikes.to(dtype).contiguous()
    gm = None if grad_membrane is None else grad_membrane.to(torch.float32).contiguous()
    grad = torch.empty((1 if sum_over_time else T, E), dtype=dtype, device=membrane.device)
    flags = dict(ZERO_RESET=zero_reset, KIND=kind, HAS_GS=gs is not None, HAS_GM=gm is not None)
    inputs = (membrane if gs is None else gs, membrane if gm is None else gm, membrane)  # a missing one: never read
    with _on(membrane.device):
        _backward[_grid(E)](
            grad, *inputs, T, E, (T - 1) * E, beta, threshold, slope,
            SUM_TIME=sum_over_time, BLOCK=BLOCK, **flags, **NO_FUSION,
        )  # fmt: skip
    return grad
