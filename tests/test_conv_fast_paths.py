"""The conv SNN's fast paths (channels-last layout, the 2x2 max-pooling kernel, bf16 currents and spikes in the LIF
kernel) against the plain tensor code."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from snn import kernels
from snn.architectures import SpikingCNN
from snn.encoders import DirectEncoder
from snn.neurons import LIF
from snn.pooling import MaxPool2d
from tests.conftest import SIZES

needs_kernels = pytest.mark.skipif(kernels.load() is None, reason="the C++ kernels could not be built here")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(6, 5, 14, 14), (4, 16, 7, 7), (3, 8, 28, 27)])
@pytest.mark.parametrize("spikes", [True, False])
def test_max_pooling_kernel_equals_torch(dtype, shape, spikes):
    """Values and gradients exactly as nn.MaxPool2d, ties included (all-zero spike windows are the common case)."""
    torch.manual_seed(0)
    x = (torch.rand(shape) < 0.14).float() if spikes else torch.randn(shape)
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    fast_in, torch_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, reference = MaxPool2d(2)(fast_in), F.max_pool2d(torch_in, 2)
    grad = torch.randn_like(reference)
    fast.backward(grad)
    reference.backward(grad)
    assert torch.equal(fast, reference) and torch.equal(fast_in.grad, torch_in.grad)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert fast_in.grad.is_contiguous(memory_format=torch.channels_last)


@needs_kernels
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("steps", [None, 4])  # 4: one current repeated (direct input), its gradient summed over time
def test_bf16_currents_kernel_equals_tensor_code(monkeypatch, reset, steps):
    """Under autocast the currents and spikes are bf16 and the membrane stays float32, in both implementations."""
    torch.manual_seed(0)
    current = (torch.randn(1 if steps else 4, 32, 8, 6, 6) * 0.6 + 0.3).to(torch.bfloat16)
    current = current.contiguous(memory_format=torch.channels_last_3d).requires_grad_()  # as conv outputs come
    lif = LIF(0.9, 1.0, reset)

    def run():
        spikes, membrane = lif.run(current, steps)
        weights = torch.linspace(-1, 1, spikes.numel()).view(spikes.shape)
        (grad,) = torch.autograd.grad((spikes.float() * weights).sum() + membrane.sum(), current)
        return spikes, membrane, grad

    fast = run()
    monkeypatch.setattr(kernels, "usable", lambda *tensors, **kinds: False)
    slow = run()
    assert fast[0].dtype == torch.bfloat16 and fast[1].dtype == torch.float32 and fast[2].dtype == torch.bfloat16
    assert fast[0].stride() == current.stride()  # the layout is kept: no copies
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    torch.testing.assert_close(fast[2], slow[2], rtol=1e-2, atol=1e-2)  # bf16 rounding of the result


def _logits_and_grads(net, images):
    net.zero_grad()
    logits = net(DirectEncoder(T=4)(images))
    F.cross_entropy(logits, torch.arange(len(images)) % 10).backward()
    return logits.detach(), [p.grad.clone() for p in net.parameters()]


@needs_kernels
def test_conv_snn_fast_paths_equal_plain_tensor_code(monkeypatch):
    """The whole csnn, channels-last with the kernels vs SNN_KERNELS=0 (torch's pooling, tensor loops)."""
    torch.manual_seed(0)
    net = SpikingCNN(partial(LIF), channels=[8, 16, 16], hidden_size=32, **SIZES)
    assert net.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(12, 1, 28, 28)
    fast, fast_grads = _logits_and_grads(net, images)
    monkeypatch.setattr(kernels, "enabled", False)
    slow, slow_grads = _logits_and_grads(net, images)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@needs_kernels
def test_conv_snn_trains_under_bf16_autocast():
    torch.manual_seed(0)
    net = SpikingCNN(partial(LIF), channels=[8, 16], hidden_size=32, **SIZES)
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    images, labels = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(net(DirectEncoder(T=4)(images)), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    assert losses[-1] < 0.6 * losses[0]


def test_spike_counts_under_bf16_autocast_are_exact():
    """bf16 spikes are exact 0/1, but sums and the SynOps convolution in bf16 would round the counts."""
    from snn.spike_stats import SpikeStats, Trace

    torch.manual_seed(0)
    net = SpikingCNN(partial(LIF, threshold=0.5), channels=[8, 64], hidden_size=32, **SIZES)
    with torch.autocast("cpu", torch.bfloat16):
        _, trace = net(DirectEncoder(T=4)(torch.rand(64, 1, 28, 28)), trace=True)
        assert trace.spikes[0].dtype == torch.bfloat16
        in_bf16 = SpikeStats(net)
        in_bf16.update(trace)
    in_float = SpikeStats(net)
    in_float.update(Trace(inputs=trace.inputs, spikes=[s.float() for s in trace.spikes]))
    assert in_bf16.compute() == in_float.compute()
    assert in_float.compute()["spikes_per_sample"] > 256  # beyond bf16's exact integers
