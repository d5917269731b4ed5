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
        ("path", "metadata encoder.name='../x' is not allowed: one of delta, direct, latency, rate, sequential"),
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


def test_graph_arrays_are_sized_before_they_are_read(tmp_path):
    """A 1e5 x 1e4 weight (4 GB) gzips to a few MB: refused from its declared shape, before nir.read reads it."""
    import h5py

    from snn.nir_graph import NIRError
    from snn.nir_import import load_nir

    big = tmp_path / "big.nir"
    nir.write(big, tiny_graph())
    with h5py.File(big, "a") as file:
        weights = []
        file.visititems(lambda name, obj: weights.append(name) if name.endswith("/weight") else None)
        del file[weights[0]]
        file.create_dataset(weights[0], shape=(100_000, 10_000), dtype="float32", compression="gzip")  # never written
    assert big.stat().st_size < 2**20
    with pytest.raises(NIRError, match=rf"^{big}: refused, its arrays declare 3.7 GiB \(the largest, .*weight, has "
                                       r"shape \[100000, 10000\]\); a graph may hold at most 1 GiB$"):  # fmt: skip
        load_nir(big)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"w1": np.full((8, 784), np.nan, dtype=np.float32)}, "weight holds NaN or infinite values"),
        ({"tau": np.full(8, np.inf)}, "tau holds NaN or infinite values"),
        ({"threshold": np.full(8, np.nan)}, "v_threshold holds NaN or infinite values"),
    ],
)
def test_non_finite_graph_parameters_are_refused(tmp_path, arrays, message):
    from snn.nir_graph import NIRError
    from snn.nir_import import load_nir

    nir.write(tmp_path / "nan.nir", tiny_graph(**arrays))
    with pytest.raises(NIRError, match=rf"^{tmp_path / 'nan.nir'}: node '\w+': {message}$"):
        load_nir(tmp_path / "nan.nir")


def test_stored_time_steps_that_cannot_fit_are_refused(tmp_path, mnist_root):
    """metadata T=1e9 would need terabytes: refused from an estimate before anything runs."""
    huge = tmp_path / "huge.nir"
    nir.write(huge, tiny_graph({"T": 10**9}))
    result = run("evaluate.py", f"ckpt={huge}", "sample=0", cwd=tmp_path, data_root=mnist_root)
    assert_one_line(result, str(huge), "T=1000000000 needs about", "for a batch of 1", "give a smaller T=")
    nir.write(tmp_path / "zero.nir", tiny_graph({"T": 0}))
    from snn.nir_graph import NIRError
    from snn.nir_import import load_nir

    with pytest.raises(NIRError, match=r"zero.nir: metadata T=0 is not allowed: an integer >= 1$"):
        load_nir(tmp_path / "zero.nir")


@pytest.fixture(scope="module")
def genuine(tmp_path_factory, mnist_root):
    from tests.conftest import train_tiny

    run_dir = train_tiny(
        tmp_path_factory.mktemp("run"), mnist_root, "T=2", "model.hidden_sizes=[16]", "trainer.max_epochs=1",
        "neuron.reset=zero",
    )  # fmt: skip
    return run_dir / "checkpoints" / "last.ckpt"


def altered(genuine, path, change):
    """A copy of the genuine checkpoint with `change(checkpoint)` applied."""
    import torch

    stored = torch.load(genuine, weights_only=True)
    change(stored)
    torch.save(stored, path)
    return path


def zip_deflated(source, target):
    """The same checkpoint with its entries deflated: a run of zeros shrinks ~1000x and expands back on loading."""
    import zipfile

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for entry in zin.infolist():
            zout.writestr(entry.filename, zin.read(entry.filename))
    return target


def huge_storage(stored):
    """The first layer's weight as a view on a 64 MiB storage: its shape fits, torch.load allocates it all."""
    import torch

    key = "net.stages.0.1.weight"
    weight = stored["state_dict"][key]
    storage = torch.zeros(16 * 2**20)
    storage[: weight.numel()] = weight.flatten()
    stored["state_dict"][key] = storage[: weight.numel()].view(weight.shape)


def _set(group, key, value):
    return lambda stored: stored["run_config"]["config"][group].__setitem__(key, value)


def _state(key, value):
    return lambda stored: stored["state_dict"][key].fill_(value)


CHECKPOINTS = {
    "env": (
        _set("data", "root", "${oc.env:HOME}"),
        "refused, its run config's data.root='${oc.env:HOME}' is an "
        "interpolation; stored configs hold plain values only",
    ),
    "T0": (lambda s: s["run_config"]["config"].update(T=0), "its stored config: T=0 is not allowed: an integer >= 1"),
    "negative": (_set("model", "hidden_sizes", [-16]), "its stored config: model.hidden_sizes=[-16] is not allowed"),
    "beta_nan": (_set("neuron", "beta", float("nan")), "its stored config: neuron.beta=nan is not allowed"),
    "threshold_nan": (_set("neuron", "threshold", float("nan")), "neuron.threshold=nan is not allowed"),
    "choices": (lambda s: s["run_config"].update(choices=["snn"]), "its stored choices are not a mapping"),
    "group": (lambda s: s["run_config"]["config"].pop("neuron"), "its run config lacks the config group 'neuron'"),
    "nan_weight": (
        _state("net.stages.0.1.weight", float("nan")),
        "refused, its weights net.stages.0.1.weight hold NaN or infinite values",
    ),
    "inf_bias": (_state("net.stages.1.1.bias", float("inf")), "net.stages.1.1.bias hold NaN or infinite values"),
    "storage": (huge_storage, "refused, it holds 64.1 MiB of tensors where the model its config describes has"),
}


@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_checkpoint_contents_are_checked_before_use(genuine, tmp_path, kind):
    from snn.checkpoints import CheckpointError, read_checkpoint

    change, message = CHECKPOINTS[kind]
    path = altered(genuine, tmp_path / f"{kind}.ckpt", change)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_a_compressed_checkpoint_is_refused_before_loading(genuine, tmp_path):
    from snn.checkpoints import CheckpointError, read_checkpoint

    read_checkpoint(genuine)
    bomb = zip_deflated(altered(genuine, tmp_path / "big.ckpt", huge_storage), tmp_path / "bomb.ckpt")
    assert bomb.stat().st_size < 2**20  # 64 MiB of tensors in well under 1 MiB
    with pytest.raises(CheckpointError, match=r"bomb.ckpt: refused, its entry \S+ is compressed"):
        read_checkpoint(bomb)


@pytest.mark.parametrize("kind", ["env", "choices", "T0", "bomb"])
def test_evaluate_refuses_a_bad_checkpoint_in_one_line(genuine, tmp_path, mnist_root, kind):
    if kind == "bomb":
        path = zip_deflated(altered(genuine, tmp_path / "big.ckpt", huge_storage), tmp_path / "bomb.ckpt")
        message = "is compressed"
    else:
        change, message = CHECKPOINTS[kind]
        path = altered(genuine, tmp_path / f"{kind}.ckpt", change)
    result = run("evaluate.py", f"ckpt={path}", "sample=0", cwd=tmp_path, data_root=mnist_root)
    assert_one_line(result, str(path), message)
    assert os.environ["HOME"] not in result.stdout and not list(tmp_path.glob("outputs/eval/*/*.json"))


def test_export_refuses_non_finite_weights(genuine, tmp_path, mnist_root):
    path = altered(genuine, tmp_path / "nan.ckpt", CHECKPOINTS["nan_weight"][0])
    result = run("snn.export", f"ckpt={path}", cwd=tmp_path, data_root=mnist_root)
    assert_one_line(result, str(path), "net.stages.0.1.weight hold NaN or infinite values")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("data", ["../x", "../../conf/data/mnist", 3, ["mnist"]])
def test_a_graph_dataset_name_is_one_of_ours_never_a_path(tmp_path, data):
    from snn.nir_graph import NIRError
    from snn.nir_import import load_nir

    nir.write(tmp_path / "g.nir", tiny_graph({"data": data}))
    with pytest.raises(NIRError, match=r"metadata data=.* is not allowed: one of fashion_mnist, mnist$"):
        load_nir(tmp_path / "g.nir")
    _, info = load_nir_with(tmp_path, "fashion_mnist")
    assert info["data"].__name__ == "FashionMNISTDataModule"


def load_nir_with(folder, data):
    from snn.nir_import import load_nir

    nir.write(folder / "ok.nir", tiny_graph({"data": data}))
    return load_nir(folder / "ok.nir")
