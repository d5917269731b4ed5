"""The Triton kernels (`snn.triton_kernels`) against the tensor code, and `SNN_KERNELS=triton`'s refusals.

The comparisons run on a GPU directly, and on CPU tensors under Triton's interpreter: Triton reads TRITON_INTERPRET
when the kernels are defined, so `test_the_kernels_under_the_interpreter` runs this file again in a fresh process
with TRITON_INTERPRET=1 and SNN_KERNELS=triton in its environment (that is how CI runs them)."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from snn import kernels
from snn.checks import ConfigError
from snn.neurons import IF, LIF, PLIF
from snn.surrogates import SURROGATES
from tests.conftest import ROOT, TINY

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("SNN_KERNELS") == "triton"
DEVICE = "cpu" if INTERPRETED else "cuda"


def kernel_test(test):
    """On a GPU, or in the interpreter's process; marked `gpu` outside it (benchmarks/gpu_check.sh selects those)."""
    runs = HAS_TRITON and (INTERPRETED or torch.cuda.is_available())
    reason = "needs a GPU; test_the_kernels_under_the_interpreter runs it on CPU"
    test = pytest.mark.skipif(not runs, reason=reason)(test)
    return test if INTERPRETED else pytest.mark.gpu(test)


NEURONS = {"lif": lambda reset, surrogate: LIF(0.85, 0.7, reset, surrogate), "if": lambda r, s: IF(0.7, r, s)}
NEURONS["plif"] = lambda reset, surrogate: PLIF(0.8, 0.7, reset, surrogate)


def _run(neuron, current, steps, monkeypatch, backend):
    """Spikes, membrane and the gradients of a random mix of both (current's, and the learned decays') on one backend
    ("triton": chosen by the real dispatch; "torch" or "cpp": forced)."""
    with monkeypatch.context() as patch:
        if backend == "triton":
            assert kernels.backend(current) == "triton"  # the real dispatch chose it
        else:
            patch.setattr(kernels, "backend", lambda tensor: backend)
        x = current.detach().clone().requires_grad_()
        spikes, membrane = neuron.run(x, steps)
        generator = torch.Generator(device=current.device).manual_seed(1)
        weights = (torch.randn(spikes.shape, generator=generator, device=x.device) for _ in "sm")
        weights_s, weights_m = (w.bfloat16().float() for w in weights)  # exact in bf16: every run gets the same
        loss = (spikes.float() * weights_s).sum() + (membrane * weights_m).sum()
        return spikes, membrane, torch.autograd.grad(loss, [x, *neuron.parameters()])


def _assert_agree(neuron, current, steps, monkeypatch):
    fast = _run(neuron, current, steps, monkeypatch, "triton")
    slow = _run(neuron, current, steps, monkeypatch, "torch")
    assert torch.equal(fast[0], slow[0])  # spikes: same operations in the same order, no fused multiply-adds
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-6, atol=1e-6)
    assert fast[0].dtype == current.dtype and fast[1].dtype == torch.float32
    for a, b in zip(fast[2], slow[2]):  # the current's gradient in its own type, PLIF's decay's in float32
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5 if a.dtype == torch.float32 else 1.6e-2, atol=1e-5)
    assert 0.05 < fast[0].float().mean() < 0.95  # both spiking and silence exercised


@kernel_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("repeated", [False, True], ids=["sequence", "repeated"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("neuron", sorted(NEURONS))
def test_kernels_match_the_tensor_code(monkeypatch, neuron, reset, repeated, dtype):
    """Spikes equal; membranes and gradients (the current's, summed over time for one repeated step, and PLIF's
    decay) to float tolerance. The [T, B, C, W] current is channels-last in memory, so the neuron runs on a permuted
    view."""
    torch.manual_seed(0)
    current = torch.randn(1 if repeated else 6, 2, 5, 7, device=DEVICE) * 0.8 + 0.4
    current = current.to(dtype).permute(0, 1, 3, 2)  # not contiguous: run() permutes it back to storage order
    _assert_agree(NEURONS[neuron](reset, "atan").to(DEVICE), current, 6, monkeypatch)


@kernel_test
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_every_surrogate_with_a_kernel_id(monkeypatch, surrogate):
    torch.manual_seed(0)
    current = torch.randn(5, 3, 40, device=DEVICE) * 0.8 + 0.4
    assert SURROGATES[surrogate].kernel_id is not None
    _assert_agree(LIF(0.9, 0.7, "zero", surrogate), current, 5, monkeypatch)


@kernel_test
def test_a_gradient_of_the_spikes_alone_and_a_single_step(monkeypatch):
    """No gradient reaches the membrane output (the kernel gets None), and T = 1 (no recurrence at all)."""
    torch.manual_seed(0)
    for T in (1, 4):
        current = (torch.randn(T, 2, 30, device=DEVICE) + 0.5).requires_grad_()
        grads = []
        for backend in ("triton", "torch"):
            with monkeypatch.context() as patch:
                patch.setattr(kernels, "backend", lambda tensor, chosen=backend: chosen)
                (grad,) = torch.autograd.grad(LIF().run(current)[0].sum(), current)
                grads.append(grad)
        torch.testing.assert_close(*grads)


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="this is the interpreter's run")
def test_the_kernels_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "SNN_KERNELS": "triton", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", __file__, "-k", "not interpreter and not train_py and not compile"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 30 and "skipped" not in summary, summary  # every comparison ran


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
def test_kernels_compile_for_a_gpu_without_fused_multiply_adds():
    """Compiled for an H100-class GPU (no GPU needed): every surrogate's backward, and a forward pass whose PTX has no
    fma, which would round u * b + i once where the tensor code and the C++ kernels round twice."""
    pytest.importorskip("triton.backends.nvidia")
    from triton import compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from snn import triton_kernels as tk

    def build(kernel, signature, **constants):
        source = ASTSource(kernel, {**signature, **dict.fromkeys(constants, "constexpr")}, constexprs=constants)
        return compile(source, target=GPUTarget("cuda", 90, 32), options=tk.NO_FUSION).asm["ptx"]

    scalars = {"T": "i32", "E": "i32"}
    for dtype in ("fp32", "bf16"):
        pointers = {"I": f"*{dtype}", "U": "*fp32", "S": f"*{dtype}"}
        arguments = {**pointers, **scalars, "step": "i32", "b": "fp32", "th": "fp32"}
        ptx = build(tk._forward, arguments, ZERO_RESET=False, BLOCK=tk.BLOCK)
        assert "fma." not in ptx and "add.rn.f32" in ptx
    pointers = {"G": "*bf16", "GS": "*bf16", "GM": "*fp32", "U": "*fp32"}
    arguments = {**pointers, **scalars, "last": "i64", "b": "fp32", "th": "fp32", "slope": "fp32"}
    for kind in range(5):
        flags = dict(ZERO_RESET=True, KIND=kind, HAS_GS=True, HAS_GM=True, SUM_TIME=kind % 2 == 0, BLOCK=tk.BLOCK)
        assert ".entry" in build(tk._backward, arguments, **flags)


def test_forced_triton_refuses_where_it_cannot_run(monkeypatch):
    """SNN_KERNELS=triton never falls back: no Triton, or a CPU tensor without the interpreter, is one line."""
    monkeypatch.setattr(kernels, "mode", "triton")
    current = torch.randn(3, 2, 4)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (None, "ModuleNotFoundError: No module named 'triton'"))
    message = "SNN_KERNELS=triton: Triton cannot be imported here (ModuleNotFoundError: No module named 'triton'); "
    with pytest.raises(ConfigError, match=re.escape(message + "unset SNN_KERNELS")):
        LIF().run(current)
    monkeypatch.setattr(kernels, "_import_triton", lambda: (type("Kernels", (), {"INTERPRETED": False}), None))
    with pytest.raises(ConfigError, match="^SNN_KERNELS=triton: Triton cannot run on cpu tensors without TRITON_"):
        LIF().run(current)


def test_default_dispatch_keeps_the_cpu_kernels_and_warns_once_without_triton(monkeypatch):
    monkeypatch.setattr(kernels, "mode", "1")
    current = torch.randn(3, 2, 4)
    assert kernels.backend(current) == ("cpp" if kernels.load() is not None else "torch")  # Triton or not
    assert kernels.backend(current.double()) == "torch"
    monkeypatch.setattr(kernels, "_import_triton", lambda: (None, "ModuleNotFoundError: No module named 'triton'"))
    kernels._warn_no_triton.cache_clear()
    with pytest.warns(UserWarning, match="Triton unavailable .* tensor ops per time step") as warned:
        assert kernels.triton() is None and kernels.triton() is None
    assert len(warned) == 1
    kernels._warn_no_triton.cache_clear()


@pytest.mark.slow
@pytest.mark.skipif(INTERPRETED, reason="the interpreter's run")
def test_train_py_with_forced_triton_on_cpu_stops_with_one_line(tmp_path, mnist_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_KERNELS": "triton"}
    env.pop("TRITON_INTERPRET", None)
    args = [f"data.root={mnist_root}", *TINY, "T=2", "trainer.accelerator=cpu", "trainer.fast_dev_run=true"]
    command = [sys.executable, str(ROOT / "train.py"), *args, "trainer.enable_progress_bar=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    expected = "error: SNN_KERNELS=triton: " + (
        "Triton cannot run on cpu tensors without TRITON_INTERPRET=1 (its interpreter); unset SNN_KERNELS"
        if HAS_TRITON
        else "Triton cannot be imported here"
    )
    assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-3000:]
