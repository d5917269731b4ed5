"""Data-parallel training over 2 CPU processes (gloo), alone and inside a Hydra multirun."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, TINY


def run_train(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *args,
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model.hidden_sizes=[16]",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    ]
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


def test_slurm_launcher_config_composes_with_one_task_per_device(compose_cfg):
    import pytest

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.timeout_min == 240 and launcher.array_parallelism == 16


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path, mnist_root):
    import pytest

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "hydra/launcher=local",
            "T=1,2",
            *TINY,
            f"data.root={mnist_root}",
            "model.hidden_sizes=[16]",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted(json.loads(p.read_text())["T"] for p in (tmp_path / "sweep").rglob("results.json"))
    assert found == [1, 2]
