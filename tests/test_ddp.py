"""Data-parallel training over 2 CPU processes (gloo), alone and inside a Hydra multirun."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT, TINY


def run_train(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "train.py"), *args, *TINY, "trainer=ddp", "trainer.accelerator=cpu",
               "trainer.devices=2", "model.hidden_sizes=[16]", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_ddp_multirun_two_processes_per_job(tmp_path, mnist_root):
    result = run_train("-m", "T=1,2", f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") >= 2  # a second process per job
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2  # the workers did not re-launch the sweep
    for t, job in zip((1, 2), jobs):
        assert json.loads((job / "results.json").read_text())["T"] == t
        assert list(job.glob("events.out.tfevents.*"))
    assert result.stdout.count("test/acc=") == 2  # one summary per job: rank 0 alone reports
