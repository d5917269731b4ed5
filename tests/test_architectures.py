from functools import partial

import pytest
import torch
from torch import nn

from snn.architectures import CNN, MLP, SpikingCNN, SpikingMLP
from snn.encoders import DirectEncoder
from snn.neurons import LIF
from tests.conftest import SIZES


def test_direct_input_is_computed_once_with_identical_results():
    torch.manual_seed(0)
    net = SpikingMLP(partial(LIF, beta=0.9), hidden_sizes=[40], **SIZES)
    images = torch.rand(6, 1, 28, 28)
    once = DirectEncoder(T=7)(images)
    assert once.stride(0) == 0  # a view: the network sees the same input at every step

    def run(x):
        net.zero_grad()
        logits = net(x)
        (logits * torch.arange(10.0)).sum().backward()
        return logits, [p.grad.clone() for p in net.parameters()]

    fast, fast_grads = run(once)
    slow, slow_grads = run(once.contiguous())
    assert torch.equal(fast, slow)
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_membrane_readout_and_depth():
    net = SpikingMLP(partial(LIF), hidden_sizes=[20, 30], readout="membrane", **SIZES)
    assert [stage[-1].out_features for stage in net.stages] == [20, 30, 10]
    logits = net(torch.rand(3, 2, 1, 28, 28))
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    assert MLP(hidden_sizes=[20], **SIZES)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_conv_architectures_shapes_and_direct_shortcut():
    torch.manual_seed(0)
    net = SpikingCNN(partial(LIF), channels=[4, 8], hidden_size=16, **SIZES)
    images = torch.rand(3, 1, 28, 28)
    net.eval()  # BatchNorm with running statistics: the shortcut and the full path must agree exactly
    once = net(DirectEncoder(T=4)(images))
    assert once.shape == (3, 10)
    assert torch.allclose(once, net(DirectEncoder(T=4)(images).contiguous()), atol=1e-6)
    assert CNN(channels=[4, 8], hidden_size=16, **SIZES)(images).shape == (3, 10)


def test_conv_pooling_choice():
    avg = SpikingCNN(partial(LIF), channels=[4, 8], hidden_size=16, pool="avg", **SIZES)
    pools = [type(m) for m in avg.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert pools == [nn.AvgPool2d, nn.AvgPool2d]
    assert avg(torch.rand(2, 3, 1, 28, 28)).shape == (3, 10)
    assert any(isinstance(m, nn.MaxPool2d) for m in CNN(channels=[4], hidden_size=8, **SIZES).modules())  # the default
    with pytest.raises(ValueError, match="pool='min' is not allowed: max, avg"):
        CNN(channels=[4], pool="min", **SIZES)
