from functools import partial

import pytest
import torch
from torch import nn

from snn import kernels, sparse_input
from snn.architectures import SpikingMLP
from snn.neurons import LIF
from snn.sparse_input import SparseInputLinear
from tests.conftest import SIZES

requires_kernel = pytest.mark.skipif(
    not kernels.enabled or kernels.load() is None, reason="the C++ kernel is off (SNN_KERNELS=0) or could not be built"
)


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


@requires_kernel
@pytest.mark.parametrize("graded", [False, True])  # spikes (the products skipped) and direct encoding's pixels
def test_float32_sums_are_sequential_and_exact(graded):
    """The float32 kernel adds value * weight row in column order, bit for bit (what keeps it reproducible)."""
    torch.manual_seed(6)
    x = (torch.rand(40, 30) < 0.3).float() * (torch.rand(40, 30) if graded else 1)
    layer = SparseInputLinear(30, 48, mode="always")
    expected = layer.bias.detach().expand(40, 48).clone()
    for k in range(30):
        expected = expected + x[:, k : k + 1] * layer.weight.detach()[:, k]
    assert torch.equal(layer(x), expected)


@requires_kernel
@pytest.mark.parametrize("out_features", [48, 100, 1000])  # 32-column loads: whole, overlapping at the end, many
def test_bf16_sums_are_sequential_and_exact(out_features):
    """Under bf16 autocast the kernel adds the bf16 weight rows in column order in float32 and rounds once; the weight
    and bias gradients (one pass, the bias as a row of ones) are float32 sums over the samples in order, bit for bit."""
    torch.manual_seed(8)
    x = (torch.rand(40, 30) < 0.3).float()
    layer = SparseInputLinear(30, out_features, mode="always")
    out, grad = _autocast_forward_backward(layer, x)
    expected = layer.bias.detach().expand(40, out_features).clone()
    w = layer.weight.detach().bfloat16().float()
    for k in range(30):
        expected = expected + x[:, k : k + 1] * w[:, k]
    assert torch.equal(out, expected.bfloat16())
    grad_w, grad_b = torch.zeros_like(layer.weight), torch.zeros_like(layer.bias)
    for n in range(40):
        grad_w, grad_b = grad_w + grad[n].float()[:, None] * x[n], grad_b + grad[n].float()
    assert torch.equal(layer.weight.grad, grad_w) and torch.equal(layer.bias.grad, grad_b)


def _autocast_forward_backward(layer, x):
    with torch.autocast("cpu", torch.bfloat16):
        out = layer(x)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out.dtype)
    out.backward(grad)
    return out, grad


@requires_kernel
@pytest.mark.parametrize("out_features", [16, 100, 1000])
def test_bf16_autocast_product_against_float64(out_features, monkeypatch):
    """Under bf16 autocast: the event-driven path runs, its output is bf16 within bf16 rounding of the exact product,
    and its weight gradient is float32, summed in float32 (autocast's dense product would round it to bf16)."""
    calls = []
    apply = sparse_input._SparseInputProduct.apply
    monkeypatch.setattr(sparse_input._SparseInputProduct, "apply", lambda *a: calls.append(1) or apply(*a))
    torch.manual_seed(7)
    x = (torch.rand(500, 300) < 0.13).float()
    layer, _ = _layers(300, out_features)
    out, grad = _autocast_forward_backward(layer, x)
    assert calls == [1] and out.dtype == torch.bfloat16 and layer.weight.grad.dtype == torch.float32
    w64 = layer.weight.detach().bfloat16().double()  # the weights as the kernel reads them
    exact = x.double() @ w64.t() + layer.bias.detach().double()
    torch.testing.assert_close(out.double(), exact, rtol=2**-8, atol=1e-6)  # one bf16 rounding of the sum
    exact_grad_w, exact_grad_b = grad.double().t() @ x.double(), grad.double().sum(0)
    torch.testing.assert_close(layer.weight.grad.double(), exact_grad_w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad.double(), exact_grad_b, rtol=1e-5, atol=1e-4)


@requires_kernel
def test_bf16_hidden_spikes_and_their_gradient():
    """A second event-driven layer takes the first's bf16 spikes; its input gradient comes back in the input's type."""
    torch.manual_seed(8)
    x = ((torch.rand(64, 50) < 0.2).bfloat16()).requires_grad_(True)
    sparse, dense = _layers(50, 40)
    out_s, _ = _autocast_forward_backward(sparse, x)
    grad_x_s = x.grad.clone()
    x.grad = None
    out_d, _ = _autocast_forward_backward(dense, x)  # autocast's dense bf16 product, the path without the kernel
    assert x.grad.dtype == grad_x_s.dtype == torch.bfloat16
    torch.testing.assert_close(out_s, out_d, rtol=2**-7, atol=1e-2)
    torch.testing.assert_close(grad_x_s, x.grad, rtol=2**-7, atol=1e-2)
    torch.testing.assert_close(sparse.weight.grad, dense.weight.grad, rtol=2**-7, atol=1e-2)


@requires_kernel
def test_spiking_mlp_under_bf16_autocast_trains_like_float32():
    """One optimiser step of a two-hidden-layer net under bf16 autocast, event-driven: close to float32 training."""
    torch.manual_seed(9)
    x = (torch.rand(10, 16, 784) < 0.13).float()
    labels = torch.randint(0, 10, (16,))
    nets = []
    for precision in (torch.bfloat16, None):
        torch.manual_seed(4)
        net = SpikingMLP(partial(LIF), [100, 100], sparse_input="always", **SIZES)
        with torch.autocast("cpu", precision or torch.float32, enabled=precision is not None):
            loss = nn.functional.cross_entropy(net(x).float(), labels)
        loss.backward()
        nets.append((net, loss))
    (bf16, loss_bf16), (fp32, loss_fp32) = nets
    torch.testing.assert_close(loss_bf16, loss_fp32, rtol=0.05, atol=0.05)
    grad_bf16, grad_fp32 = bf16.stages[0][1].weight.grad, fp32.stages[0][1].weight.grad
    assert grad_bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(grad_bf16.flatten(), grad_fp32.flatten(), dim=0) > 0.9


@requires_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 3])
def test_csr_and_its_transpose_match_torchs(dtype, threads):
    """csrc/csr.cpp against torch's own CSR conversion: rows not a multiple of 16 entries (the vector loop's tail),
    -0.0 a zero, NaN a non-zero, empty rows, and the thread split (which must not change the transpose's order)."""
    x = torch.rand(23, 37, generator=torch.Generator().manual_seed(0))
    x = torch.where(x < 0.7, torch.zeros(()), x)
    x[3] = 0.0
    x[4, :5] = torch.tensor([-0.0, float("nan"), 1.0, -2.0, 0.0])
    x = x.to(dtype)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        row_start, column, value = kernels.load().to_csr(x)
        t_start, t_column, t_value = kernels.load().transpose_csr(row_start, column, value, 37, True)
    finally:
        torch.set_num_threads(previous)
    finite = torch.nan_to_num(x.float(), nan=5.0)  # torch's conversion treats NaN as a non-zero as well
    transposed = torch.cat([finite.t(), torch.ones(1, 23)])  # with the row of ones: the bias gradient's input
    csrs = (((row_start, column, value), finite), ((t_start, t_column, t_value), transposed))
    for (starts, columns, values), dense in csrs:
        reference = dense.to_sparse_csr()
        assert torch.equal(starts, reference.crow_indices())
        assert torch.equal(columns.long(), reference.col_indices())
        assert torch.equal(torch.nan_to_num(values, nan=5.0), reference.values())


@requires_kernel
@pytest.mark.parametrize("shape", [(784, 1000), (33, 17), (1, 5)])  # whole 16 x 16 tiles and the edges
@pytest.mark.parametrize("src_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_transpose_is_torchs(shape, src_dtype, out_dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(src_dtype)
    turned = kernels.load().transpose_to(x, out_dtype)
    assert turned.is_contiguous() and torch.equal(turned, x.t().to(out_dtype))
