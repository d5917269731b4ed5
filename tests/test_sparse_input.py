from functools import partial

import pytest
import torch
from torch import nn

from snn import kernels, sparse_input
from snn.architectures import SpikingMLP
from snn.neurons import LIF
from snn.sparse_input import SparseInputLinear
from tests.conftest import SIZES

requires_kernel = pytest.mark.skipif(kernels.load() is None, reason="the C++ kernel could not be built here")


def _layers(in_features, out_features, mode="always"):
    torch.manual_seed(0)
    sparse = SparseInputLinear(in_features, out_features, mode=mode)
    dense = nn.Linear(in_features, out_features)
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def _forward_backward(layer, x):
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = layer(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(out.dtype))
    grads = [layer.weight.grad, layer.bias.grad] + ([x.grad] if x.requires_grad else [])
    return out, grads


@requires_kernel
@pytest.mark.parametrize("out_features", [16, 17, 100, 1000])  # whole and partial column blocks
@pytest.mark.parametrize("density", [0.0, 0.13, 0.6, 1.0])
def test_event_driven_product_equals_dense(out_features, density):
    torch.manual_seed(1)
    x = (torch.rand(300, 37) < density).float()
    sparse, dense = _layers(37, out_features)
    out_s, grads_s = _forward_backward(sparse, x)
    out_d, grads_d = _forward_backward(dense.double(), x.double())  # the exact sums, to compare float rounding
    torch.testing.assert_close(out_s, out_d.float(), rtol=1e-5, atol=1e-5)
    for g_s, g_d in zip(grads_s, grads_d):
        torch.testing.assert_close(g_s, g_d.float(), rtol=1e-5, atol=1e-4)  # float32 sums of 300 terms


@requires_kernel
def test_graded_inputs_and_input_gradient():
    """Non-binary sparse inputs (direct encoding's pixels) and inputs that need a gradient (hidden spikes)."""
    torch.manual_seed(2)
    x = torch.rand(64, 50) * (torch.rand(64, 50) < 0.2)
    x.requires_grad_(True)
    sparse, dense = _layers(50, 40)
    out_s, grads_s = _forward_backward(sparse, x)
    out_d, grads_d = _forward_backward(dense, x)
    torch.testing.assert_close(out_s, out_d, rtol=1e-5, atol=1e-5)
    assert grads_s[2] is not None and len(grads_s) == 3
    for g_s, g_d in zip(grads_s, grads_d):
        torch.testing.assert_close(g_s, g_d, rtol=1e-5, atol=1e-5)


@requires_kernel
def test_auto_mode_chooses_by_density(monkeypatch):
    calls = []
    monkeypatch.setattr(sparse_input._SparseInputProduct, "apply", lambda *a: calls.append(1) or a[1].new_zeros(4, 16))
    layer = SparseInputLinear(8, 16, mode="auto")
    layer(torch.eye(4, 8))  # 1/8 non-zero: event-driven
    assert calls == [1]
    layer(torch.ones(4, 8))  # dense: nn.Linear
    SparseInputLinear(8, 16, mode="never")(torch.eye(4, 8))
    SparseInputLinear(8, 10, mode="always")(torch.eye(4, 8))  # too few outputs for the kernel's blocks
    assert calls == [1]


def test_without_the_kernel_the_dense_product_runs(monkeypatch):
    monkeypatch.setattr(kernels, "load", lambda: None)
    sparse, dense = _layers(20, 30)
    x = (torch.rand(8, 20) < 0.1).float()
    torch.testing.assert_close(sparse(x), dense(x))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="sparse_input='yes' is not allowed: auto, always, never"):
        SparseInputLinear(4, 16, mode="yes")


@requires_kernel
def test_spiking_mlp_trains_the_same_either_way():
    """One optimiser step of the 784-1000-10 net on rate-coded input: identical spikes, matching weights."""
    torch.manual_seed(3)
    x = (torch.rand(10, 16, 784) < 0.13).float()
    labels = torch.randint(0, 10, (16,))
    nets = []
    for mode in ("always", "never"):
        torch.manual_seed(4)
        net = SpikingMLP(partial(LIF), sparse_input=mode, **SIZES)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        logits, trace = net(x, trace=True)
        nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        nets.append((net, trace))
    (a, trace_a), (b, trace_b) = nets
    assert torch.equal(trace_a.spikes[0], trace_b.spikes[0])
    for p_a, p_b in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p_a, p_b, rtol=1e-5, atol=1e-6)
