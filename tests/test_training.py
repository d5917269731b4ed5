import json
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from snn.evaluation import load_classifier
from snn.training import train
from tests.conftest import EXPLODING_SMNIST, ROOT, TINY


def _train_composed(compose_cfg, run_dir, *overrides):
    cfg = compose_cfg(*overrides, hydra=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg.hydra
    return train(cfg, run_dir, choices)


@pytest.mark.parametrize("model", ["snn", "ann", "csnn", "cnn"])
def test_fast_dev_run(compose_cfg, tmp_path, model):
    results = _train_composed(compose_cfg, tmp_path, f"model={model}", "T=4", "trainer.fast_dev_run=true")
    spiking = model.endswith("snn")
    rates = {f"test/firing_rate/layer{i}" for i in range(1, {"snn": 2, "csnn": 5}.get(model, 0) + 1)}
    per_sample = {"test/spikes_per_sample"} if spiking else set()
    tested = {"test/acc", "test/loss", "test/synops", "test/macs", "test/energy_nJ", *rates, *per_sample}
    assert {key for key in results if key.startswith("test/")} == tested
    # fast_dev_run saves no checkpoint: the final weights are tested and there is no best score
    assert (results["epochs"], results["best_checkpoint"], results["val/acc_best"]) == (1, None, None)
    assert results["model"] == model
    assert results.get("T") == (4 if spiking else None)  # a non-spiking run has no T, neuron or encoder
    assert results.get("encoder") == ("rate" if spiking else None)
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_short_training_learns_and_logs_everything(compose_cfg, tmp_path):
    results = _train_composed(
        compose_cfg,
        tmp_path,
        "T=4",
        "model.hidden_sizes=[64]",
        "trainer.max_epochs=6",
        "optimizer.lr=5e-3",
        "encoder=direct",
    )
    assert results["test/acc"] > 0.5  # 10 bar-shaped classes: far above chance (0.1)
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (5, 6 * 5)  # the final epoch, improved val/acc or not (5 batches)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()  # 0: keep every image
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= scalars
    assert len(events.Scalars("val/acc")) == 6  # one point per epoch
    assert results["val/acc_best"] == pytest.approx(max(e.value for e in events.Scalars("val/acc")))
    stats = {"firing_rate/layer1", "firing_rate/layer2", "spikes_per_sample", "synops", "macs", "energy_nJ"}
    assert {f"{stage}/{name}" for stage in ("val", "test") for name in stats} <= scalars
    assert results["test/macs"] > 0 and results["test/synops"] > 0  # direct input: one dense layer, then spikes
    assert len(events.Images("val/activity")) == 6  # the raster + membrane figure, every epoch
    assert "val/neuron_firing_rate/layer1" in events.Tags()["histograms"]
    # The epoch's metrics are over that epoch's batches only (not the sanity check's, not earlier epochs'): the last
    # validation, recomputed here from the last weights with a plain loop, per sample.
    assert [len(events.Scalars(f"train/{name}")) for name in ("loss", "acc")] == [6, 6]
    module, cfg = load_classifier(tmp_path / "checkpoints" / "last.ckpt")
    data = instantiate(cfg.data)
    data.setup("fit")
    images, labels = data.splits["val"]
    with torch.no_grad():
        logits = module.eval()(images)  # direct input: deterministic
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    expected_acc = (logits.argmax(1) == labels).float().mean().item()
    assert events.Scalars("val/loss")[-1].value == pytest.approx(expected_loss, rel=1e-5)
    assert events.Scalars("val/acc")[-1].value == pytest.approx(expected_acc)


def test_a_run_folder_holds_only_what_the_readme_lists(compose_cfg, tmp_path):
    _train_composed(compose_cfg, tmp_path, "T=2", "trainer.max_epochs=1")
    names = {"events.out.tfevents.*" if p.name.startswith("events.out") else p.name for p in tmp_path.iterdir()}
    # No hparams.yaml: Lightning's TensorBoardLogger wrote one, empty, after every epoch. (.hydra/ and train.log come
    # from Hydra, which this in-process run leaves out.)
    assert names == {"checkpoints", "events.out.tfevents.*", "results.json", "environment.json"}


def test_averaged_weights_are_validated_checkpointed_and_tested(compose_cfg, tmp_path, caplog):
    """optimizer.ema_decay: best.ckpt holds the averaged weights validation chose, and the test scores those (the
    weight-averaging callback would load the raw ones back when the test restores the checkpoint)."""
    results = _train_composed(
        compose_cfg,
        tmp_path,
        "model=ann",  # any model; this one gives distinct losses after a few steps
        "model.hidden_sizes=[32]",
        "trainer.max_epochs=2",
        "optimizer.ema_decay=0.5",
        "loss.label_smoothing=0.1",
    )
    assert (results["optimizer.ema_decay"], results["loss.label_smoothing"]) == (0.5, 0.1)
    assert "random initial" not in caplog.text  # 0.5 over 10 steps keeps 0.1 % of them
    best = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    averaged, raw = best["state_dict"], best["current_model_state"]
    assert any(not torch.equal(averaged[name], raw[name]) for name in raw if name.startswith("net."))
    module, cfg = load_classifier(results["best_checkpoint"])
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    tested = trainer.test(module, datamodule=instantiate(cfg.data), verbose=False)[0]
    assert tested["test/loss"] == pytest.approx(results["test/loss"], rel=1e-6)
    module.load_state_dict(raw)
    assert trainer.test(module, datamodule=instantiate(cfg.data), verbose=False)[0]["test/loss"] != pytest.approx(
        results["test/loss"], rel=1e-6
    )


def test_short_averaged_run_warns_that_it_keeps_the_initial_weights(compose_cfg, tmp_path, caplog):
    _train_composed(compose_cfg, tmp_path, "model=ann", "optimizer.ema_decay=0.999", "trainer.fast_dev_run=true")
    assert "optimizer.ema_decay=0.999 over 1 training steps" in caplog.text
    assert "keep 100% of the random initial ones at the end; use more steps (>= 4603)" in caplog.text


def test_averaged_run_resumes_its_average(compose_cfg, tmp_path):
    """A resumed run goes on averaging from the stored average, not from the weights it resumes with."""
    first = _train_composed(compose_cfg, tmp_path, "model=ann", "trainer.max_epochs=2", "optimizer.ema_decay=0.5")
    last = tmp_path / "checkpoints" / "last.ckpt"
    stored = torch.load(last, map_location="cpu", weights_only=True)
    assert stored["averaging_state"]["n_averaged"] == 2 * 5  # one update per step, 5 batches per epoch
    stored["run_config"]["config"]["trainer"]["max_epochs"] = 3  # as if killed after its second epoch of 3
    torch.save(stored, last)
    resumed = _train_composed(compose_cfg, tmp_path, f"ckpt_path={last}")
    assert (resumed["epochs"], resumed["optimizer.ema_decay"]) == (3, 0.5)
    ended = torch.load(last, map_location="cpu", weights_only=True)
    assert ended["averaging_state"]["n_averaged"] == 3 * 5  # restarted, the average would hold 5 updates
    assert first["run_dir"] == resumed["run_dir"]


def test_hparams_tab_lists_choices_and_metrics(compose_cfg, tmp_path):
    _train_composed(compose_cfg, tmp_path, "T=2", "neuron=plif", "model.hidden_sizes=[16]", "trainer.max_epochs=1")
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(tmp_path)).Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["neuron"].string_value == "plif"
    assert session.hparams["T"].number_value == 2
    # no experiment of its own: TensorBoard would take a run's for all runs (see snn/hparams_view.py)
    assert "_hparams_/experiment" not in content
    assert "val/acc" in events.Tags()["scalars"] and "epoch" not in events.Tags()["scalars"]  # a counter, no result


@pytest.mark.slow
def test_multirun_leaves_one_folder_per_job(tmp_path, mnist_root):
    args = [
        "-m",
        "T=1,2",
        "model.hidden_sizes=[32]",
        "trainer.max_epochs=1",
        f"data.root={mnist_root}",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folders = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in folders] == [
        *(f"T={t},data.batch_size=16,data.val_size=16,model.hidden_sizes=[32],trainer.max_epochs=1" for t in (1, 2)),
        "hparams",  # the sweep's TensorBoard HParams columns
    ]
    runs = folders[:2]
    for t, run in zip((1, 2), runs):
        assert list(run.glob("events.out.tfevents.*"))
        assert (run / ".hydra" / "config.yaml").exists()
        assert json.loads((run / "results.json").read_text())["T"] == t
    assert result.stdout.count("test/acc=") == 2


def test_same_seed_same_metrics_and_environment_recorded(compose_cfg, tmp_path):
    overrides = ("T=3", "model.hidden_sizes=[32]", "trainer.max_epochs=2")
    first = _train_composed(compose_cfg, tmp_path / "a", *overrides)
    second = _train_composed(compose_cfg, tmp_path / "b", *overrides)
    for key in ("test/acc", "test/loss", "val/acc_best", "test/synops"):
        assert first[key] == second[key]
    env = json.loads((tmp_path / "a" / "environment.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert (env["seed"], env["versions"]["torch"]) == (42, torch.__version__)
    assert (env["git_commit"] or "").removesuffix("-dirty") == commit  # none outside a git checkout


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_line(tmp_path, mnist_root):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "model=ann",
            "optimizer.lr=1e30",
            "trainer.max_epochs=3",
            f"data.root={mnist_root}",
            *TINY,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: train/loss became nan at epoch") or last.startswith(
        "error: train/loss became inf at epoch"
    )


def test_training_steps_torchs_fused_optimizer(compose_cfg, tmp_path, monkeypatch):
    """Adam runs as torch's fused kernel (one pass per parameter; 2.5x faster than its per-op loop on CPU)."""
    from snn.classifier import Classifier

    built = []
    configure = Classifier.configure_optimizers
    monkeypatch.setattr(Classifier, "configure_optimizers", lambda self: built.append(configure(self)) or built[-1])
    _train_composed(compose_cfg, tmp_path, "T=4", "trainer.fast_dev_run=true")
    optimizer = built[0]["optimizer"] if isinstance(built[0], dict) else built[0]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["fused"] is True


def test_exploding_gradients_are_logged_and_named_once(compose_cfg, tmp_path, caplog):
    """experiment=smnist's first net (T = 784, recurrent learnable ALIF on the neuron's own scale) at the atan
    surrogate's default slope: backpropagation through 784 steps explodes, which the run says once with what to change;
    train/grad_norm_max is each epoch's largest norm before clipping (the same as clipped: clipping acts after). At
    slope 0.5 the norms stay small: no warning."""
    small = (*EXPLODING_SMNIST, "optimizer.lr=2e-3", "model.hidden_sizes=[64]", "trainer.max_epochs=2",
             "+trainer.gradient_clip_val=1")  # fmt: skip
    _train_composed(compose_cfg, tmp_path / "default", *small)
    assert caplog.text.count("gradients exploded in epoch 1: their total norm reached ") == 1
    assert "lower neuron.slope, clip with +trainer.gradient_clip_val=1, or in a recurrent net" in caplog.text
    peaks = [e.value for e in EventAccumulator(str(tmp_path / "default")).Reload().Scalars("train/grad_norm_max")]
    assert len(peaks) == 2 and min(peaks) > 1e4
    caplog.clear()
    _train_composed(compose_cfg, tmp_path / "gentle", *small, "neuron.slope=0.5")
    assert "gradients exploded" not in caplog.text
    peaks = [e.value for e in EventAccumulator(str(tmp_path / "gentle")).Reload().Scalars("train/grad_norm_max")]
    assert len(peaks) == 2 and 0 < max(peaks) < 1e4


def test_non_finite_gradients_stop_the_run_before_the_step(compose_cfg):
    """An inf gradient would make Adam's step write NaN weights; a NaN membrane never crosses the threshold, so the
    net would go silent with a finite loss and train on at chance. The run stops instead, as for a NaN loss."""
    from snn.build import build_classifier

    module = build_classifier(compose_cfg("model=ann", "model.hidden_sizes=[8]"), {})
    weight = next(module.parameters())
    weight.grad = torch.zeros_like(weight)
    weight.grad[0, 0] = float("inf")
    stopped = r"^the gradients became inf at epoch 0, step 0; stopped \(checkpoints/ keeps the last good epoch\)"
    with pytest.raises(FloatingPointError, match=stopped):
        module.on_before_optimizer_step(None)
