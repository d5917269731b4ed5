"""The fused recurrent loop (snn/recurrent_fused.py, csrc/recurrent.cpp) for LIF, IF, PLIF, ALIF and Synaptic
against the plain autograd step loop of snn/recurrent.py, and against snnTorch's RLeaky and RSynaptic, step for
step."""

from functools import partial

import pytest
import snntorch
import torch

from snn import kernels, recurrent_fused
from snn.alif import ALIF
from snn.neurons import IF, LIF, PLIF, SnntorchLeaky
from snn.recurrent import Recurrent
from snn.synaptic import Synaptic

pytestmark = pytest.mark.skipif(kernels.load() is None, reason="the C++ kernels do not build here")


def _outputs(layer, current, weights, steps=None, fused=True):
    """Spikes, membranes and the gradients of a loss that reads both, with the fused loop on or off."""
    kernels.enabled = fused
    try:
        assert recurrent_fused.applies(layer.neuron, current, layer.weight) == fused
        spikes, membrane = layer.run(current, steps)
        loss = (spikes * weights).sum() + (membrane * weights.flip(0)).sum()
        params = [current, layer.weight, *layer.neuron.parameters()]
        return spikes, membrane, *torch.autograd.grad(loss, params)
    finally:
        kernels.enabled = kernels.mode != "0"


def _close(ours, theirs):
    """Float tolerance relative to the largest entry: gradients through time grow with T and W."""
    scale = float(theirs.detach().abs().max())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def _compare_with_the_step_loop(neuron, n_params):
    """The fused loop and the plain step loop on a [30, 5, 2, 3, 4] current: spikes equal, the membranes and the
    gradients of the input, W and the neuron's parameters to float tolerance; and the feedback matters."""
    torch.manual_seed(0)
    layer = Recurrent(neuron, shape=(2, 3, 4))  # any shape: W is [24, 24]
    layer.weight.data.mul_(2)  # feedback strong enough to change who spikes
    current = (torch.randn(30, 5, 2, 3, 4) * 0.6 + 0.2).requires_grad_()
    weights = torch.randn(30, 5, 2, 3, 4)
    fused, plain = _outputs(layer, current, weights), _outputs(layer, current, weights, fused=False)
    assert torch.equal(fused[0], plain[0]) and 0.05 < plain[0].mean() < 0.95
    assert len(fused) == len(plain) == 4 + n_params
    for ours, theirs in zip(fused[1:], plain[1:]):
        _close(ours, theirs)
        assert theirs.abs().sum() > 0
    assert not torch.equal(fused[0], layer.neuron.run(current)[0])  # the feedback changed who spikes


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("neuron", [partial(LIF, 0.85, 0.7), partial(IF, 0.7), partial(PLIF, 0.85, 0.7)])
def test_fused_equals_the_plain_step_loop(neuron, reset):
    _compare_with_the_step_loop(partial(neuron, reset=reset), 1 if neuron.func is PLIF else 0)  # PLIF: beta's too


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_fused_alif_equals_the_plain_step_loop(reset, learnable):
    """ALIF (the S-MNIST presets' neuron), its learned per-neuron beta and rho's gradients included."""
    neuron = partial(ALIF, 0.85, 0.5, adaptation=0.6, tau_adaptation=8.0, learnable=learnable, reset=reset)
    _compare_with_the_step_loop(neuron, 2 if learnable else 0)


@pytest.mark.parametrize("reset", ["subtract", "zero", "zero_leaky"])
def test_fused_synaptic_equals_the_plain_step_loop(reset):
    _compare_with_the_step_loop(partial(Synaptic, 0.6, 0.8, 0.9, reset=reset), 0)


@pytest.mark.parametrize("dense_above", [0.0, 1.0])
@pytest.mark.parametrize(
    "neuron, n_params",
    [(partial(LIF, 0.85, 0.7), 0), (partial(ALIF, 0.85, 0.5, 0.6, 8.0, True), 2), (partial(Synaptic, reset="zero"), 0)],
)
def test_dense_and_event_driven_feedback(neuron, n_params, dense_above, monkeypatch):
    """The forward's two ways to the feedback W s[t-1]: always one GEMM per block of rows (0), always spike by spike
    (1); the default switches between them by the step's spike rate."""
    monkeypatch.setattr(recurrent_fused, "DENSE_ABOVE", dense_above)
    _compare_with_the_step_loop(neuron, n_params)


@pytest.mark.parametrize(
    "neuron", [partial(LIF, 0.9), partial(ALIF, 0.9, 0.8, learnable=True), partial(Synaptic, 0.5, 0.9)]
)
def test_one_step_repeated_gets_the_summed_gradient(neuron):
    """Direct encoding hands a [1, B, ...] current with steps=T: its gradient is the sum over time."""
    torch.manual_seed(1)
    layer = Recurrent(neuron, shape=(16,))
    current = (torch.rand(1, 4, 16) * 1.5).requires_grad_()
    weights = torch.randn(12, 4, 16)
    fused, plain = _outputs(layer, current, weights, steps=12), _outputs(layer, current, weights, 12, fused=False)
    assert fused[0].shape == (12, 4, 16) and torch.equal(fused[0], plain[0]) and fused[2].shape == (1, 4, 16)
    for ours, theirs in zip(fused[1:], plain[1:]):
        _close(ours, theirs)


def test_fused_synaptic_equals_snntorch_rsynaptic_step_for_step():
    """snnTorch 1.0's RSynaptic(all_to_all=True): syn = alpha syn + I + V(s[t-1]), U = beta U + syn - R threshold, V an
    nn.Linear (bias zeroed here), R detached. Its zero reset also zeroes the synaptic current: only subtract agrees."""
    torch.manual_seed(3)
    n = 20
    layer = Recurrent(partial(Synaptic, 0.7, 0.8, 0.9), shape=(n,))
    layer.weight.data.mul_(2)
    rsynaptic = snntorch.RSynaptic(alpha=0.7, beta=0.8, threshold=0.9, all_to_all=True, linear_features=n,
                                   spike_grad=layer.neuron.surrogate)  # fmt: skip
    with torch.no_grad():
        rsynaptic.recurrent.weight.copy_(layer.weight)
        rsynaptic.recurrent.bias.zero_()
    current = (torch.randn(40, 6, n) * 0.3 + 0.1).requires_grad_()
    weights = torch.randn(40, 6, n)
    ours = _outputs(layer, current, weights)

    spk, syn, mem = rsynaptic.reset_mem()
    spikes, membranes = [], []
    for current_t in current:
        spk, syn, mem = rsynaptic(current_t, spk, syn, mem)
        spikes.append(spk)
        membranes.append(mem)
    spikes, membranes = torch.stack(spikes), torch.stack(membranes)
    loss = (spikes * weights).sum() + (membranes * weights.flip(0)).sum()
    theirs = (spikes, membranes, *torch.autograd.grad(loss, [current, rsynaptic.recurrent.weight]))
    assert torch.equal(ours[0], theirs[0]) and 0.05 < theirs[0].mean() < 0.95
    for a, b in zip(ours[1:], theirs[1:]):
        _close(a, b)


def test_fused_equals_snntorch_rleaky_step_for_step():
    """snnTorch 1.0's RLeaky(all_to_all=True): U = beta U + I + V(s[t-1]) - R threshold, V an nn.Linear (its bias set
    to zero here), the reset R detached. Its zero reset also zeroes the step's input, unlike Leaky's (and ours,
    which follow Leaky): so only the subtract reset is compared."""
    torch.manual_seed(2)
    n = 20
    layer = Recurrent(partial(LIF, 0.8, 0.9), shape=(n,))
    layer.weight.data.mul_(2)
    rleaky = snntorch.RLeaky(beta=0.8, threshold=0.9, all_to_all=True, linear_features=n,
                             spike_grad=layer.neuron.surrogate)  # fmt: skip
    with torch.no_grad():
        rleaky.recurrent.weight.copy_(layer.weight)
        rleaky.recurrent.bias.zero_()
    current = (torch.randn(40, 6, n) * 0.6 + 0.3).requires_grad_()
    weights = torch.randn(40, 6, n)
    ours = _outputs(layer, current, weights)

    spk, mem = rleaky.reset_mem()
    spikes, membranes = [], []
    for current_t in current:
        spk, mem = rleaky(current_t, spk, mem)
        spikes.append(spk)
        membranes.append(mem)
    spikes, membranes = torch.stack(spikes), torch.stack(membranes)
    loss = (spikes * weights).sum() + (membranes * weights.flip(0)).sum()
    theirs = (spikes, membranes, *torch.autograd.grad(loss, [current, rleaky.recurrent.weight]))
    assert torch.equal(ours[0], theirs[0]) and 0.05 < theirs[0].mean() < 0.95
    for a, b in zip(ours[1:], theirs[1:]):
        _close(a, b)


def test_where_the_fused_loop_applies(monkeypatch):
    monkeypatch.setattr(kernels, "enabled", True)  # also under SNN_KERNELS=0: what applies where kernels are on
    current = torch.zeros(3, 2, 4)
    lif = Recurrent(partial(LIF), shape=(4,))
    assert recurrent_fused.applies(lif.neuron, current, lif.weight)
    for neuron in (partial(ALIF, learnable=True), partial(Synaptic, reset="zero")):
        layer = Recurrent(neuron, shape=(4,))
        assert recurrent_fused.applies(layer.neuron, current, layer.weight)
    snntorch_leaky = Recurrent(partial(SnntorchLeaky), shape=(4,))  # snnTorch's own loop: stepped, not fused
    assert not recurrent_fused.applies(snntorch_leaky.neuron, current, snntorch_leaky.weight)
    with torch.autocast("cpu", torch.bfloat16):  # bf16 autocast: fused too, autocast's bf16 current cast up
        assert recurrent_fused.applies(lif.neuron, current.bfloat16(), lif.weight)
        spikes, _ = lif.run(torch.ones(3, 2, 4, dtype=torch.bfloat16))
    assert spikes.dtype == torch.float32 and spikes.shape == (3, 2, 4)
    assert not recurrent_fused.applies(lif.neuron, current.double(), lif.weight)
    assert not recurrent_fused.applies(lif.neuron, current, lif.weight.bfloat16())


@pytest.mark.parametrize("neuron", [partial(LIF, beta=0.9), partial(ALIF, learnable=True), partial(Synaptic)])
def test_bf16_autocast_keeps_the_forward_and_lowers_the_backward_products(neuron):
    """Under bf16 autocast the forward is the float32 one (the same spikes and membranes), the backward's products
    through W run in bf16: the gradients agree with float32's to bf16 rounding, and differ from them."""
    torch.manual_seed(0)
    layer = Recurrent(neuron, shape=(32,))
    current = (torch.randn(20, 8, 32) * 0.8 + 0.3).requires_grad_()
    weights = torch.randn(20, 8, 32)
    results = []
    for autocast in (False, True):
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            spikes, membrane = layer.run(current)
        loss = (spikes * weights).sum() + (membrane * weights.flip(0)).sum()
        results.append((spikes, membrane, *torch.autograd.grad(loss, [current, layer.weight])))
    (spikes, membrane, *grads), (spikes16, membrane16, *grads16) = results
    assert torch.equal(spikes, spikes16) and torch.equal(membrane, membrane16) and 0.05 < spikes.mean() < 0.95
    for low, full in zip(grads16, grads):
        assert not torch.equal(low, full)
        assert float((low - full).norm() / full.norm()) < 1e-2


def test_the_fused_loops_flush_denormal_gradients_to_zero_and_leave_the_caller_alone():
    """A gradient that has vanished to a denormal float (below 1.2e-38) is zero in the fused loops, as on a GPU (x86
    would take ~100 cycles per denormal operand); the calling thread's own arithmetic keeps its denormals."""
    torch.manual_seed(0)
    layer = Recurrent(partial(ALIF, 0.9, learnable=True), shape=(8,))
    x = (torch.randn(20, 3, 8) * 2).requires_grad_()
    spikes, membrane = layer.run(x)
    assert recurrent_fused.applies(layer.neuron, x, layer.weight)
    (membrane.sum() * 1e-42).backward()  # a denormal gradient enters the loop
    assert torch.count_nonzero(x.grad) == 0 and torch.count_nonzero(layer.weight.grad) == 0
    assert float(torch.tensor(1e-42) * 1.0) > 0  # this thread still computes with denormals
