"""Checkpoints are data: a pickle that runs code, or a run config that builds something other than the
project's own classes, is refused with one line by evaluate.py and train.py, and nothing it carries runs."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from snn.checkpoints import CheckpointError, project_targets, read_checkpoint
from snn.training import train
from tests.conftest import ROOT, train_tiny


class _TouchOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling calls Path.touch(marker): the file appears if the pickle was trusted
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture(scope="module")
def genuine(tmp_path_factory, mnist_root):
    run = train_tiny(
        tmp_path_factory.mktemp("run"), mnist_root, "T=2", "model.hidden_sizes=[16]", "trainer.max_epochs=1"
    )
    return run / "checkpoints" / "last.ckpt"


def hostile_checkpoints(genuine, folder):
    """(pickle that runs code, config whose model is shutil.copyfile), and the files they would create."""
    marker, copied = folder / "pwned", folder / "copied"
    pickled = folder / "pickled.ckpt"
    torch.save({**torch.load(genuine, weights_only=True), "extra": _TouchOnLoad(marker)}, pickled)
    stored = torch.load(genuine, weights_only=True)
    stored["run_config"]["config"]["model"] = {"_target_": "shutil.copyfile", "src": str(genuine), "dst": str(copied)}
    targeted = folder / "targeted.ckpt"
    torch.save(stored, targeted)
    return {"pickled": (pickled, marker), "targeted": (targeted, copied)}


def test_a_checkpoint_written_by_the_current_code_reads(genuine):
    checkpoint = read_checkpoint(genuine)
    assert checkpoint["run_config"]["choices"]["model"] == "snn" and "state_dict" in checkpoint
    assert {"snn.architectures.SpikingMLP", "snn.neurons.LIF", "snn.encoders.RateEncoder"} <= project_targets()


@pytest.mark.parametrize("kind", ["pickled", "targeted"])
def test_hostile_checkpoints_are_refused_and_nothing_runs(genuine, tmp_path, kind, mnist_root):
    path, trace = hostile_checkpoints(genuine, tmp_path)[kind]
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(mnist_root)}
    for script, arg in (("evaluate.py", f"ckpt={path}"), ("train.py", f"ckpt_path={path}")):
        result = subprocess.run(
            [sys.executable, str(ROOT / script), arg],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode != 0, script
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "refused" in last and str(path) in last, last
        assert "Traceback" not in result.stderr
        assert not trace.exists(), f"{script} ran what the checkpoint carried"


def test_a_resumed_run_keeps_its_best_validation_accuracy(genuine, tmp_path):
    """val/acc_best is stored in the checkpoint and goes on from there after ckpt_path=..., not from scratch."""
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stored = torch.load(genuine, weights_only=True)
    (callback,) = [c for c in stored["callbacks"].values() if c["monitor"] == "val/acc"]
    assert float(stored["state_dict"]["best_val_acc.max_value"]) == pytest.approx(float(callback["best_model_score"]))
    stored["state_dict"]["best_val_acc.max_value"] = torch.tensor(1.0)  # as if an earlier epoch had been perfect
    stored["run_config"]["config"]["trainer"]["max_epochs"] = 2  # one more epoch to run
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(stored, run / "checkpoints" / "last.ckpt")
    cfg = OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "last.ckpt")})
    train(cfg, run, {})
    logged = [e.value for e in EventAccumulator(str(run)).Reload().Scalars("val/acc_best")]
    assert logged == [1.0]  # the resumed epoch's own accuracy did not replace the stored best
