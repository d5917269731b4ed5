"""The recurrent layer's Triton path (`snn.triton_recurrent`: a GEMM and one Triton kernel per step) against its plain
autograd step loop, for LIF / IF / PLIF, ALIF and Synaptic: on a GPU directly, and on CPU tensors under Triton's
interpreter in a fresh process (`test_the_recurrent_kernels_under_the_interpreter`, TRITON_INTERPRET=1
SNN_KERNELS=triton), as tests/test_triton_kernels.py runs the neurons' kernels. Tiny shapes: the interpreter is slow."""

import os
import re
import subprocess
import sys
from functools import partial

import pytest
import torch

from snn import kernels, recurrent
from snn.alif import ALIF
from snn.checks import ConfigError
from snn.neurons import IF, LIF, PLIF
from snn.recurrent import Recurrent
from snn.surrogates import SURROGATES, ATan
from snn.synaptic import Synaptic
from tests.conftest import ROOT
from tests.test_triton_kernels import DEVICE, HAS_TRITON, INTERPRETED, _run, kernel_test

T, B, N = 5, 3, 16
NEURONS = {
    "lif": partial(LIF, 0.85, 0.7),
    "if": partial(IF, 0.7),
    "plif": partial(PLIF, 0.8, 0.7),
    "alif": partial(ALIF, 0.85, 0.7, 1.2, 4),
    "alif-learnable": partial(ALIF, 0.85, 0.7, 1.2, 4, learnable=True),
    "synaptic": partial(Synaptic, 0.6, 0.85, 0.8),
}
CASES = [(name, reset) for name in NEURONS for reset in ("subtract", "zero")]
CASES.append(("synaptic", "zero_leaky"))


def _layer(name: str, reset: str, surrogate: str = "atan", **kwargs) -> Recurrent:
    torch.manual_seed(0)
    layer = Recurrent(partial(NEURONS[name], reset=reset, surrogate=surrogate, **kwargs), shape=(N,))
    layer.weight.data.mul_(2)  # feedback strong enough to change who spikes
    if name == "alif-learnable":  # decays that differ per neuron, so that a mix-up of neurons shows
        with torch.no_grad():
            layer.neuron.beta_logit.add_(torch.linspace(-0.6, 0.6, N))
            layer.neuron.rho_logit.add_(torch.linspace(0.5, -0.5, N))
    return layer.to(DEVICE)


def _current(name: str, steps: int = T, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    current = torch.rand(steps, B, N, generator=generator) * 1.3 - 0.2
    return (current * (0.5 if name == "synaptic" else 1.0)).to(DEVICE, dtype)  # syn sums ~1 / (1 - alpha) steps


def _close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    """Float tolerance relative to the largest entry: gradients through time grow with T and W."""
    scale = float(theirs.detach().abs().max())
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=rtol, atol=rtol / 10 * max(scale, 1.0))


def _assert_agree(layer: Recurrent, current: torch.Tensor, monkeypatch, steps: int | None = None) -> None:
    """Spikes equal (the same GEMM and the same operations in the same order as the step loop), membranes and the
    gradients (the current's, W's, the learned decays') to float tolerance. The reference is the step loop in float32
    from the same current: the kernels' state is float32 whatever the current's type."""
    from snn import triton_recurrent

    calls = []
    with monkeypatch.context() as patch:  # the Triton path ran, not the step loop it is compared with
        patch.setattr(triton_recurrent, "run", lambda *args, run=triton_recurrent.run: calls.append(1) or run(*args))
        fast = _run(layer, current, steps, monkeypatch, "triton")
    assert calls and recurrent._in_triton(layer.neuron)
    slow = _run(layer, current.float(), steps, monkeypatch, "torch")
    assert fast[0].dtype == fast[2][0].dtype == current.dtype and fast[1].dtype == torch.float32
    assert torch.equal(fast[0].float(), slow[0])
    assert 0.05 < float(slow[0].mean()) < 0.8  # both spiking and silence exercised
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-6, atol=1e-6)
    assert len(fast[2]) == len(slow[2]) == 2 + len(list(layer.neuron.parameters()))  # current, W, decays
    for a, b in zip(fast[2], slow[2]):
        assert a.shape == b.shape and b.abs().sum() > 0
        _close(a, b, 1e-4 if a.dtype == torch.float32 else 1.6e-2)  # bf16: the current's gradient rounded once


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "reset"), CASES)
def test_recurrent_kernels_match_the_step_loop(monkeypatch, name, reset, dtype):
    _assert_agree(_layer(name, reset), _current(name, dtype=dtype), monkeypatch)


@kernel_test
@pytest.mark.parametrize("name", ["lif", "alif-learnable", "synaptic"])
def test_one_step_repeated_gets_the_summed_gradient(monkeypatch, name):
    """Direct encoding hands a [1, B, ...] current with steps=T: its gradient is the sum over time."""
    _assert_agree(_layer(name, "zero"), _current(name, steps=1), monkeypatch, steps=T)


@kernel_test
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("name", ["lif", "alif-learnable", "synaptic"])
def test_every_surrogate_with_a_kernel_id(monkeypatch, name, surrogate):
    _assert_agree(_layer(name, "zero", surrogate), _current(name), monkeypatch)


@kernel_test
def test_lif_starting_membrane_and_float16_currents(monkeypatch):
    """LIF's `initial` (a converted net's half-threshold start) enters at the first step as in LIF.run; float16."""
    _assert_agree(_layer("lif", "subtract", initial=0.5), _current("lif"), monkeypatch)
    _assert_agree(_layer("alif-learnable", "subtract"), _current("alif", dtype=torch.float16), monkeypatch)


@kernel_test
@pytest.mark.parametrize("name", ["plif", "alif-learnable", "synaptic"])
def test_a_gradient_of_the_spikes_alone_and_a_single_step(monkeypatch, name):
    """No gradient reaches the membrane output (the kernels get None), and T = 1 (no feedback at all)."""
    for steps in (1, 4):
        layer, current = _layer(name, "zero"), _current(name, steps).requires_grad_()
        grads = []
        for backend in ("triton", "torch"):
            with monkeypatch.context() as patch:
                patch.setattr(kernels, "backend", lambda tensor, chosen=backend: chosen)
                inputs = [current, *layer.parameters()]  # T = 1: W and the decays get no gradient (0)
                grads.append(torch.autograd.grad(layer.run(current)[0].sum(), inputs, materialize_grads=True))
        for a, b in zip(*grads):
            _close(a, b)


@kernel_test
def test_the_feedback_changes_who_spikes(monkeypatch):
    layer, current = _layer("alif", "zero"), _current("alif")
    assert kernels.backend(current) == "triton"
    assert not torch.equal(layer.run(current)[0], layer.neuron.run(current)[0])


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreter's run")
def test_the_recurrent_kernels_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "SNN_KERNELS": "triton", "PYTHONPATH": str(ROOT)}
    deselect = "not interpreter and not refuse and not compile and not dispatch"
    command = [sys.executable, "-m", "pytest", "-q", __file__, "-k", deselect]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 49 and "skipped" not in summary, summary  # every comparison ran


@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
@pytest.mark.parametrize("name", ["lif", "alif", "synaptic"])
def test_forced_triton_refuses_where_it_cannot_run(monkeypatch, name):
    """SNN_KERNELS=triton: Recurrent goes through `kernels.backend` as the neurons do: the same one line, never the
    C++ loop or the step loop instead."""
    monkeypatch.setattr(kernels, "mode", "triton")
    layer, current = Recurrent(NEURONS[name], shape=(4,)), torch.rand(3, 2, 4)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (None, "ModuleNotFoundError: No module named 'triton'"))
    message = "SNN_KERNELS=triton: Triton cannot be imported here (ModuleNotFoundError: No module named 'triton'); "
    with pytest.raises(ConfigError, match=re.escape(message + "unset SNN_KERNELS")):
        layer.run(current)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (type("Kernels", (), {"INTERPRETED": False}), None))
    with pytest.raises(ConfigError, match="^SNN_KERNELS=triton: Triton cannot run on cpu tensors without TRITON_"):
        layer.run(current)


class _OtherLIF(LIF):
    def step(self, current_t, state=None):  # other dynamics: only the step loop knows them
        return super().step(current_t * 0.5, state)


class _NoKernel(ATan):
    kernel_id = None


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
def test_dispatch_of_the_recurrent_layer(monkeypatch):
    """Where `kernels.backend` says "triton", LIF, IF, PLIF, ALIF and Synaptic take snn.triton_recurrent; a neuron
    with other dynamics or a surrogate without a kernel keeps the plain step loop; "cpp" and "torch" never reach
    Triton."""
    from snn import triton_recurrent

    monkeypatch.setattr(triton_recurrent, "run", lambda *args: "triton")
    current = torch.rand(3, 2, 4)
    for backend in ("triton", "cpp", "torch"):
        monkeypatch.setattr(kernels, "backend", lambda tensor, chosen=backend: chosen)
        for neuron in NEURONS.values():
            ran = Recurrent(partial(neuron, reset="zero"), shape=(4,)).run(current)
            assert ran == "triton" if backend == "triton" else isinstance(ran, tuple)
        no_kernel = Recurrent(LIF, shape=(4,))
        no_kernel.neuron.surrogate = _NoKernel()
        for layer in (Recurrent(_OtherLIF, shape=(4,)), no_kernel):
            assert isinstance(layer.run(current), tuple)  # the step loop


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
def test_recurrent_kernels_compile_for_a_gpu_without_fused_multiply_adds():
    """Compiled for an H100-class GPU (no GPU needed): every neuron's and reset's forward step with no fma in its PTX
    (which would round b * u + i once where the step loop rounds twice), and the backward steps."""
    pytest.importorskip("triton.backends.nvidia")
    from triton import compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from snn import triton_recurrent as tr

    def build(kernel, signature, **constants):
        source = ASTSource(kernel, {**signature, **dict.fromkeys(constants, "constexpr")}, constexprs=constants)
        return compile(source, target=GPUTarget("cuda", 90, 32), options=tr.NO_FUSION).asm["ptx"]

    state = dict.fromkeys(["FB", "U", "Up", "A", "Ap", "S", "Sp", "Bt", "R"], "*fp32")
    forward = {"I": "*bf16", **state, "E": "i32", "th": "fp32", "adp": "fp32"}
    pointers = dict.fromkeys(["G", "Gn", "C", "GS", "GFB", "GM", "U", "Up", "A", "Bt", "R", "GB", "GR"], "*fp32")
    backward = {**pointers, "E": "i32", "t": "i32", "th": "fp32", "adp": "fp32", "slope": "fp32"}
    for neuron, resets in enumerate((2, 2, 3)):
        for reset in range(resets):
            ptx = build(tr._step_forward, forward, NEURON=neuron, RESET=reset, FIRST=False, BLOCK=tr._BLOCK)
            assert ".entry" in ptx and "fma." not in ptx
            flags = {"KIND": reset, "HAS_GS": True, "HAS_GM": reset == 1, "PARAMS": neuron < 2, "BLOCK": tr._BLOCK}
            assert ".entry" in build(tr._step_backward, backward, NEURON=neuron, RESET=reset, **flags)
