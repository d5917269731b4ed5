"""The Triton kernels of ALIF and Synaptic (`snn.triton_temporal`) against the tensor code and the C++ kernels, as
tests/test_triton_kernels.py tests LIF's: on a GPU directly, and on CPU tensors under Triton's interpreter in a fresh
process (`test_the_kernels_under_the_interpreter`, with TRITON_INTERPRET=1 SNN_KERNELS=triton). Tiny shapes: the
interpreter is slow."""

import os
import re
import subprocess
import sys

import pytest
import torch

from snn import kernels
from snn.alif import ALIF
from snn.checks import ConfigError
from snn.surrogates import SURROGATES
from snn.synaptic import Synaptic, fused
from tests.conftest import ROOT
from tests.test_triton_kernels import DEVICE, HAS_TRITON, INTERPRETED, _run, kernel_test

T, B, N = 6, 2, 24


def _alif(reset="subtract", surrogate="atan", learnable=False):
    neuron = ALIF(0.85, 0.7, adaptation=1.2, tau_adaptation=4, learnable=learnable, reset=reset, surrogate=surrogate,
                  shape=(N,))  # fmt: skip
    if learnable:  # decays that differ per neuron, so that a mix-up of neurons shows
        with torch.no_grad():
            neuron.beta_logit.add_(torch.linspace(-0.6, 0.6, N))
            neuron.rho_logit.add_(torch.linspace(0.5, -0.5, N))
    return neuron.to(DEVICE)


def _synaptic(reset="subtract", surrogate="atan"):
    return Synaptic(0.6, 0.85, 0.8, reset=reset, surrogate=surrogate, shape=(N,)).to(DEVICE)


def _current(repeated: bool, dtype=torch.float32, scale=1.0):
    generator = torch.Generator().manual_seed(0)
    current = (torch.rand(1 if repeated else T, B, N, generator=generator) * 1.4 - 0.1) * scale
    return current.to(DEVICE, dtype)


def _assert_agree(neuron, current, monkeypatch):
    """Spikes equal, membranes and gradients close: against the tensor code (`step`, in float32 from the same current:
    the kernels' state is float32 whatever the current's type) and, on CPU tensors, the C++ kernels."""
    assert fused(current, neuron.surrogate) == "triton"
    fast = _run(neuron, current, T, monkeypatch, "triton")
    assert fast[0].dtype == fast[2][0].dtype == current.dtype and fast[1].dtype == torch.float32
    assert 0.05 < fast[0].float().mean() < 0.8  # both spiking and silence (and adaptation) exercised
    references = [("torch", current.float())]
    if current.device.type == "cpu" and current.dtype in kernels.FLOAT_OR_BF16 and kernels.load() is not None:
        references.append(("cpp", current))
    for backend, x in references:
        slow = _run(neuron, x, T, monkeypatch, backend)
        assert torch.equal(fast[0].float(), slow[0].float()), backend  # same operations, same order, no fused madds
        torch.testing.assert_close(fast[1], slow[1], rtol=1e-6, atol=1e-6)
        for a, b in zip(fast[2], slow[2]):  # the current's gradient in its own type, the learned decays' in float32
            assert a.shape == b.shape and a.abs().sum() > 0
            rtol = 1e-5 if a.dtype == torch.float32 else 1.6e-2  # bf16: rounded once, at the end
            torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=1e-5)


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("repeated", [False, True], ids=["sequence", "repeated"])
@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learnable"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_alif_kernels_match(monkeypatch, reset, learnable, repeated, dtype):
    """ALIF: also the gradients of the learned beta and rho (per neuron, summed over the batch)."""
    _assert_agree(_alif(reset, learnable=learnable), _current(repeated, dtype), monkeypatch)


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("repeated", [False, True], ids=["sequence", "repeated"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "zero_leaky"])
def test_synaptic_kernels_match(monkeypatch, reset, repeated, dtype):
    _assert_agree(_synaptic(reset), _current(repeated, dtype, scale=0.5), monkeypatch)  # syn sums ~1/(1-alpha)


@kernel_test
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("neuron", ["alif", "synaptic"])
def test_every_surrogate_with_a_kernel_id(monkeypatch, neuron, surrogate):
    assert SURROGATES[surrogate].kernel_id is not None
    if neuron == "alif":
        _assert_agree(_alif("zero", surrogate, learnable=True), _current(False), monkeypatch)
    else:
        _assert_agree(_synaptic("zero", surrogate), _current(False, scale=0.5), monkeypatch)


@kernel_test
@pytest.mark.parametrize("neuron", ["alif", "synaptic"])
def test_float16_currents(monkeypatch, neuron):
    layer = _alif("subtract", learnable=True) if neuron == "alif" else _synaptic("zero_leaky")
    _assert_agree(layer, _current(True, torch.float16, scale=1.0 if neuron == "alif" else 0.5), monkeypatch)


@kernel_test
@pytest.mark.parametrize("neuron", ["alif", "synaptic"])
def test_a_gradient_of_the_spikes_alone_and_a_single_step(monkeypatch, neuron):
    """No gradient reaches the membrane output (the kernels get None), and T = 1 (no recurrence at all)."""
    for steps in (1, 4):
        current = _current(False)[:steps].requires_grad_()
        layer = _alif("zero", learnable=True) if neuron == "alif" else _synaptic("zero")
        grads = []
        for backend in ("triton", "torch"):
            with monkeypatch.context() as patch:
                patch.setattr(kernels, "backend", lambda tensor, chosen=backend: chosen)
                inputs = [current, *layer.parameters()]  # T = 1: the tensor code never reaches the decays (grads 0)
                grads.append(torch.autograd.grad(layer.run(current)[0].sum(), inputs, materialize_grads=True))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreter's run")
def test_the_kernels_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "SNN_KERNELS": "triton", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", __file__, "-k", "not interpreter and not refuse and not compile"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 42 and "skipped" not in summary, summary  # every comparison ran


@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
@pytest.mark.parametrize("neuron", [ALIF, Synaptic])
def test_forced_triton_refuses_where_it_cannot_run(monkeypatch, neuron):
    """SNN_KERNELS=triton: ALIF and Synaptic go through `kernels.backend` as LIF does, so the same one line, never a
    fallback to the C++ kernels or the tensor code."""
    monkeypatch.setattr(kernels, "mode", "triton")
    current = torch.rand(3, 2, 4)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (None, "ModuleNotFoundError: No module named 'triton'"))
    message = "SNN_KERNELS=triton: Triton cannot be imported here (ModuleNotFoundError: No module named 'triton'); "
    with pytest.raises(ConfigError, match=re.escape(message + "unset SNN_KERNELS")):
        neuron(shape=(4,)).run(current)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (type("Kernels", (), {"INTERPRETED": False}), None))
    with pytest.raises(ConfigError, match="^SNN_KERNELS=triton: Triton cannot run on cpu tensors without TRITON_"):
        neuron(shape=(4,)).run(current)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (type("Kernels", (), {"INTERPRETED": True}), None))
    with pytest.raises(ConfigError, match="^SNN_KERNELS=triton: the Triton kernels take float32, bfloat16 or float"):
        neuron(shape=(4,)).run(current.double())


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
def test_kernels_compile_for_a_gpu_without_fused_multiply_adds():
    """Compiled for an H100-class GPU (no GPU needed; the interpreter checks no types): ALIF's and Synaptic's
    forward and backward kernels, with no fma in their PTX, which would round b * u + i once where the tensor code
    and the C++ kernels round twice."""
    pytest.importorskip("triton.backends.nvidia")
    from triton import compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from snn import triton_temporal as tt

    def assert_compiles(kernel, pointers, scalars, **constants):
        signature = {**pointers, **scalars}  # in the kernel's argument order
        source = ASTSource(kernel, {**signature, **dict.fromkeys(constants, "constexpr")}, constexprs=constants)
        ptx = compile(source, target=GPUTarget("cuda", 90, 32), options=tt.NO_FUSION).asm["ptx"]
        assert ".entry" in ptx and "fma." not in ptx

    forward = {"T": "i32", "E": "i32", "step": "i32"}
    backward = {"T": "i32", "E": "i32", "last": "i64"}
    state = dict.fromkeys(["U", "A", "Bt", "R"], "*fp32")
    for reset in (False, True):
        pointers = {"I": "*bf16", "U": "*fp32", "A": "*fp32", "S": "*bf16", "Bt": "*fp32", "R": "*fp32"}
        assert_compiles(tt._alif_forward, pointers, {**forward, "th": "fp32", "adp": "fp32"}, ZERO_RESET=reset,
                        BLOCK=tt.BLOCK)  # fmt: skip
        pointers = {"G": "*bf16", "GB": "*fp32", "GR": "*fp32", "GS": "*bf16", "GM": "*fp32", **state}
        flags = {"KIND": 2 if reset else 0, "HAS_GS": True, "HAS_GM": reset, "SUM_TIME": reset, "PARAMS": True}
        scalars = {**backward, "th": "fp32", "adp": "fp32", "slope": "fp32"}
        assert_compiles(tt._alif_backward, pointers, scalars, ZERO_RESET=reset, BLOCK=tt.BLOCK, **flags)
    for reset in range(3):
        scalars = {"al": "fp32", "b": "fp32", "th": "fp32"}
        assert_compiles(tt._synaptic_forward, {"I": "*bf16", "U": "*fp32", "S": "*bf16"}, {**forward, **scalars},
                        RESET=reset, BLOCK=tt.BLOCK)  # fmt: skip
        pointers = {"G": "*bf16", "GS": "*bf16", "GM": "*fp32", "U": "*fp32"}
        flags = {"KIND": reset, "HAS_GS": True, "HAS_GM": True, "SUM_TIME": reset == 1, "BLOCK": tt.BLOCK}
        assert_compiles(tt._synaptic_backward, pointers, {**backward, **scalars, "slope": "fp32"}, RESET=reset,
                        **flags)  # fmt: skip
