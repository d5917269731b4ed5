"""Data-parallel training over 2 CPU processes (gloo): ddp_spawn inside a Hydra multirun, and torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from snn.run_setup import run_time
from tests.conftest import ROOT, TINY

# The tiny set's 80 training images split between 2 processes: 40 each, 3 batches of 16 per epoch (5 in one process).
STEPS_PER_EPOCH = 3


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


def check_run(run: Path, T: int) -> None:
    """results.json holds the run's values (epochs and best score included, which ddp_spawn's workers keep to
    themselves), and the training data were split between two processes."""
    results = json.loads((run / "results.json").read_text())
    events = EventAccumulator(str(run)).Reload()
    assert (results["T"], results["model.hidden_sizes"], results["epochs"]) == (T, [16], 2)
    assert results["val/acc_best"] == pytest.approx(max(e.value for e in events.Scalars("val/acc")))
    assert results["test/acc"] == pytest.approx(events.Scalars("test/acc")[-1].value)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 * STEPS_PER_EPOCH


@pytest.mark.slow
def test_ddp_multirun_two_processes_per_job(tmp_path, mnist_root):
    result = run_train("-m", "T=1,2", f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != "hparams")
    assert len(jobs) == 2  # the workers did not re-launch the sweep
    for t, job in zip((1, 2), jobs):
        check_run(job, t)
    assert result.stdout.count("test/acc=") == 2  # one summary per job: rank 0 alone reports


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_folder_and_rank_0_alone_writes(tmp_path, mnist_root):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",  # a free port of its own
        "--nproc_per_node=2",
        str(ROOT / "train.py"),
        "trainer=ddp",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "T=2",
        f"data.root={mnist_root}",
        *TINY,
        "model.hidden_sizes=[16]",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs").iterdir())
    assert len(runs) == 1  # rank 1 took rank 0's folder and made none of its own
    check_run(runs[0], T=2)
    assert sorted(p.name for p in (runs[0] / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    writers = {p.name.rsplit(".", 2)[1] for p in runs[0].glob("events.out.tfevents.*")}  # ...<host>.<pid>.<n>
    assert len(writers) == 1  # TensorBoard events from one process: rank 0
    assert result.stdout.count("test/acc=") == 1


def test_ranks_of_one_torchrun_take_the_first_ranks_timestamp(monkeypatch):
    from torch.distributed import TCPStore

    agent = TCPStore("127.0.0.1", 0, is_master=True)  # stands in for the store of torchrun's agent
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(agent.port))
    key = "snn-mnist/run_time/%H-%M-%S.%f"
    assert run_time("%H-%M-%S.%f") == agent.get(key).decode()  # the first rank leaves its time there
    agent.set(key, "12-00-00.000000")  # as if another rank had been first
    assert run_time("%H-%M-%S.%f") == "12-00-00.000000"


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_0_writes_the_hydra_folder(compose_cfg, monkeypatch, rank):
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    assert compose_cfg(hydra=True).hydra.output_subdir == (".hydra" if rank == 0 else None)


def test_slurm_launcher_config_composes_with_one_task_per_device(compose_cfg):
    import pytest

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_cfg("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.timeout_min == 240 and launcher.array_parallelism == 16


@pytest.mark.slow
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
