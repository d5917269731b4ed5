"""A run is never lost or overwritten: SIGTERM or Ctrl-C, a reused folder, a full disk, values that cannot train."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from snn.checks import ConfigError
from snn.config import validate
from tests.conftest import ROOT, TINY
from tests.test_resume import stored_epoch

QUIET = ["trainer.enable_progress_bar=false"]


def _train(*args, cwd, prelude: str = ""):
    """train.py in a subprocess; `prelude` runs first in that process (to simulate a full disk)."""
    command = [sys.executable, str(ROOT / "train.py"), *args]
    if prelude:
        run = "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
        runner = f"{prelude}\n{run}"
        command = [sys.executable, "-c", runner, *command[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def _sigint_default() -> None:
    """In the child: SIGINT as a terminal's Ctrl-C meets it. A background job of a non-interactive shell (a CI
    script run with `&`) starts with SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("stop, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_stopped_run_exits_nonzero_with_the_resume_command(tmp_path, mnist_root, stop, name):
    run = tmp_path / "outputs" / "preempted"
    args = [f"data.root={mnist_root}", *TINY, *QUIET, "T=2", "trainer.max_epochs=12", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "stderr", "w") as stderr:
        first = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=tmp_path,
            env=env,
            stdout=stderr,
            stderr=stderr,
            preexec_fn=_sigint_default,
        )
        last = run / "checkpoints" / "last.ckpt"
        while stored_epoch(last) < 0:  # Lightning's handler is in place once an epoch is saved
            assert first.poll() is None, "training exited before its first checkpoint"
            time.sleep(0.1)
        first.send_signal(stop)
        assert first.wait(timeout=300) != 0  # not counted as a finished run
    lines = (tmp_path / "stderr").read_text().strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith(f"error: the run was interrupted ({name}) in epoch ")
    assert (run / "train.log").read_text().strip().splitlines()[-1].endswith(lines[-1])
    assert lines[-1].endswith("; resume it with: python train.py ckpt_path=outputs/preempted/checkpoints/last.ckpt")
    assert not (run / "results.json").exists()

    resumed = _train("ckpt_path=outputs/preempted/checkpoints/last.ckpt", *QUIET, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "results.json").read_text())["epochs"] == 12


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def old_run(tmp_path):
    """A folder that holds a run (its files' contents do not matter: they must stay as they are)."""
    run = tmp_path / "outputs" / "old"
    for name in ("results.json", "environment.json", "train.log", ".hydra/config.yaml", "checkpoints/last.ckpt"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(f"the old run's {name}")
    (run / "notes.txt").write_text("the user's own notes")
    return run


@pytest.mark.slow
def test_a_folder_holding_a_run_is_refused_and_left_unchanged(tmp_path, mnist_root, old_run):
    before = _snapshot(old_run)
    args = [f"data.root={mnist_root}", *TINY, "trainer.fast_dev_run=true", f"hydra.run.dir={old_run}"]
    result = _train(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert _last_line(result) == (
        f"error: {old_run} already holds a run (results.json): resume it with "
        f"ckpt_path={old_run}/checkpoints/last.ckpt, choose another folder, or pass overwrite=true to replace its files"
    )
    assert _snapshot(old_run) == before  # not a byte, not a timestamp changed, nothing added


@pytest.mark.slow
def test_a_sweep_folder_holding_a_sweep_is_refused_and_left_unchanged(tmp_path, mnist_root, old_run):
    sweep = old_run.parent
    (sweep / "multirun.yaml").write_text("the old sweep's config")
    before = _snapshot(sweep)
    args = ["-m", f"data.root={mnist_root}", "trainer.fast_dev_run=true", "T=1,2", f"hydra.sweep.dir={sweep}"]
    result = _train(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert _last_line(result) == (
        f"error: {sweep} already holds a sweep (multirun.yaml): choose another folder, "
        "or pass overwrite=true to replace its files"
    )
    assert _snapshot(sweep) == before


@pytest.mark.slow
def test_overwrite_true_replaces_the_run_and_keeps_other_files(tmp_path, mnist_root, old_run):
    args = [f"data.root={mnist_root}", *TINY, "trainer.fast_dev_run=true", f"hydra.run.dir={old_run}"]
    result = _train(*args, "overwrite=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((old_run / "results.json").read_text())["model"] == "snn"
    assert not (old_run / "checkpoints" / "last.ckpt").exists()  # the old run's checkpoint is gone, not mixed in
    assert "old run" not in (old_run / "train.log").read_text()
    assert (old_run / "notes.txt").read_text() == "the user's own notes"


@pytest.mark.slow
def test_override_values_cannot_leave_the_run_folder(tmp_path, mnist_root):
    args = [f"data.root={mnist_root}", *TINY, "trainer.fast_dev_run=true", "+tag=a/../../outputs/victim1"]
    result = _train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs").iterdir()  # one folder: no outputs/victim1 next to it
    name = "_+tag=a_.._.._outputs_victim1,data.batch_size=16,data.val_size=16,trainer.fast_dev_run=true"
    assert run.name.endswith(name)
    assert (run / "results.json").exists() and not (tmp_path / "victim1").exists()


# Offline: torchvision's download of MNIST fails at once (a closed local port), as it does without a network.
OFFLINE = "from torchvision.datasets import MNIST\nMNIST.mirrors = ['http://127.0.0.1:9/']"


@pytest.mark.slow
def test_a_run_that_fails_before_training_leaves_nothing_behind(tmp_path):
    result = _train("data.root=data", *QUIET, cwd=tmp_path, prelude=OFFLINE)
    assert result.returncode != 0
    assert _last_line(result).startswith("error: MNIST is not in data/MNIST/raw and could not be downloaded (")
    assert sorted(tmp_path.iterdir()) == []  # no outputs/<run>/, no empty data/MNIST/raw


@pytest.mark.slow
def test_a_claimed_folder_that_fails_before_training_stays_and_says_why(tmp_path, old_run):
    args = ["data.root=nowhere", "data.download=false", *QUIET, f"hydra.run.dir={old_run}", "overwrite=true"]
    result = _train(*args, cwd=tmp_path)
    assert result.returncode != 0
    line = _last_line(result)
    assert line.startswith("error: MNIST is not in nowhere/MNIST/raw and data.download is false")
    # The folder was there before: it stays, with the user's file and a train.log saying why, and no run in it.
    assert sorted(p.name for p in old_run.iterdir()) == ["notes.txt", "train.log"]
    assert (old_run / "train.log").read_text().strip().endswith(line)


@pytest.mark.slow
def test_a_sweep_job_that_fails_before_training_keeps_only_its_reason(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "data.root=nowhere", "data.download=false", *QUIET, "T=1,2", f"hydra.sweep.dir={sweep}"]
    result = _train(*args, cwd=tmp_path)
    assert result.returncode != 0
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [job.split(",")[0] for job in jobs] == ["T=1", "T=2"]
    for job in jobs:  # no events file: TensorBoard does not list the failed jobs
        assert sorted(p.name for p in (sweep / job).iterdir()) == ["train.log"]
        assert "error: MNIST is not in nowhere/MNIST/raw" in (sweep / job / "train.log").read_text()


# Simulates a disk that fills up at the first checkpoint of epoch 1 (best.ckpt and last.ckpt were saved after epoch
# 0): half of it lands, then ENOSPC.
FULL_DISK_AT_EPOCH_1 = """
import errno, io, torch
real, saves = torch.save, []
def save(obj, f, *args, **kwargs):
    if str(getattr(f, "name", "")).endswith(".ckpt.tmp"):
        saves.append(f.name)
        if len(saves) == 3:
            data = io.BytesIO()
            real(obj, data)
            f.write(data.getvalue()[: len(data.getvalue()) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
    return real(obj, f, *args, **kwargs)
torch.save = save
"""


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint_and_names_it(tmp_path, mnist_root):
    run = tmp_path / "outputs" / "full"
    args = [f"data.root={mnist_root}", *TINY, *QUIET, "trainer.max_epochs=3", f"hydra.run.dir={run}"]
    result = _train(*args, cwd=tmp_path, prelude=FULL_DISK_AT_EPOCH_1)
    assert result.returncode != 0
    line = _last_line(result)
    assert line.startswith(f"error: cannot write {run}/checkpoints/") and line.endswith(
        ".ckpt: No space left on device (disk full or not writable?)"
    )
    failed = run / "checkpoints" / line.split("/checkpoints/")[1].split(":")[0]
    assert torch.load(failed, map_location="cpu", weights_only=True)["epoch"] == 0  # the previous one, whole
    assert not list(run.glob("checkpoints/*.tmp")) and not (run / "results.json").exists()


# Simulates a disk that fills up later, under TensorBoard's writer thread.
FULL_DISK_IN_TENSORBOARD = """
import errno, threading
from tensorboard.summary.writer.record_writer import RecordWriter
real = RecordWriter.write
def write(self, data):
    if threading.current_thread() is not threading.main_thread() and getattr(self, "_writes", 0) > 20:
        raise OSError(errno.ENOSPC, "No space left on device")
    self._writes = getattr(self, "_writes", 0) + 1
    return real(self, data)
RecordWriter.write = write
"""


@pytest.mark.slow
def test_full_disk_under_tensorboard_is_one_line(tmp_path, mnist_root):
    run = tmp_path / "outputs" / "full"
    args = [f"data.root={mnist_root}", *TINY, *QUIET, "trainer.max_epochs=20", "trainer.log_every_n_steps=1"]
    result = _train(*args, f"hydra.run.dir={run}", cwd=tmp_path, prelude=FULL_DISK_IN_TENSORBOARD)
    assert result.returncode != 0
    assert _last_line(result) == f"error: cannot write {run}: No space left on device (disk full or not writable?)"


@pytest.mark.parametrize(
    "override,line",
    [
        ("seed=-1", "seed=-1 is not allowed: an integer in [0, 4294967295] (Lightning's seed range)"),
        ("optimizer.lr=inf", "optimizer.lr=inf is not allowed: a finite number > 0"),
        ("optimizer.lr=nan", "optimizer.lr=nan is not allowed: a finite number > 0"),
        ("optimizer.weight_decay=inf", "optimizer.weight_decay=inf is not allowed: a finite number >= 0"),
    ],
)
def test_values_that_cannot_train_are_refused(compose_cfg, override, line):
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg(override))
    assert str(refused.value) == line


@pytest.mark.slow
def test_time_steps_that_cannot_fit_are_refused_before_the_run_folder(tmp_path, mnist_root):
    result = _train(f"data.root={mnist_root}", "T=100000", "data.batch_size=4096", cwd=tmp_path)
    assert result.returncode != 0
    line = _last_line(result)
    assert line.startswith("error: T=100000 is too large: one batch of 4096 through 100000 steps needs at least ")
    assert "GiB for backpropagation through time (1010 neurons), more than the " in line
    assert not (tmp_path / "outputs").exists()


def test_results_hold_no_nan_or_infinity():
    from snn.training import finite

    results = finite({"test/acc": 0.1, "test/loss": math.nan, "val/acc_best": math.inf, "epochs": 3, "model": "snn"})
    assert results == {"test/acc": 0.1, "test/loss": None, "val/acc_best": None, "epochs": 3, "model": "snn"}
    json.dumps(results, allow_nan=False)  # valid JSON
