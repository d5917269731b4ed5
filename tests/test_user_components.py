"""Components of your own, without editing the package: the examples of docs/extending.md, written to a temporary
folder (their module on PYTHONPATH, their yaml under hydra.searchpath), train, resume, are evaluated, reported and
exported like built-in ones; a checkpoint still builds only classes named by conf/ or by the config folders given on
the command line."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from snn.checkpoints import CheckpointError, read_checkpoint
from tests.conftest import CONF, ROOT, TINY, make_tiny_mnist

GUIDE = ROOT / "docs" / "extending.md"
SMALL = ["T=2", "model.hidden_sizes=[16]", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def write_guide_examples(folder):
    """Every code block of the guide whose first line names a file under my_components/, written there."""
    blocks = re.findall(r"```(?:python|yaml)\n# (my_components/\S+)\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    for name, body in blocks:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    return folder / "my_components", {name for name, _ in blocks}


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """(the folder of the guide's modules, its config folder, the data root with tiny MNIST and KMNIST files)."""
    root = tmp_path_factory.mktemp("user")
    folder, names = write_guide_examples(root)
    for kind, module in (("neuron", "my_alif"), ("encoder", "phase"), ("data", "kmnist"), ("model", "strided_conv")):
        assert f"my_components/conf/{kind}/{module}.yaml" in names, f"the guide has no {kind} example"
    data = make_tiny_mnist(root / "data")
    make_tiny_mnist(data, folder="KMNIST")
    return folder, folder / "conf", data


def run(args, cwd, components, searchpath=True):
    folder, conf, data = components
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)]), "SNN_DATA_DIR": str(data)}
    extra = [f"hydra.searchpath=[file://{conf}]"] if searchpath else []
    return subprocess.run(
        [sys.executable, *args, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def one_error_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-2000:]
    return last


@pytest.mark.slow
def test_a_neuron_of_your_own_trains_is_reported_evaluated_resumed_and_refused_by_export(tmp_path, components):
    train = run(
        [str(ROOT / "train.py"), "neuron=my_alif", *SMALL, *TINY, "hydra.run.dir=outputs/my_alif"], tmp_path, components
    )
    assert train.returncode == 0, train.stderr[-3000:]
    results = json.loads((tmp_path / "outputs" / "my_alif" / "results.json").read_text())
    assert (results["neuron"], results["neuron.adapt"], results["epochs"]) == ("my_alif", 0.2, 1)
    assert results["test/firing_rate/layer1"] is not None  # the statistics read the layer through the contract

    report = run(["-m", "snn.report", "outputs"], tmp_path, components, searchpath=False)  # results.json only
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| my_alif |" in (tmp_path / "outputs" / "results.md").read_text()

    best = tmp_path / "outputs" / "my_alif" / "checkpoints" / "best.ckpt"
    evaluated = run([str(ROOT / "evaluate.py"), f"ckpt={best}", "hydra.run.dir=eval"], tmp_path, components)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["neuron"] == "my_alif"

    refused = one_error_line(run([str(ROOT / "evaluate.py"), f"ckpt={best}"], tmp_path, components, searchpath=False))
    assert "'my_alif.AdaptiveLIF'" in refused and "hydra.searchpath=[file://<dir>]" in refused, refused

    # A run stopped after its first epoch of two: its checkpoint says so (as test_checkpoints does).
    stopped = tmp_path / "outputs" / "stopped" / "checkpoints" / "last.ckpt"
    stopped.parent.mkdir(parents=True)
    checkpoint = torch.load(best.with_name("last.ckpt"), weights_only=True)
    checkpoint["run_config"]["config"]["trainer"]["max_epochs"] = 2
    torch.save(checkpoint, stopped)
    refused = one_error_line(run([str(ROOT / "train.py"), f"ckpt_path={stopped}"], tmp_path, components, False))
    assert refused.startswith(f"error: ckpt_path={stopped} is not allowed") and "'my_alif.AdaptiveLIF'" in refused
    resumed = run([str(ROOT / "train.py"), f"ckpt_path={stopped}"], tmp_path, components)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((stopped.parent.parent / "results.json").read_text())["epochs"] == 2

    exported = run(["-m", "snn.export", f"ckpt={best}"], tmp_path, components)
    assert one_error_line(exported) == (
        f"error: {best}: AdaptiveLIF has no NIR node: it defines no nir_node for its own dynamics, so it cannot be "
        "exported"
    )


def compose_run(components, *overrides):
    _, conf, data = components
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"hydra.searchpath=[file://{conf}]", f"data.root={data}", *TINY, *overrides],
            return_hydra_config=True,
        )
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg.hydra
    return cfg, choices


@pytest.fixture
def importable(components, monkeypatch):
    """The guide's modules importable in this process, and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(components[0]))
    yield
    for module in ("my_alif", "phase_coding", "kmnist", "strided_conv"):
        sys.modules.pop(module, None)


def test_an_encoder_dataset_and_architecture_of_your_own_train_and_export(tmp_path, components, importable):
    from snn.evaluation import load_model
    from snn.export import main as export
    from snn.training import train

    overrides = ["encoder=phase", "data=kmnist", "model=strided_conv", "neuron.reset=zero", "T=8"]
    cfg, choices = compose_run(components, *overrides, "trainer.max_epochs=1", "trainer.enable_progress_bar=false")
    results = train(cfg, tmp_path / "run", choices)
    assert (results["encoder"], results["data"], results["model"]) == ("phase", "kmnist", "strided_conv")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    conf = components[1]
    export([f"ckpt={best}", f"hydra.searchpath=[file://{conf}]"])  # a NIR graph, as from a built-in model
    graph = tmp_path / "run" / "export" / "best.nir"
    module, info = load_model(graph, None, None, config_folders=(conf,))  # its encoder and dataset: from conf
    assert (info["encoder"], info["data"], module.dataset.__name__) == ("phase", "kmnist", "KMNISTDataModule")
    with pytest.raises(
        SystemExit, match=r"refused, its run config would build '(strided_conv|phase_coding|kmnist)\.\w+'"
    ):
        export([f"ckpt={best}", f"out={tmp_path / 'other.nir'}"])  # no search path: refused


def test_a_checkpoint_naming_another_callable_is_refused_even_with_a_search_path(tmp_path, components, importable):
    """The search path admits the _target_s of the user's yaml files, not anything: os.system stays refused, also
    when the stored config itself names a folder that would admit it (the folders come from the command line)."""
    from snn.training import train

    cfg, choices = compose_run(components, "neuron=my_alif", *SMALL)
    train(cfg, tmp_path / "run", choices)
    stored = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil"
    (evil / "model").mkdir(parents=True)
    (evil / "model" / "x.yaml").write_text("_target_: os.system\n")
    stored["run_config"]["config"]["model"] = {"_target_": "os.system", "command": f"touch {marker}"}
    stored["run_config"]["config"]["hydra"] = {"searchpath": [f"file://{evil}"]}
    path = tmp_path / "evil.ckpt"
    torch.save(stored, path)
    with pytest.raises(CheckpointError, match=r"refused, its run config would build 'os.system'"):
        read_checkpoint(path, (components[1],))
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", (components[1],))  # the genuine one reads
    with pytest.raises(CheckpointError, match=r"'my_alif.AdaptiveLIF', which is neither .* \(none given\)"):
        read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert not marker.exists()


def test_a_component_that_cannot_be_imported_stops_with_one_line(components):
    """Its yaml found but its module not on PYTHONPATH: one line naming the key, the class and the remedy."""
    from snn.checks import ConfigError
    from snn.config import validate

    assert "my_alif" not in sys.modules
    for group, choice, target in (
        ("neuron", "my_alif", "my_alif.AdaptiveLIF"),
        ("data", "kmnist", "kmnist.KMNISTDataModule"),
    ):
        cfg, _ = compose_run(components, f"{group}={choice}")
        with pytest.raises(ConfigError) as error:
            validate(cfg)
        assert str(error.value) == (
            f"{group}._target_='{target}' cannot be imported (ModuleNotFoundError(\"No module named "
            f"'{target.split('.')[0]}'\")): a class of your own must be importable, e.g. PYTHONPATH=<the folder "
            "holding its module>"
        )
