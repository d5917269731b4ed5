"""Shared .nir graphs and checkpoints are data: what they declare is checked before anything is built, read or
allocated, and a hostile or broken file is refused with one line naming it, through evaluate.py and snn.export."""

import os
import subprocess
import sys

import nir
import numpy as np
import pytest

from tests.conftest import ROOT


def tiny_graph(metadata: dict | None = None, **arrays) -> nir.NIRGraph:
    """Flatten -> Affine -> LIF -> Affine -> LI on [1, 28, 28] images; `arrays` replace the named node fields."""
    rng = np.random.default_rng(0)
    tau, n = 5e-4, 8
    fields = {
        "w1": rng.normal(0, 0.1, (n, 784)).astype(np.float32),
        "w2": rng.normal(0, 1.0, (10, n)).astype(np.float32),
        "tau": np.full(n, tau),
        "threshold": np.full(n, 0.5),
        **arrays,
    }
    graph = nir.NIRGraph.from_list(
        [
            nir.Flatten(input_type={"input": np.array([1, 28, 28])}, start_dim=0),
            nir.Affine(weight=fields["w1"], bias=np.zeros(n, dtype=np.float32)),
            nir.LIF(tau=fields["tau"], r=np.full(n, tau / 1e-4), v_leak=np.zeros(n), v_threshold=fields["threshold"],
                    v_reset=np.zeros(n)),
            nir.Affine(weight=fields["w2"], bias=np.zeros(10, dtype=np.float32)),
            nir.LI(tau=np.full(10, tau), r=np.full(10, tau / 1e-4), v_leak=np.zeros(10)),
        ]
    )  # fmt: skip
    graph.metadata = {"T": 3, "encoder": {"name": "direct"}, **(metadata or {})}
    return graph


def run(module_or_script: str, *args, cwd, data_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNN_DATA_DIR": str(data_root)}
    command = ["-m", module_or_script] if module_or_script.startswith("snn.") else [str(ROOT / module_or_script)]
    return subprocess.run(
        [sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def assert_one_line(result, *fragments):
    """A non-zero exit whose stderr ends with one `error:` line holding every fragment, and no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, last
    return last


def test_a_graph_exported_here_still_evaluates(tmp_path, mnist_root):
    nir.write(tmp_path / "good.nir", tiny_graph({"encoder": {"name": "rate", "gain": 0.5}}))
    result = run("evaluate.py", f"ckpt={tmp_path / 'good.nir'}", "sample=0", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test[0]: predicted" in result.stdout


HOSTILE = {
    "open": {"name": "rate", "payload": {"_target_": "builtins.open", "file": "VICTIM", "mode": "w"}},
    "copyfile": {"name": "rate", "payload": {"_target_": "shutil.copyfile", "src": "OTHER", "dst": "VICTIM"}},
    "path": {"name": "../x"},
}


def hostile_graph(folder, encoder):
    """A graph whose metadata encoder is `encoder`, with VICTIM / OTHER standing for files in `folder`."""
    victim, other = folder / "victim.txt", folder / "other.txt"
    victim.write_text("precious\n")
    other.write_text("replacement\n")
    (folder / "x.yaml").write_text("_target_: builtins.print\n")  # where a name used as a path would lead

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return {"VICTIM": str(victim), "OTHER": str(other)}.get(value, value) if isinstance(value, str) else value

    nir.write(folder / "evil.nir", tiny_graph({"encoder": fill(encoder)}))
    return folder / "evil.nir", victim


@pytest.mark.parametrize(
    "kind,message",
    [
        ("open", "metadata encoder.payload is not allowed: the rate encoder takes gain (and name)"),
        ("copyfile", "metadata encoder.payload is not allowed"),
        ("path", "metadata encoder.name='../x' is not allowed: one of direct, latency, rate"),
    ],
)
def test_a_hostile_graph_metadata_runs_nothing(tmp_path, mnist_root, kind, message):
    """The metadata's encoder is never handed to Hydra: no class outside the project is built, no file opened."""
    evil, victim = hostile_graph(tmp_path, HOSTILE[kind])
    result = run("evaluate.py", f"ckpt={evil}", "sample=0", cwd=tmp_path, data_root=mnist_root)
    assert_one_line(result, str(evil), message)
    assert victim.read_text() == "precious\n"
    assert not list(tmp_path.glob("outputs/eval/*/*.json"))


@pytest.mark.parametrize(
    "encoder,message",
    [
        ({"name": "rate", "_target_": "builtins.open", "file": "VICTIM", "mode": "w"}, "encoder._target_ is not"),
        ({"name": "rate", "_partial_": True}, "encoder._partial_ is not allowed"),
        ({"name": "rate", "_args_": ["VICTIM"]}, "encoder._args_ is not allowed"),
        ({"name": "rate", "gain": -1.0}, "encoder.gain=-1.0 is not allowed: a number > 0"),
        ({"name": "rate", "gain": float("inf")}, "encoder.gain=inf is not allowed: a finite number"),
        ({"name": "latency", "gain": 2.0}, "encoder.gain is not allowed: the latency encoder takes none"),
        ("rate", "encoder='rate' is not allowed: a mapping with a name"),
    ],
)
def test_graph_metadata_is_checked_as_plain_values(tmp_path, encoder, message):
    from snn.nir_graph import NIRError
    from snn.nir_import import load_nir

    evil, victim = hostile_graph(tmp_path, encoder)
    with pytest.raises(NIRError, match=f"^{evil}: metadata ") as error:
        load_nir(evil)
    assert message in str(error.value) and victim.read_text() == "precious\n"
