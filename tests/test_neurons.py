import os

import pytest
import snntorch
import torch

from snn import kernels
from snn.neurons import IF, LIF, PLIF, SnntorchLeaky
from snn.surrogates import SURROGATES, surrogate_by_name


@pytest.fixture(params=["kernel", "tensor"])
def backend(request, monkeypatch):
    """Both implementations of the time loops: the C++ kernel and the tensor ops per step."""
    if request.param == "kernel":
        if kernels.load() is None:
            pytest.skip("the C++ kernels could not be built here")
    else:
        monkeypatch.setattr(kernels, "usable", lambda *tensors, **kinds: False)
    return request.param


def _leaky_reference(current, beta, threshold, reset, surrogate):
    """The dynamics written out step by step with plain autograd (the documented equations)."""
    membrane, spikes, mems = torch.zeros_like(current[0]), torch.zeros_like(current[0]), []
    out = []
    for step in current:
        reset_signal = spikes.detach()
        if reset == "zero":
            membrane = beta * (membrane * (1 - reset_signal)) + step
        else:
            membrane = beta * membrane + step - threshold * reset_signal
        spikes = surrogate(membrane - threshold)
        out.append(spikes)
        mems.append(membrane)
    return torch.stack(out), torch.stack(mems)


def _grads(run, current, *params):
    torch.manual_seed(1)
    spikes, membrane = run(current)
    weights_s, weights_m = torch.randn_like(spikes), torch.randn_like(membrane)
    grads = torch.autograd.grad((spikes * weights_s).sum() + (membrane * weights_m).sum(), (current, *params))
    return spikes, membrane, grads


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
@pytest.mark.parametrize("T", [1, 50])
@pytest.mark.parametrize("leak", ["lif", "if"])
def test_fused_neuron_matches_snntorch_leaky_step_for_step(backend, reset, surrogate, T, leak):
    torch.manual_seed(0)
    current = (torch.randn(T, 8, 33) * 0.8 + (0.4 if leak == "lif" else 0.1)).requires_grad_()
    beta = 0.85 if leak == "lif" else 1.0
    ours = LIF(beta, 0.7, reset, surrogate) if leak == "lif" else IF(0.7, reset, surrogate)
    theirs = SnntorchLeaky(beta=beta, threshold=0.7, reset=reset, surrogate=surrogate)
    assert isinstance(theirs.leaky, snntorch.Leaky)
    s1, m1, (g1,) = _grads(ours.run, current)
    s2, m2, (g2,) = _grads(theirs.run, current)
    assert torch.equal(s1, s2)
    assert torch.allclose(m1, m2, atol=1e-6)
    assert torch.allclose(g1, g2, atol=1e-5)
    assert 0.05 < s1.mean() < 0.95  # the comparison exercised both spiking and silence


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_plif_learnable_decay_gradient_matches_autograd(backend, reset):
    torch.manual_seed(0)
    current = (torch.randn(20, 4, 16) + 0.3).requires_grad_()
    plif = PLIF(beta=0.8, threshold=1.0, reset=reset)
    _, _, (g_current, g_logit) = _grads(plif.run, current, plif.beta_logit)
    reference = lambda x: _leaky_reference(x, plif.beta, 1.0, reset, plif.surrogate)
    _, _, (r_current, r_logit) = _grads(reference, current, plif.beta_logit)
    assert torch.allclose(g_current, r_current, atol=1e-5)
    assert torch.allclose(g_logit, r_logit, rtol=1e-4)
    assert g_logit.abs() > 0


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_kernel_and_tensor_loops_agree_bit_for_bit(monkeypatch, reset):
    if kernels.load() is None:
        pytest.skip("the C++ kernels could not be built here")
    torch.manual_seed(0)
    current = (torch.randn(25, 64, 300) * 0.6 + 0.25).requires_grad_()
    lif = LIF(0.9, 1.0, reset)
    fast = _grads(lif.run, current)
    monkeypatch.setattr(kernels, "usable", lambda *tensors, **kinds: False)
    slow = _grads(lif.run, current)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    torch.testing.assert_close(fast[2][0], slow[2][0], rtol=1e-5, atol=1e-5)  # torch may fuse multiply-adds


@pytest.mark.parametrize("neuron", [LIF, PLIF])
def test_one_step_repeated_equals_the_copied_sequence(backend, neuron):
    """Direct encoding hands the neuron one step and `steps=T`; spikes, membrane and the gradients (the current's is
    summed over time, in the kernel unless the learned decay needs every step's) equal those of a real copy."""
    torch.manual_seed(0)
    step = (torch.randn(1, 6, 40) + 0.5).requires_grad_()
    lif = neuron()
    params = list(lif.parameters())
    repeated = _grads(lambda c: lif.run(c, steps=10), step, *params)
    copied = _grads(lif.run, step.expand(10, 6, 40).clone(), *params)
    assert repeated[0].shape == (10, 6, 40) and repeated[2][0].shape == (1, 6, 40)
    assert torch.equal(repeated[0], copied[0]) and torch.equal(repeated[1], copied[1])
    torch.testing.assert_close(repeated[2][0], copied[2][0].sum(0, keepdim=True))
    for a, b in zip(repeated[2][1:], copied[2][1:]):  # PLIF's decay
        torch.testing.assert_close(a, b)


def test_if_integrates_without_leak(backend):
    spikes, membrane = IF(threshold=1.0).run(torch.full((4, 1, 1), 0.4))
    assert membrane.flatten().tolist() == pytest.approx([0.4, 0.8, 1.2, 0.6])  # fires at t=2, subtracts 1 at t=3
    assert spikes.flatten().tolist() == [0, 0, 1, 0]


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_shape(name):
    surrogate = surrogate_by_name(name)
    x = torch.linspace(-2, 2, 401, requires_grad=True)
    spikes = surrogate(x)
    assert torch.equal(spikes, (x > 0).float())  # forward is the Heaviside step
    (grad,) = torch.autograd.grad(spikes.sum(), x)
    assert torch.isfinite(grad).all() and (grad >= 0).all()
    assert grad[200] == grad.max() > 0  # peak at the threshold
    if name != "straight_through":
        assert grad[0] < grad[200] and grad[-1] < grad[200]
        assert torch.allclose(grad, grad.flip(0))  # symmetric around the threshold


def test_surrogate_slope_sharpens():
    x = torch.tensor([0.2])
    assert surrogate_by_name("fast_sigmoid", 50).derivative(x) < surrogate_by_name("fast_sigmoid", 5).derivative(x)


def test_unknown_surrogate_is_rejected():
    with pytest.raises(ValueError, match="surrogate='nope' is not allowed: atan"):
        LIF(surrogate="nope")


@pytest.mark.parametrize("mode", ["1", "require"])
def test_a_kernel_build_failure_falls_back_or_fails_as_asked(tmp_path, monkeypatch, mode):
    """By default a failed build warns and the tensor code runs; SNN_KERNELS=require (CI) makes it an error."""
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kernels, "SOURCES", [broken])
    monkeypatch.setattr(kernels, "_cpu_tag", lambda: f"broken_{os.getpid()}")  # never touch the real build's cache
    monkeypatch.setattr(kernels, "mode", mode)
    kernels.load.cache_clear()
    try:
        if mode == "require":
            with pytest.raises(RuntimeError, match="SNN_KERNELS=require"):
                kernels.load()
        else:
            with pytest.warns(UserWarning, match="C\\+\\+ kernels unavailable"):
                assert kernels.load() is None
    finally:
        kernels.load.cache_clear()  # the next caller loads the real kernels again
