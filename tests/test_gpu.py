"""The same runs on a CUDA device as on the CPU: training (MLP and conv SNN, float32 and bf16; the recurrent ALIF net
of experiment=smnist_rows), evaluate.py, the sparse-input and pooling layers, the recurrent layer, a 1-device
trainer=ddp run. Marked `gpu` (python -m pytest -m gpu, as
benchmarks/gpu_check.sh runs them) and skipped where torch sees no CUDA device.

The CPU runs use the C++ kernels, the CUDA runs the Triton ones (or the tensor code where Triton is missing):
deterministic inputs (direct encoding, no random shifts) and the same seeds, so both train the same weights up to
float rounding (cuDNN's convolutions take TF32 by default, bf16 ones other algorithms: looser for the conv SNN),
which a few steps cannot grow into more than a few predictions."""

import json
import os
import subprocess
import sys
from functools import partial

import pytest
import torch

from snn import kernels, recurrent
from snn.alif import ALIF
from snn.neurons import LIF, PLIF
from snn.pooling import MaxPool2d
from snn.recurrent import Recurrent
from snn.sparse_input import SparseInputLinear
from snn.synaptic import Synaptic
from tests.conftest import ROOT, TINY, train_tiny
from tests.test_evaluate import newest_output_dir

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
DETERMINISTIC = ("encoder=direct", "data.max_shift=0", "trainer.enable_progress_bar=false")
MLP = ("model=snn", "T=4", "model.hidden_sizes=[32]", "trainer.max_epochs=3", "optimizer.lr=5e-3")
CSNN = ("baseline=csnn", "model.channels=[4,8]", "model.hidden_size=32", "trainer.max_epochs=4", "optimizer.lr=5e-3")
ONE_PREDICTION = 1 / 32 + 1e-6  # the tiny test set has 32 images


def _on_both(tmp_path, mnist_root, *overrides):
    """results.json of the same run on the CPU and on the GPU."""
    return [
        train_tiny(tmp_path / device, mnist_root, *DETERMINISTIC, *overrides, f"trainer.accelerator={device}")
        for device in ("cpu", "gpu")
    ]


def _results(run):
    return json.loads((run / "results.json").read_text())


def _assert_same_run(cpu, gpu, loss_rtol, predictions=2):
    cpu, gpu = _results(cpu), _results(gpu)
    assert gpu["test/acc"] == pytest.approx(cpu["test/acc"], abs=predictions * ONE_PREDICTION)
    assert gpu["test/loss"] == pytest.approx(cpu["test/loss"], rel=loss_rtol)
    assert gpu["test/acc"] > 0.3  # it learned: 10 classes


NEURONS = {
    "lif-zero": lambda: LIF(0.9, 1.0, "zero"),
    "lif-subtract": lambda: LIF(0.9, 1.0, "subtract"),
    "plif": lambda: PLIF(0.8, 1.0, "subtract"),
    "alif-subtract": lambda: ALIF(0.9, 1.0, 1.8, 20.0, reset="subtract", shape=(300,)),
    "alif-learnable-zero": lambda: ALIF(0.9, 1.0, 1.8, 20.0, learnable=True, reset="zero", shape=(300,)),
    **{f"synaptic-{r}": lambda r=r: Synaptic(0.8, 0.9, 1.0, r) for r in ("subtract", "zero", "zero_leaky")},
}
LEARNED_DECAY = ("plif", "alif-learnable-zero")


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_the_neurons_run_in_triton_and_match_the_cpu_kernels(name):
    """On CUDA the default is Triton (where it imports); its spikes equal the C++ kernels', bit for bit (PLIF's and
    learnable ALIF's decays, sigmoids, may differ in their last bit between devices: a spike or so in 10^3 may flip)."""
    if kernels.triton() is not None:
        assert kernels.backend(torch.zeros(1, device="cuda")) == "triton"
    torch.manual_seed(0)
    neuron, current = NEURONS[name](), torch.randn(25, 16, 300) * 0.6 + 0.25
    if isinstance(neuron, Synaptic):
        current *= 1 - neuron.alpha  # the synaptic current sums about 1 / (1 - alpha) steps
    outputs = []
    for device in ("cpu", "cuda"):
        x = current.to(device).requires_grad_()
        spikes, membrane = neuron.to(device).run(x)
        grads = torch.autograd.grad(spikes.sum() + membrane.square().sum(), [x, *neuron.parameters()])
        outputs.append([t.cpu() for t in (spikes, membrane, *grads)])
    (s1, m1, *g1), (s2, m2, *g2) = outputs
    assert 0.01 < s1.mean() < 0.9
    if name in LEARNED_DECAY:
        assert (s1 != s2).float().mean() < 1e-3
    else:
        assert torch.equal(s1, s2)
        torch.testing.assert_close(m1, m2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


RECURRENT = {
    "lif-zero": partial(LIF, 0.9, 1.0, "zero"),
    "plif-subtract": partial(PLIF, 0.8, 1.0, "subtract"),
    "alif-learnable-subtract": partial(ALIF, 0.9, 1.0, 1.8, 20.0, learnable=True, reset="subtract"),
    "synaptic-zero": partial(Synaptic, 0.8, 0.9, 1.0, "zero"),
}


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_the_recurrent_layer_runs_in_triton_and_matches_the_cpu(name, monkeypatch):
    """Recurrent on CUDA takes snn.triton_recurrent (where Triton imports): the same spikes as its plain step loop on
    the same GPU (the same cuBLAS product for the feedback, the same operations after it), membranes and gradients
    to float tolerance. Against the CPU (the C++ loop or the step loop) the feedback is summed in another order: a
    spike at the threshold's edge may flip and its effect recur, so the runs are compared closely only where no spike
    flipped."""
    torch.manual_seed(0)
    layer, n = Recurrent(RECURRENT[name], shape=(128,)), 128
    current = torch.randn(20, 16, n) * 0.6 + 0.25
    if name.startswith("synaptic"):
        current *= 0.2  # the synaptic current sums about 1 / (1 - alpha) steps

    def outputs(device, backend=None):
        with monkeypatch.context() as patch:
            if backend is not None:
                patch.setattr(kernels, "backend", lambda tensor: backend)
            x = current.to(device).requires_grad_()
            spikes, membrane = layer.to(device).run(x)
            grads = torch.autograd.grad(spikes.sum() + membrane.square().sum(), [x, *layer.parameters()])
        return [t.detach().cpu() for t in (spikes, membrane, *grads)]

    if kernels.triton() is not None:
        assert kernels.backend(torch.zeros(1, device="cuda")) == "triton" and recurrent._in_triton(layer.neuron)
    fast, stepped, cpu = outputs("cuda"), outputs("cuda", "torch"), outputs("cpu")
    assert 0.01 < fast[0].mean() < 0.9
    assert torch.equal(fast[0], stepped[0])
    for a, b in zip(fast[1:], stepped[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max())))
    flipped = (fast[0] != cpu[0]).float().mean()
    assert flipped < 0.05
    if flipped == 0:
        for a, b in zip(fast[1:], cpu[1:]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max())))


def test_recurrent_alif_trains_on_cuda_as_on_cpu(tmp_path, mnist_root):
    """experiment=smnist_rows, tiny: recurrent learnable ALIF, row by row (T = 28); Triton on the GPU, the CPU's own
    loop on the CPU. One epoch: little room for a flipped spike to grow."""
    overrides = ("experiment=smnist_rows", "model.hidden_sizes=[32]", "trainer.max_epochs=1", *DETERMINISTIC[1:])
    cpu, gpu = [
        _results(train_tiny(tmp_path / device, mnist_root, *overrides, f"trainer.accelerator={device}"))
        for device in ("cpu", "gpu")
    ]
    assert gpu["test/acc"] == pytest.approx(cpu["test/acc"], abs=3 * ONE_PREDICTION)
    assert gpu["test/loss"] == pytest.approx(cpu["test/loss"], rel=5e-2)


def test_sparse_input_and_pooling_layers_on_cuda_match_the_cpu_kernels():
    """On CUDA the layers run torch's own code (the C++ kernels are CPU-only); same numbers as on the CPU."""
    torch.manual_seed(0)
    spikes = (torch.rand(64, 200) < 0.1).float()
    layer = SparseInputLinear(200, 32, mode="always")
    images = torch.randn(4, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    results = []
    for device in ("cpu", "cuda"):
        layer.to(device).zero_grad()
        x, y = spikes.to(device).requires_grad_(), images.to(device).requires_grad_()
        out, pooled = layer(x), MaxPool2d(2)(y)
        (out.square().sum() + pooled.square().sum()).backward()
        results.append([t.detach().cpu() for t in (out, pooled, x.grad, y.grad, layer.weight.grad)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_mlp_trains_on_cuda_as_on_cpu(tmp_path, mnist_root):
    _assert_same_run(*_on_both(tmp_path, mnist_root, *MLP), loss_rtol=2e-2)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_conv_snn_trains_on_cuda_as_on_cpu(tmp_path, mnist_root, precision):
    """The conv SNN (max-pooling, channels-last) in float32 and under bf16 autocast."""
    runs = _on_both(tmp_path, mnist_root, *CSNN, f"trainer.precision={precision}")
    _assert_same_run(*runs, loss_rtol=5e-2 if precision == "32-true" else 1e-1, predictions=3)


def test_evaluate_py_on_cuda_matches_cpu(tmp_path, mnist_root):
    """One CPU-trained checkpoint, evaluated by evaluate.py on the GPU and, with no device visible, on the CPU."""
    run = train_tiny(tmp_path / "run", mnist_root, *DETERMINISTIC, *MLP, "trainer.accelerator=cpu")
    checkpoint = run / "checkpoints" / "best.ckpt"
    metrics = []
    for visible in ("", os.environ.get("CUDA_VISIBLE_DEVICES", "0")):  # "": evaluate.py's Lightning picks the CPU
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(mnist_root), "CUDA_VISIBLE_DEVICES": visible}
        command = [sys.executable, str(ROOT / "evaluate.py"), f"ckpt={checkpoint}"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics.append(json.loads((newest_output_dir(checkpoint) / "metrics.json").read_text()))
    cpu, gpu = metrics
    assert gpu["test/loss"] == pytest.approx(cpu["test/loss"], rel=1e-3)
    assert gpu["test/acc"] == pytest.approx(cpu["test/acc"], abs=ONE_PREDICTION)
    moved = (torch.tensor(gpu["confusion_matrix"]) - torch.tensor(cpu["confusion_matrix"])).abs().sum()
    assert moved <= 2  # at most one prediction (a near tie) moved from one cell to another
    assert _results(run)["test/acc"] == pytest.approx(cpu["test/acc"], rel=1e-6)  # training's own test, same numbers


def test_one_device_ddp_on_cuda_as_on_cpu(tmp_path, mnist_root):
    """train.py trainer=ddp trainer.devices=1 (ddp_spawn, nccl on the GPU, gloo on the CPU): the same run."""
    runs = []
    for device in ("cpu", "gpu"):
        args = [f"data.root={mnist_root}", *TINY, *DETERMINISTIC, *MLP, "trainer=ddp", "trainer.devices=1"]
        args += [f"trainer.accelerator={device}", f"hydra.run.dir={tmp_path / device}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, str(ROOT / "train.py"), *args]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("test/acc=") == 1
        runs.append(tmp_path / device)
    _assert_same_run(*runs, loss_rtol=2e-2)
