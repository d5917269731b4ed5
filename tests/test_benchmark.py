import os
import subprocess
import sys

import pytest

from tests.conftest import EXPLODING_SMNIST, ROOT, TINY


@pytest.mark.slow
def test_throughput_benchmark_smoke():
    """A tiny run of the real benchmark: it completes and prints every row (speed itself is not asserted)."""
    env = {k: v for k, v in os.environ.items() if k != "SNN_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "throughput.py"),
            "--T",
            "3",
            "--batch",
            "8",
            "--hidden",
            "16",
            "--steps",
            "1",
            "--rounds",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| rate") or line.startswith("| direct")]
    names = {tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows}
    assert {
        ("rate", "this project"),
        ("rate", "this project, bf16 autocast"),
        ("rate", "snnTorch loop"),
        ("direct", "this project"),
        ("direct", "snnTorch loop"),
    } <= names
    assert "dense float32 GEMM" in result.stdout and "dense bfloat16 GEMM" in result.stdout


@pytest.mark.slow
def test_conv_throughput_benchmark_smoke():
    env = {k: v for k, v in os.environ.items() if k != "SNN_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--net", "conv", "--batch", "8"]
    result = subprocess.run(
        [*command, "--steps", "1", "--rounds", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| direct")]
    names = {row.split("|")[2].strip() for row in rows}
    assert {"this project", "this project, bf16 autocast", "snnTorch loop"} <= names
    assert "T=4" in result.stdout


@pytest.mark.slow
def test_rsnn_throughput_benchmark_smoke():
    """--net rsnn: the recurrent rows side by side, the time breakdown of the fused loop, and T checked."""
    env = {k: v for k, v in os.environ.items() if k != "SNN_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--net", "rsnn", "--batch", "8"]
    result = subprocess.run(
        [*command, "--T", "28", "--steps", "1", "--rounds", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sequence")]
    names = {row.split("|")[2].strip() for row in rows}
    assert {"this project", "this project, no C++ kernels", "snnTorch loop"} <= names
    assert "28-256 (recurrent, all-to-all)-10 LIF, T=28" in result.stdout
    assert "per-step products [8,256]x[256,256]" in result.stdout and "load average" in result.stdout
    refused = subprocess.run([*command, "--T", "30"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--T 30 is not allowed for --net rsnn: a divisor of 784" in refused.stderr


@pytest.mark.slow
def test_cli_throughput_smoke(mnist_root, tmp_path):
    """benchmarks/cli_throughput.py runs train.py with the user's arguments and prints both speeds and their ratio."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(mnist_root), "EVERY": "5"}
    args = ["T=2", *TINY, "trainer.max_epochs=6", "trainer.enable_progress_bar=false"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cli_throughput.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("train.py: "))
    assert "samples/s over 8 batches" in line  # 10 after the warm-up, less the first of each epoch
    assert "median of 2 rounds" in line and line.count("x (threads") == 1
    assert (tmp_path / "run" / "results.json").exists()  # the run itself is a normal run


@pytest.mark.slow
def test_gradient_norms_show_the_explosion_a_lower_slope_removes(mnist_root):
    """benchmarks/gradient_norms.py on experiment=smnist's first net (T = 784, recurrent learnable ALIF on the
    neuron's own scale, made small), on the tiny data: the recurrent weight's gradient at the atan surrogate's
    default slope is orders of magnitude above its gradient at 0.5."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "benchmarks" / "gradient_norms.py"), *EXPLODING_SMNIST, *TINY]
    command += [f"data.root={mnist_root}", "model.hidden_sizes=[64]", "--slopes", "2", "0.5", "--batches", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    recurrent = [float(line.split()[-1]) for line in result.stdout.splitlines() if "net.neurons.0.weight" in line]
    assert len(recurrent) == 2 and recurrent[0] > 1e3 * recurrent[1] > 0
    steps = [*command[:-5], "--slopes", "0.5", "--batches", "1", "--steps", "5", "--clip", "1"]
    trained = subprocess.run(steps, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (line,) = [line for line in trained.stdout.splitlines() if "recurrent ||W||_2" in line]
    assert line.startswith("  step    0: loss ") and float(line.split()[-1]) > 0  # W's spectral norm
