"""The dataset is a config group (conf/data/): what each yields, that a run records it and is evaluated on it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from snn.data import DataError, FashionMNISTDataModule, MNISTDataModule, load_mnist
from snn.run_groups import load_results
from tests.conftest import ROOT, TINY, make_tiny_mnist, train_tiny

# Recorded by running this same tiny training on the code from before conf/data/ existed (commit 94a4185, the MNIST
# data block inline in config.yaml): the data group must not change a single number of an MNIST run. The snn loss
# was recorded again when the rate encoder's random numbers came to be drawn by a counter-based generator (session
# 10, 0.18420255184173584 before): a new random stream, with the data group untouched.
PINNED = {
    "snn": (["model=snn", "T=4", "model.hidden_sizes=[64]"], 1.0, 0.18670184910297394),
    "cnn": (["model=cnn", "model.channels=[4,8]", "model.hidden_size=16"], 0.6875, 2.0621743202209473),
}


@pytest.mark.parametrize("model", PINNED)
def test_mnist_run_gives_the_numbers_it_gave_before_the_data_group(tmp_path, mnist_root, model):
    overrides, acc, loss = PINNED[model]
    common = ["trainer.max_epochs=3", "optimizer.lr=5e-3", "seed=3", "trainer.enable_progress_bar=false"]
    run = train_tiny(tmp_path / "run", mnist_root, "data=mnist", *overrides, *common)
    results = json.loads((run / "results.json").read_text())
    assert results["data"] == "mnist"
    assert results["test/acc"] == acc
    # Same seed, same code path: the loss is the same float (a CPU with other kernels may differ in the last bits).
    assert results["test/loss"] == pytest.approx(loss, rel=1e-6)


def test_each_dataset_says_what_it_yields_without_reading_files(compose_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_cfg("data=fashion_mnist", "data.batch_size=7", f"data.root={tmp_path / 'nothing'}")
    data = instantiate(cfg.data)
    assert type(data) is FashionMNISTDataModule and data.batch_size == 7 and data.val_size == 16  # MNIST's keys
    assert (data.input_shape, data.num_classes) == (MNISTDataModule.input_shape, 10)
    assert data.class_names[0] == "T-shirt/top" and MNISTDataModule.class_names == tuple("0123456789")


def test_missing_dataset_names_the_files_it_expected(tmp_path):
    make_tiny_mnist(tmp_path)  # MNIST only: FashionMNIST must not fall back to it
    raw = tmp_path / "FashionMNIST" / "raw"
    with pytest.raises(DataError) as error:
        load_mnist(tmp_path, train=False, download=False, source=FashionMNISTDataModule.source)
    message = str(error.value)
    assert message.startswith(f"FashionMNIST is not in {raw} and data.download is false: expected ")
    assert str(raw / "t10k-images-idx3-ubyte") in message and str(raw / "t10k-labels-idx1-ubyte") in message
    assert "\n" not in message


def test_results_written_before_the_data_group_count_as_mnist(tmp_path, compose_cfg):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({"model": "snn", "seed": 0, "test/acc": 0.9}))
    runs, problems = load_results(tmp_path)
    assert not problems and runs[0]["data"] == "mnist"


def _run(script, *args, cwd, data_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(data_root)}
    command = [sys.executable, *(["-m"] if script == "-m" else [str(ROOT / script)]), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_fashion_mnist_trains_records_and_is_evaluated_on_fashion_mnist(tmp_path):
    fashion = make_tiny_mnist(tmp_path / "fashion", folder="FashionMNIST")  # no MNIST/ beside it
    run = tmp_path / "run"
    overrides = ["data=fashion_mnist", *TINY, "T=2", "model.hidden_sizes=[16]", "trainer.max_epochs=1"]
    overrides += ["neuron.reset=zero", "data.download=false", f"hydra.run.dir={run}"]  # reset=zero: NIR-exportable
    trained = _run("train.py", *overrides, cwd=tmp_path, data_root=fashion)
    assert trained.returncode == 0, trained.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["data"] == "fashion_mnist" and results["test/acc"] is not None
    content = EventAccumulator(str(run)).Reload().PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["data"].string_value == "fashion_mnist"

    checkpoint = run / "checkpoints" / "best.ckpt"
    evaluated = _run("evaluate.py", f"ckpt={checkpoint}", "repeats=1", cwd=tmp_path, data_root=fashion)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (out,) = (run / "eval").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "fashion_mnist" and list(metrics["per_class_acc"])[0] == "T-shirt/top"
    assert torch.tensor(metrics["confusion_matrix"]).sum() == 32  # the tiny FashionMNIST test set

    # Its NIR graph records the dataset, and is tested on it too.
    exported = _run("-m", "snn.export", f"ckpt={checkpoint}", cwd=ROOT, data_root=fashion)
    assert exported.returncode == 0, exported.stderr[-2000:]
    graph, before = run / "export" / "best.nir", set((run / "eval").iterdir())
    evaluated = _run("evaluate.py", f"ckpt={graph}", "repeats=1", cwd=tmp_path, data_root=fashion)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (out,) = set((run / "eval").iterdir()) - before
    nir_metrics = json.loads((out / "metrics.json").read_text())
    assert nir_metrics["data"] == "fashion_mnist" and nir_metrics["test/acc"] == metrics["test/acc"]

    mnist_only = make_tiny_mnist(tmp_path / "mnist")
    refused = _run(
        "evaluate.py", f"ckpt={checkpoint}", "data.download=false", cwd=tmp_path, data_root=mnist_only
    )  # never tested on MNIST instead
    raw = mnist_only / "FashionMNIST" / "raw"
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: FashionMNIST is not in {raw} and data.download is false: expected ")
    assert str(raw / "t10k-images-idx3-ubyte") in last


def test_checkpoint_of_a_run_before_the_data_group_still_evaluates(tmp_path, mnist_root):
    """Older checkpoints name snn.data.MNISTDataModule in their run config and have no data choice."""
    from snn.evaluation import evaluate_test_set, load_model

    run = train_tiny(tmp_path / "run", mnist_root, "model=ann", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    path = run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["run_config"]["choices"]["data"]
    assert checkpoint["run_config"]["config"]["data"]["_target_"] == "snn.data.MNISTDataModule"
    torch.save(checkpoint, path)
    module, info = load_model(path, None, None)
    assert info["data"] == "mnist" and module.dataset is MNISTDataModule
    tested = evaluate_test_set(module, str(mnist_root), 16, tmp_path, repeats=1, seed=0, download=False)
    assert len(tested["confusion_matrix"]) == 10 and 0 <= tested["test/acc"] <= 1


def test_a_data_target_that_is_no_data_module_is_refused_in_one_line(compose_cfg):
    from snn.checks import ConfigError
    from snn.config import validate

    with pytest.raises(ConfigError, match=r"^data._target_='os.system' is not allowed: a data module class that"):
        validate(compose_cfg("data._target_=os.system"))
