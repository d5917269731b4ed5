import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


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
