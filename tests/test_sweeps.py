import json
import os
import subprocess
import sys

import pytest

from snn.report import main as report
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
    assert len(runs) == 2 and len({r["lr"] for r in runs}) == 2  # two trials with different learning rates
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.lr" in best


@pytest.mark.slow
def test_a_failed_job_does_not_lose_the_others(tmp_path, mnist_root):
    result = train("T=1,0,2", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode != 0
    assert "error: T=0 is not allowed: an integer >= 1" in result.stderr
    assert sorted(r["T"] for r in results(tmp_path).values()) == [1, 2]  # the job after the failure ran too


def test_report_collects_results_and_skips_broken_files(tmp_path, capsys):
    runs = [
        {
            "model": "ann",
            "baseline": "none",
            "neuron": "none",
            "encoder": "none",
            "T": 1,
            "test/acc": 0.98,
            "test/macs": 794000,
            "test/synops": 0,
            "test/energy_nJ": 3652.4,
            "epochs": 10,
            "wall_time_s": 44,
        },
        *(
            {
                "model": "snn",
                "baseline": "none",
                "neuron": "lif",
                "encoder": enc,
                "T": t,
                "test/acc": 0.9 + t / 1000,
                "test/firing_rate/layer1": 0.05,
                "test/synops": 1e6,
                "test/macs": 0,
                "test/energy_nJ": 900.0,
                "epochs": 3,
                "wall_time_s": 60,
            }
            for enc in ("rate", "direct")
            for t in (1, 5, 25)
        ),
    ]
    for i, run in enumerate(runs):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "results.json").write_text(json.dumps(run))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"model": "snn", "test/ac')
    assert report([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and "broken" in err
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(runs) and table[2].startswith("| ann |")
    assert "| snn | none | lif | direct | 25 | 92.50% | 0.050 | 1,000,000 | 0 | 900.0 | 3 | 60 |" in table
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(runs) and csv_rows[0].startswith("model,baseline")
    for png in ("accuracy_vs_T.png", "val_acc_per_epoch.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_report_on_a_folder_without_results_fails_clearly(tmp_path, capsys):
    assert report([str(tmp_path)]) == 1
    assert "no readable results.json" in capsys.readouterr().err
