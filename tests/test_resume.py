import json
import os
import signal
import subprocess
import sys
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, TINY

EPOCHS = 12


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
    deadline = time.time() + 240
    while time.time() < deadline and not (last.exists() and last.stat().st_size > 0):
        assert first.poll() is None, "training exited before its first checkpoint"
        time.sleep(0.2)
    time.sleep(1.0)  # into a later epoch
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (run / "results.json").exists(), "the run finished before it could be killed"
    config_before = (run / ".hydra" / "config.yaml").read_text()

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
    assert results["epochs"] == EPOCHS and results["T"] == 2 and results["test/acc"] >= 0
    epochs = [e.value for e in EventAccumulator(str(run)).Reload().Scalars("epoch")]
    assert set(range(EPOCHS)) <= set(epochs)  # the TensorBoard run goes on where it stopped, to the last epoch
