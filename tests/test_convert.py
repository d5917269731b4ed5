"""ANN -> SNN conversion (snn/conversion.py, snn.convert) and the QCFS activation, on the tiny IDX data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from snn.architectures import CNN, MLP, SpikingCNN, SpikingMLP
from snn.checks import ConfigError
from snn.conversion import activation_scales, ann_stages, fold_batchnorm, load_converted
from snn.conversion_run import convert
from snn.convert import ann_name
from snn.data import load_mnist
from snn.evaluation import load_classifier
from snn.neurons import IF
from snn.nir_graph import NIRError, check_exportable
from snn.qcfs import QCFS
from snn.spike_stats import PJ_PER_AC, PJ_PER_MAC
from tests.conftest import CONF, ROOT, SIZES, train_tiny

MLP_RUN = ("baseline=ann", "model.hidden_sizes=[64]", "trainer.max_epochs=4", "trainer.enable_progress_bar=false")


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory, mnist_root):
    return train_tiny(tmp_path_factory.mktemp("ann"), mnist_root, *MLP_RUN)


@pytest.fixture(scope="module")
def qcfs_run(tmp_path_factory, mnist_root):
    return train_tiny(tmp_path_factory.mktemp("qcfs"), mnist_root, *MLP_RUN, "model.activation=qcfs")


def images(mnist_root) -> torch.Tensor:
    train, _ = load_mnist(mnist_root, True, download=False)
    test, _ = load_mnist(mnist_root, False, download=False)
    return torch.cat([train, test])


def spiking_twin(ann: nn.Module, T: int, calibration: torch.Tensor, percentile=99.9, initial=0.0) -> nn.Module:
    """The conversion, as snn.convert does it, for a net built here."""
    stages = ann_stages(ann)
    neuron = lambda shape: IF(initial=initial, shape=shape)
    if isinstance(ann, CNN):
        snn = SpikingCNN(neuron, channels=[4, 8], hidden_size=16, readout="integrator", pool="avg", **SIZES)
    else:
        snn = SpikingMLP(neuron, hidden_sizes=[ann.layers[1].out_features], readout="integrator", **SIZES)
    load_converted(snn, stages, activation_scales(ann, stages, calibration.split(32), percentile))
    return snn.eval()


@torch.no_grad()
def agreement_and_error(ann: nn.Module, x: torch.Tensor, T: int, **kwargs) -> tuple[float, float]:
    """How often the converted net predicts the ANN's class, and its logits' mean distance to the ANN's."""
    snn = spiking_twin(ann.eval(), T, x, **kwargs)
    expected, logits = ann(x), snn(x.unsqueeze(0).expand(T, *x.shape))
    agree = (logits.argmax(1) == expected.argmax(1)).float().mean().item()
    return agree, (logits - expected).abs().mean().item()


def trained_ann(run: Path) -> nn.Module:
    return load_classifier(run / "checkpoints" / "best.ckpt")[0].net


def test_qcfs_is_the_clip_floor_shift_formula_with_a_straight_through_gradient():
    q = QCFS(levels=4, clip=2.0)
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    expected = 2.0 * torch.clamp(torch.floor(x.detach() * 4 / 2.0 + 0.5) / 4, 0, 1)
    assert torch.equal(q(x), expected)
    q(x).sum().backward()
    inside = (x.detach() > 0) & (x.detach() < 2.0)  # a clipped ReLU's gradient, also on the lowest step
    assert torch.allclose(x.grad[inside], torch.ones(int(inside.sum())))
    assert torch.all(x.grad[~inside] == 0) and q.clip.grad is not None


def test_ann_configs_without_the_activation_key_still_build_relu():
    old = OmegaConf.load(CONF / "model" / "ann.yaml")
    del old["activation"], old["levels"]  # a run config from before the key
    net = MLP(**{k: v for k, v in old.items() if k != "_target_"}, **SIZES)
    assert any(isinstance(m, nn.ReLU) for m in net.modules()) and not any(isinstance(m, QCFS) for m in net.modules())


def test_batchnorm_folding_is_exact():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.1, 3), bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 8, 8)
    fused = fold_batchnorm(conv, bn.eval())
    assert torch.allclose(fused(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_if_initial_membrane_starts_the_membrane_at_that_fraction_of_the_threshold():
    current = torch.full((1, 2, 3), 0.26)  # the same current at every step
    for initial, count in ((0.0, 2), (0.5, 3)):  # 10 steps: floor(2.6) and floor(0.5 + 2.6) spikes (rounded)
        neuron = IF(initial=initial, shape=(3,))
        spikes, membrane = neuron.run(current, steps=10)
        assert torch.all(spikes.sum(0) == count)
        assert torch.allclose(membrane[0], torch.full((2, 3), initial + 0.26))
        state, stepped = None, []
        for _ in range(10):
            _, state = neuron.step(current[0], state)
            stepped.append(state)
        assert torch.allclose(torch.stack(stepped), membrane)  # the kernels and the step agree


def test_converted_mlp_agrees_with_its_ann_more_as_T_grows(ann_run, mnist_root):
    ann, x = trained_ann(ann_run), images(mnist_root)
    agree_8, error_8 = agreement_and_error(ann, x, 8)
    agree_128, error_128 = agreement_and_error(ann, x, 128)
    assert error_128 < error_8 / 2
    assert agree_128 >= max(agree_8, 0.97)


def test_converted_cnn_with_batchnorm_and_avg_pooling_approaches_its_ann():
    torch.manual_seed(0)
    ann = CNN(channels=[4, 8], hidden_size=16, pool="avg", **SIZES)
    with torch.no_grad():
        for bn in (m for m in ann.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2), bn.bias.uniform_(0, 0.5)
    x = torch.rand(64, 1, 28, 28)
    _, error_8 = agreement_and_error(ann, x, 8, percentile=100)
    agree, error_256 = agreement_and_error(ann, x, 256, percentile=100)
    assert error_256 < error_8 / 4 and agree >= 0.9


def test_a_qcfs_net_converts_at_few_steps_with_its_half_threshold_start(qcfs_run, mnist_root):
    ann, x = trained_ann(qcfs_run), images(mnist_root)
    labels = torch.arange(len(x)) % 10  # the tiny data's classes: the ANN must have learned something to agree on
    assert (ann.eval()(x).argmax(1) == labels).float().mean() > 0.5
    agree, error = agreement_and_error(ann, x, 8, initial=0.5)
    _, error_no_shift = agreement_and_error(ann, x, 8, initial=0.0)
    assert agree >= 0.95 and error < error_no_shift


def test_sweep_jobs_are_named_by_the_ann_they_convert():
    assert ann_name("outputs/multirun/ann/seed=0/checkpoints/best.ckpt") == "ann_seed=0_best"
    assert ann_name("/abs/outputs/2026-12-01_10-00-00_baseline=cnn/checkpoints/last.ckpt").endswith("cnn_last")


def test_layers_conversion_cannot_map_are_refused_in_one_line():
    net = MLP(hidden_sizes=[8], **SIZES)
    net.layers[2] = nn.Tanh()
    with pytest.raises(ConfigError, match=r"layer 2 \(Tanh\) cannot be converted") as error:
        ann_stages(net)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="train the cnn with model.pool=avg"):
        ann_stages(CNN(channels=[4], hidden_size=8, pool="max", **SIZES))


def convert_cfg(ckpt, mnist_root, values=None):
    cfg = OmegaConf.load(CONF / "convert.yaml")
    del cfg["hydra"], cfg["defaults"]
    given = {"ckpt": str(ckpt), "data": {"root": str(mnist_root), "batch_size": 16}}
    return OmegaConf.merge(cfg, given, values or {})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"T": 0}, "T=0 is not allowed: an integer >= 1"),
        ({"percentile": 0}, r"percentile=0 is not allowed: a number in \(0, 100\]"),
        ({"percentile": 100.5}, r"percentile=100.5 is not allowed"),
        ({"normalisation": "mean"}, "normalisation='mean' is not allowed: percentile, max"),
        ({"neuron_model": "lif"}, "neuron_model='lif' is not allowed: if, signed_if"),
        ({"ckpt": "nowhere.ckpt"}, "nowhere.ckpt: no such checkpoint file"),
    ],
)
def test_bad_values_are_refused_in_one_line(ann_run, mnist_root, tmp_path, values, message):
    with pytest.raises(ValueError, match=message) as error:
        convert(convert_cfg(ann_run / "checkpoints" / "best.ckpt", mnist_root, values), tmp_path)
    assert "\n" not in str(error.value)


def test_a_spiking_checkpoint_is_refused(tmp_path, mnist_root):
    run = train_tiny(tmp_path / "snn", mnist_root, "T=2", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match=r"is a spiking network \(model=snn\): conversion takes an ann or cnn"):
        convert(convert_cfg(run / "checkpoints" / "best.ckpt", mnist_root), tmp_path / "out")


def run_module(*args, cwd, data_root, script=("-m", "snn.convert")):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(data_root)}
    command = [sys.executable, *script, *args]
    return subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_T_sweep_makes_run_folders_that_evaluate_and_report_as_spiking_runs(ann_run, mnist_root, tmp_path):
    ckpt = ann_run / "checkpoints" / "best.ckpt"
    sweep = tmp_path / "sweep"
    done = run_module("-m", f"ckpt={ckpt}", "T=2,4", "data.batch_size=16", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path, data_root=mnist_root)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p.parent for p in sweep.rglob("results.json"))
    ann = f"{ann_run.parent.name}_{ann_run.name}_best"  # <sweep>/<ANN>/<T>: several ANNs in one sweep keep theirs
    assert [str(p.relative_to(sweep)) for p in runs] == [f"{ann}/T={t},data.batch_size=16" for t in (2, 4)]
    result = json.loads((runs[1] / "results.json").read_text())
    assert result["T"] == 4 and result["conversion.activation"] == "relu" and "conversion.checkpoint" not in result
    assert result["seed"] == 42 and result["model"] == "snn" and result["neuron.reset"] == "subtract"
    # SynOps as for any spiking net: every hidden spike reaches the 10 outputs; the analog first layer is MACs
    assert result["test/synops"] == pytest.approx(10 * result["test/spikes_per_sample"])
    assert result["test/macs"] == 28 * 28 * 64
    energy = (PJ_PER_AC * result["test/synops"] + PJ_PER_MAC * result["test/macs"]) / 1000
    assert result["test/energy_nJ"] == pytest.approx(energy)
    checkpoint = runs[1] / "checkpoints" / "best.ckpt"
    evaluated = run_module(f"ckpt={checkpoint}", "data.batch_size=16", cwd=tmp_path, data_root=mnist_root,
                           script=(str(ROOT / "evaluate.py"),))  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads(next((runs[1] / "eval").rglob("metrics.json")).read_text())
    assert metrics["test/acc"] == pytest.approx(result["test/acc"]) and metrics["T"] == 4
    assert metrics["test/synops"] == pytest.approx(result["test/synops"])
    assert (sweep / "hparams").is_dir()  # TensorBoard's HParams columns for the sweep, as train.py's sweeps have
    again = run_module("-m", f"ckpt={ckpt}", "T=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path, data_root=mnist_root)
    assert again.returncode != 0 and f"{sweep} already holds a sweep" in again.stderr  # nothing is overwritten
    with pytest.raises(NIRError, match="train with neuron.reset=zero model.readout=membrane to export"):
        check_exportable(load_classifier(checkpoint)[0].net)  # snn.export refuses it in one line

    from snn.report import main as report
    from snn.run_groups import group_runs, load_results

    for name, folder in (("ann", ann_run), ("sweep", sweep)):
        shutil.copytree(folder, tmp_path / "all" / name, ignore=shutil.ignore_patterns("*.ckpt"))
    configurations = group_runs(load_results(tmp_path / "all")[0])
    assert len(configurations) == 3  # the ANN, and the converted net at T=2 and T=4 (apart from directly trained)
    assert [c.key.get("conversion.converted_from") for c in configurations] == [None, "ann", "ann"]
    assert report([str(tmp_path / "all")]) == 0 and (tmp_path / "all" / "accuracy_vs_T.png").is_file()


@pytest.mark.slow
def test_bad_input_ends_with_one_line_and_leaves_no_run_folder(ann_run, mnist_root, tmp_path):
    done = run_module("ckpt=missing.ckpt", cwd=tmp_path, data_root=mnist_root)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["error: missing.ckpt: no such checkpoint file"]
    done = run_module(f"ckpt={ann_run / 'checkpoints' / 'best.ckpt'}", "T=0", cwd=tmp_path, data_root=mnist_root)
    assert done.stderr.strip().splitlines() == ["error: T=0 is not allowed: an integer >= 1"]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


@pytest.mark.slow
def test_the_signed_neuron_is_chosen_on_the_command_line(qcfs_run, mnist_root, tmp_path):
    ckpt = qcfs_run / "checkpoints" / "best.ckpt"
    run = tmp_path / "signed"
    done = run_module(f"ckpt={ckpt}", "T=8", "neuron_model=signed_if", "data.batch_size=16", f"hydra.run.dir={run}",
                      cwd=tmp_path, data_root=mnist_root)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["neuron"] == "signed_if" and results["config"]["neuron"]["_target_"] == "snn.signed_if.SignedIF"
    ann = json.loads((qcfs_run / "results.json").read_text())
    assert results["test/acc"] == ann["test/acc"]  # exact at T = L = 8


def test_the_accuracy_plot_names_converted_lines_by_what_they_converted():
    from snn.report_plots import line_name

    converted = {"baseline": None, "model": "snn", "conversion.converted_from": "cnn", "conversion.activation": "qcfs"}
    assert line_name(converted, ["baseline"]) == "converted cnn (qcfs)"
    assert line_name({**converted, "neuron.initial": 0.0}, ["baseline", "neuron.initial"]).endswith(
        "neuron.initial=0.0"
    )
    assert line_name({"baseline": "csnn"}, ["baseline"]) == "baseline=csnn"  # directly trained: as before
    # a key a line lacks says nothing of it: a converted net has no model.activation, an ANN no neuron
    names = ["baseline", "model.activation", "neuron"]
    assert line_name({**converted, "neuron": "signed_if"}, names) == "converted cnn (qcfs), neuron=signed_if"
    assert line_name({"baseline": "cnn", "model.activation": "qcfs"}, names) == "baseline=cnn,model.activation=qcfs"
