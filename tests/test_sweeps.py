import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY


def train(*args, cwd, data_root, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *args,
        f"data.root={data_root}",
        *TINY,
        "model.hidden_sizes=[16]",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={cwd / 'sweep'}",
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def results(cwd):
    return {p.parent.name: json.loads(p.read_text()) for p in (cwd / "sweep").rglob("results.json")}


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, mnist_root):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = train(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "torch_threads=1",
        "T=1,2",
        cwd=tmp_path,
        data_root=mnist_root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel" in result.stderr + result.stdout
    assert sorted(r["T"] for r in results(tmp_path).values()) == [1, 2]


@pytest.mark.slow
def test_optuna_search_runs_two_trials(tmp_path, mnist_root):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = train("hparams_search=optuna", "hydra.sweeper.n_trials=2", "T=2", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list(results(tmp_path).values())
    assert len(runs) == 2 and len({r["optimizer.lr"] for r in runs}) == 2  # two trials with different learning rates
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.lr" in best


@pytest.mark.slow
def test_optuna_never_tunes_on_the_test_set(tmp_path, mnist_root):
    """A trial without a validation score fails; its test accuracy is not used as the objective."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = train(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "T=1",
        "trainer.limit_val_batches=0",
        cwd=tmp_path,
        data_root=mnist_root,
    )
    assert result.returncode != 0
    assert "no validation score" in result.stderr and "Failed experiment" in result.stdout + result.stderr
    assert not (tmp_path / "sweep" / "optimization_results.yaml").exists()


@pytest.mark.slow
def test_a_failed_job_does_not_lose_the_others(tmp_path, mnist_root):
    result = train("T=1,0,2", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode != 0
    assert "error: T=0 is not allowed: an integer >= 1" in result.stderr
    assert sorted(r["T"] for r in results(tmp_path).values()) == [1, 2]  # the job after the failure ran too
