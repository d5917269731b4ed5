import json
import os
import signal
import subprocess
import sys
import time
from unittest.mock import ANY

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from snn.report import main as report
from snn.unfinished_runs import NO_END
from tests.conftest import ROOT, TINY
from tests.test_report import table_rows

EPOCHS = 12


def stored_epoch(checkpoint) -> int:
    """The epoch stored in a checkpoint (weights_only: plain data only), -1 while there is none to read yet."""
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError):  # not written yet, or caught mid-copy
        return -1


@pytest.mark.slow
def test_sigkilled_run_resumes_in_its_own_folder(tmp_path, mnist_root):
    run = tmp_path / "outputs" / "killed_run"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "T=2",
        f"trainer.max_epochs={EPOCHS}",
        "model.hidden_sizes=[512]",
        f"data.root={mnist_root}",
        *TINY,
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    while stored_epoch(last) < 1:  # killed once epochs 0 and 1 are saved: in the middle of the run
        assert first.poll() is None, "training exited before it saved epoch 1"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (run / "results.json").exists(), "the run finished before it could be killed"
    killed_at = stored_epoch(last)  # it may have saved another epoch before the signal landed
    assert report([str(tmp_path / "outputs"), "--out", str(tmp_path / "report")]) == 0  # listed, with how to resume
    assert table_rows(tmp_path / "report" / "results.md") == [
        ["killed_run", ANY, ANY, ANY, ANY, NO_END, f"`python train.py ckpt_path={last}`"]
    ]
    config_before = (run / ".hydra" / "config.yaml").read_text()
    events_before = set(run.glob("events.out.tfevents.*"))

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"ckpt_path={last}", "trainer.enable_progress_bar=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run={os.path.relpath(run, tmp_path)}" in resumed.stdout  # the same folder, not a new one
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == [run.name]
    assert (run / ".hydra" / "config.yaml").read_text() == config_before  # nothing overwritten
    results = json.loads((run / "results.json").read_text())
    assert (results["epochs"], results["T"]) == (EPOCHS, 2)
    assert results["test/acc"] > 0.5  # the 10 bar-shaped classes are learnt (chance: 0.1)
    validated = 0  # val/acc points logged by the resumed process, one per epoch it trained
    for file in set(run.glob("events.out.tfevents.*")) - events_before:
        events = EventAccumulator(str(file)).Reload()
        validated += len(events.Scalars("val/acc")) if "val/acc" in events.Tags()["scalars"] else 0
    assert validated == EPOCHS - 1 - killed_at  # only the epochs after the saved one were trained again
    steps = {e.step for e in EventAccumulator(str(run)).Reload().Scalars("val/acc")}
    assert len(steps) == EPOCHS  # the TensorBoard run goes on where it stopped: one validation per epoch, to the last
