"""ALIF and Synaptic (snn/alif.py, snn/synaptic.py): the fused C++ time loops against plain step-by-step references
written here from the docstrings' equations, against snnTorch's Synaptic, without the kernels (SNN_KERNELS=0), under
Recurrent, and in real tiny trainings, exports and imports."""

import json
import math
import os
import subprocess
import sys
from functools import partial

import pytest
import snntorch
import torch

from snn import kernels
from snn.alif import ALIF
from snn.neurons import LIF
from snn.recurrent import Recurrent
from snn.surrogates import ATan, FastSigmoid
from snn.synaptic import Synaptic, fused
from tests.conftest import ROOT, train_tiny

T, B, N = 12, 3, 5


def alif_reference(current, beta, rho, threshold, adaptation, zero, surrogate):
    """a[t] = rho a[t-1] + (1 - rho) S[t-1]; theta = threshold + adaptation a; U[t] = beta U[t-1] + I[t] - theta[t-1]
    S[t-1] (detached), or beta U[t-1] (1 - S[t-1]) + I[t]; S[t] = H(U[t] - theta[t])."""
    membrane = adapt = spikes = None
    out, membranes = [], []
    for current_t in current:
        if membrane is None:
            membrane, adapt = current_t, torch.zeros_like(current_t)
        else:
            theta_before, fired = adapt.detach() * adaptation + threshold, spikes.detach()
            adapt = rho * adapt + (1 - rho) * spikes
            if zero:
                membrane = membrane * (1 - fired) * beta + current_t
            else:
                membrane = beta * membrane + current_t - theta_before * fired
        spikes = surrogate(membrane - (adapt * adaptation + threshold))
        out.append(spikes)
        membranes.append(membrane)
    return torch.stack(out), torch.stack(membranes)


def synaptic_reference(current, alpha, beta, threshold, reset, surrogate):
    """syn[t] = alpha syn[t-1] + I[t]; U[t] from the reset's equation; S[t] = H(U[t] - threshold)."""
    membrane = syn = None
    out, membranes = [], []
    for current_t in current:
        if membrane is None:
            syn = membrane = current_t
        else:
            fired = (membrane > threshold).float()
            syn = alpha * syn + current_t
            if reset == "subtract":
                membrane = beta * membrane + syn - fired * threshold
            elif reset == "zero":
                membrane = (beta * membrane + syn) * (1 - fired)
            else:
                membrane = membrane * (1 - fired) * beta + syn
        out.append(surrogate(membrane - threshold))
        membranes.append(membrane)
    return torch.stack(out), torch.stack(membranes)


def _currents(repeated: bool, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1 if repeated else T, B, N, generator=generator) * 1.6 - 0.2


def _loss(spikes, membrane):
    weights = torch.linspace(-1, 1, spikes[0].numel()).view(spikes.shape[1:])
    return (spikes * weights).sum() + (membrane * weights).square().sum() * 0.1


def test_the_kernels_are_built():
    assert kernels.load() is not None  # otherwise the comparisons below would compare the tensor path with itself
    assert fused(_currents(False), ATan()) and fused(_currents(False).bfloat16(), ATan())


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("repeated", [False, True])
@pytest.mark.parametrize("learnable", [False, True])
def test_alif_fused_equals_the_reference(reset, repeated, learnable):
    neuron = ALIF(0.85, 0.8, adaptation=1.5, tau_adaptation=6, learnable=learnable, reset=reset, shape=(N,))
    if learnable:  # per-neuron decays that differ, so that a mix-up of neurons shows
        with torch.no_grad():
            neuron.beta_logit.add_(torch.linspace(-0.5, 0.5, N))
            neuron.rho_logit.add_(torch.linspace(0.4, -0.4, N))
    current = _currents(repeated).requires_grad_()
    spikes, membrane = neuron.run(current, steps=T)
    params = [current, *neuron.parameters()]
    grads = torch.autograd.grad(_loss(spikes, membrane), params)

    expected = alif_reference(current.expand(T, B, N), neuron.beta, neuron.rho, 0.8, 1.5, reset == "zero", ATan())
    expected_grads = torch.autograd.grad(_loss(*expected), params)
    assert 0.05 < spikes.mean() < 0.6  # neurons fire and adapt: the comparison means something
    assert torch.equal(spikes, expected[0])
    torch.testing.assert_close(membrane, expected[1])
    for grad, want in zip(grads, expected_grads):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-5)


def test_alif_adaptation_raises_the_threshold():
    """A constant drive: the adaptive neuron fires less and less often, a LIF (adaptation 0) does not."""
    current = torch.full((60, 1, 1), 0.5)
    adaptive = ALIF(0.9, 1.0, adaptation=3.0, tau_adaptation=30, shape=(1,)).run(current)[0].flatten()
    plain = ALIF(0.9, 1.0, adaptation=0.0, shape=(1,)).run(current)[0].flatten()
    assert adaptive[:20].sum() > adaptive[40:].sum()
    assert plain[:20].sum() <= plain[40:].sum() + 1


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_alif_without_adaptation_is_lif(reset):
    """adaptation=0: ALIF is LIF step for step (spikes, membrane, input gradient), so the lif-vs-alif comparison of
    a preset is `-m neuron.adaptation=0,1.8`, every other key equal."""
    torch.manual_seed(3)
    current = (torch.rand(40, 3, 8) * 0.6).requires_grad_()
    outputs, grads = [], []
    for layer in (ALIF(0.9, 0.8, adaptation=0.0, reset=reset, shape=(8,)), LIF(0.9, 0.8, reset=reset)):
        spikes, membrane = layer.run(current)
        (grad,) = torch.autograd.grad((spikes * torch.linspace(0, 1, 8)).sum() + membrane.sum(), current)
        outputs.append((spikes, membrane))
        grads.append(grad)
    assert outputs[0][0].sum() > 0
    assert torch.equal(outputs[0][0], outputs[1][0])
    torch.testing.assert_close(outputs[0][1], outputs[1][1])
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("reset", ["subtract", "zero", "zero_leaky"])
@pytest.mark.parametrize("repeated", [False, True])
def test_synaptic_fused_equals_the_reference(reset, repeated):
    neuron = Synaptic(0.7, 0.85, 0.9, reset=reset, surrogate="fast_sigmoid", shape=(N,))
    current = (_currents(repeated, seed=1) * 0.4).requires_grad_()  # syn sums ~1 / (1 - alpha) steps
    spikes, membrane = neuron.run(current, steps=T)
    (grad,) = torch.autograd.grad(_loss(spikes, membrane), current)
    expected = synaptic_reference(current.expand(T, B, N), 0.7, 0.85, 0.9, reset, FastSigmoid())
    (expected_grad,) = torch.autograd.grad(_loss(*expected), current)
    assert 0.05 < spikes.mean() < 0.7
    assert torch.equal(spikes, expected[0])
    torch.testing.assert_close(membrane, expected[1])
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reset", ["subtract", "zero", "zero_leaky"])
def test_synaptic_equals_snntorch(reset):
    """Step for step snntorch.Synaptic (zero_leaky: snnTorch's NIR importer's Synaptic, reset_delay=False, whose
    spikes are NIR's CubaLIF's; its returned membrane is the one after the reset)."""
    ours = Synaptic(0.75, 0.9, 1.0, reset=reset, shape=(N,))
    delay = reset != "zero_leaky"
    theirs = snntorch.Synaptic(0.75, 0.9, threshold=1.0, spike_grad=ours.surrogate, reset_delay=delay,
                               reset_mechanism="zero" if reset != "subtract" else "subtract")  # fmt: skip
    current = (_currents(False, seed=2) * 0.4).requires_grad_()
    spikes, membrane = ours.run(current)
    (grad,) = torch.autograd.grad((spikes * torch.arange(N)).sum() + membrane.sum(), current)
    theirs.reset_mem()
    their_spikes, their_membrane = zip(*((s, m) for s, _, m in (theirs(step) for step in current)))
    their_spikes, their_membrane = torch.stack(their_spikes), torch.stack(their_membrane)
    assert 0.05 < spikes.mean() < 0.7
    assert torch.equal(spikes, their_spikes)
    if delay:
        torch.testing.assert_close(membrane, their_membrane)
        (their_grad,) = torch.autograd.grad((their_spikes * torch.arange(N)).sum() + their_membrane.sum(), current)
        torch.testing.assert_close(grad, their_grad, rtol=1e-4, atol=1e-5)


SCRIPT = """
import sys, torch
from snn import kernels
from snn.alif import ALIF
from snn.synaptic import Synaptic, fused
from tests.test_temporal_neurons import _currents, _loss
out = {"fused": kernels.enabled}
for name, neuron in [("alif", ALIF(0.85, 0.8, 1.5, 6, True, "zero", shape=(5,))),
                     ("synaptic", Synaptic(0.7, 0.85, 0.9, "zero", shape=(5,)))]:
    current = _currents(False).requires_grad_()
    spikes, membrane = neuron.run(current)
    grads = torch.autograd.grad(_loss(spikes, membrane), [current, *neuron.parameters()])
    out[name] = (spikes, membrane, grads)
torch.save(out, sys.argv[1])
"""


def test_without_kernels_the_same_numbers(tmp_path):
    """SNN_KERNELS=0: the plain tensor path (`step` over time) gives what the fused loops give."""
    results = {}
    for setting in ("0", "1"):
        path = tmp_path / f"{setting}.pt"
        env = {**os.environ, "SNN_KERNELS": setting, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-c", SCRIPT, str(path)], cwd=ROOT, env=env, check=True)
        results[setting] = torch.load(path, weights_only=True)
    assert (results["0"]["fused"], results["1"]["fused"]) == (False, True)
    for name in ("alif", "synaptic"):
        (spikes, membrane, grads), (spikes1, membrane1, grads1) = results["0"][name], results["1"][name]
        assert torch.equal(spikes, spikes1) and spikes.sum() > 0
        torch.testing.assert_close(membrane, membrane1)
        for grad, grad1 in zip(grads, grads1):
            torch.testing.assert_close(grad, grad1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("neuron", [partial(ALIF, tau_adaptation=5.0), partial(Synaptic, reset="zero")])
def test_step_works_under_recurrent(neuron):
    layer = Recurrent(neuron, shape=(N,))
    spikes, membrane = layer.run(_currents(False) + 0.3)
    assert spikes.shape == membrane.shape == (T, B, N) and spikes.sum() > 0
    spikes.sum().backward()
    assert layer.weight.grad.abs().sum() > 0


def test_bf16_currents_run_in_the_kernels():
    current = _currents(False, seed=3)
    neuron = ALIF(0.85, 0.8, 1.5, 6, shape=(N,))
    spikes, membrane = neuron.run(current.bfloat16())
    assert spikes.dtype == torch.bfloat16 and membrane.dtype == torch.float32
    expected = neuron.run(current.bfloat16().float())
    assert torch.equal(spikes.float(), expected[0]) and torch.equal(membrane, expected[1])


def test_bad_values_are_one_line():
    with pytest.raises(ValueError, match=r"^tau_adaptation=0 is not allowed: steps > 0$"):
        ALIF(tau_adaptation=0)
    with pytest.raises(ValueError, match=r"^beta=1.0 is not allowed: a number in \(0, 1\) \(learnable"):
        ALIF(beta=1.0, learnable=True, shape=(3,))
    with pytest.raises(ValueError, match=r"^reset='zero_leaky' is not allowed: subtract, zero$"):
        ALIF(reset="zero_leaky")
    with pytest.raises(ValueError, match=r"^alpha=1.5 is not allowed: a number in \[0, 1\]$"):
        Synaptic(alpha=1.5)


@pytest.mark.parametrize("name", ["alif", "synaptic"])
def test_trains_through_train_py_and_with_the_conv_net(name, mnist_root, tmp_path):
    extra = ["neuron.tau_adaptation=5"] if name == "alif" else ["neuron.reset=zero_leaky"]
    run = train_tiny(tmp_path / "mlp", mnist_root, f"neuron={name}", *extra, "T=4", "model.hidden_sizes=[64]",
                     "trainer.max_epochs=5", "optimizer.lr=5e-3", "encoder=direct")  # fmt: skip
    results = json.loads((run / "results.json").read_text())
    assert results["test/acc"] > 0.5 and results["neuron"] == name  # 10 bar classes: far above chance (0.1)
    conv = train_tiny(tmp_path / "conv", mnist_root, f"neuron={name}", "model=csnn", "T=2",
                      "trainer.fast_dev_run=true")  # fmt: skip
    assert math.isfinite(json.loads((conv / "results.json").read_text())["test/loss"])

    checkpoint = run / "checkpoints" / "best.ckpt"
    done = subprocess.run([sys.executable, "-m", "snn.export", f"ckpt={checkpoint}"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)  # fmt: skip
    if name == "alif":
        line = "ALIF has no NIR node: NIR has no adaptive-threshold neuron, so neuron=alif cannot be exported"
        assert done.returncode == 1 and done.stderr == f"error: {checkpoint}: {line}\n"
        assert not (run / "export").exists()
        return
    from snn.evaluation import load_classifier
    from snn.nir_import import load_nir

    assert done.returncode == 0, done.stderr
    net, info = load_nir(done.stdout.strip())
    assert [node for node in info["nodes"] if node.endswith("LIF")] == ["CubaLIF", "CubaLIF"]
    module, _ = load_classifier(checkpoint)
    x = (torch.rand(4, 8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with torch.no_grad():
        assert torch.equal(net(x), module.net(x)) and net(x).sum() > 0


def test_nir_nodes_and_refusals():
    from snn.nir_graph import NIRError

    node = Synaptic(0.5, 0.75, 2.0, reset="zero_leaky", shape=(3,)).nir_node(1e-4)
    assert node.tau_syn.tolist() == [2e-4] * 3 and node.tau_mem.tolist() == [4e-4] * 3
    assert node.r.tolist() == [4.0] * 3 and node.w_in.tolist() == [2.0] * 3 and node.v_threshold.tolist() == [2.0] * 3
    for reset in ("subtract", "zero"):
        with pytest.raises(NIRError, match=r"reset other than zero_leaky .*; train with neuron.reset=zero_leaky to"):
            Synaptic(reset=reset, shape=(3,)).nir_node(1e-4)
    with pytest.raises(NIRError, match=r"^Synaptic with alpha=1, beta=0.9 has no CubaLIF node: a decay of 1 is"):
        Synaptic(alpha=1.0, reset="zero_leaky", shape=(3,)).nir_node(1e-4)
    with pytest.raises(NIRError, match=r"^ALIF has no NIR node: NIR has no adaptive-threshold neuron"):
        ALIF(shape=(3,)).nir_node(1e-4)
