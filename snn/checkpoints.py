"""Checkpoints are data. They are read with torch's weights-only unpickler (tensors and plain containers, nothing
that runs code), memory-mapped (nothing is allocated while reading), and the run config stored in them may name only
the classes the project's own config files build, or those of the config folders the user gives on the command line
of this very invocation (`hydra.searchpath=[file://<dir>]`, as when training: never a path the checkpoint names).
Before any weight is used, the stored config is checked as a
training run's would be, and the file's tensors against the model that config describes (built on the meta device:
shapes, no memory).
"""

import functools
import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from snn import CONF
from snn.memory import available_bytes, gib

GROUPS = ("model", "neuron", "encoder", "data", "optimizer", "trainer")  # what rebuilding and describing a run read
STATE_FACTOR = 8  # weights, Adam's two moments, an EMA copy, metric states: a checkpoint holds well under 8x the model


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or not from this project; one line naming the file."""


SEARCHPATH_HINT = "hydra.searchpath=[file://<dir>]"


@functools.cache
def targets_in(folder: Path) -> frozenset[str]:
    """Every `_target_` in the yaml files under a config folder, outside Hydra's own settings. A file that cannot be
    read allows nothing (Hydra reports it where it is used)."""
    targets = set()

    def collect(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_":
                    targets.add(value)
                elif key != "hydra":
                    collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    for path in Path(folder).rglob("*.yaml"):
        if "hydra" not in path.relative_to(folder).parts:
            try:
                collect(OmegaConf.to_container(OmegaConf.load(path)))
            except Exception:  # omegaconf and yaml raise several kinds; such a file allows nothing
                continue
    return frozenset(targets)


def project_targets() -> frozenset[str]:
    """Every `_target_` in conf/: the classes any stored config may build."""
    return targets_in(CONF)


def allowed_targets(config_folders=()) -> frozenset[str]:
    """The project's targets and those of the user's own config folders (hydra.searchpath of this invocation)."""
    return project_targets().union(*(targets_in(Path(folder).resolve()) for folder in config_folders))


def searchpath_folders(value: str) -> tuple[Path, ...]:
    """The folders of a `hydra.searchpath=[file://<dir>,...]` argument, for entry points without Hydra's parser
    (snn.export); CheckpointError on anything but file:// entries."""
    entries = [e.strip().strip("'\"") for e in value.strip().removeprefix("[").removesuffix("]").split(",")]
    if not all(e.startswith("file://") and len(e) > len("file://") for e in entries):
        raise CheckpointError(f"hydra.searchpath={value} is not allowed: a list of config folders, [file://<dir>,...]")
    return tuple(Path(e.removeprefix("file://")) for e in entries)


def foreign_targets(config, allowed: frozenset[str] | None = None) -> list[str]:
    """The `_target_`s anywhere in `config` that are not among `allowed` (default: the project's own)."""
    allowed = project_targets() if allowed is None else allowed
    if isinstance(config, dict):
        found = [config["_target_"]] if "_target_" in config and config["_target_"] not in allowed else []
        return found + [
            t for key, value in config.items() if key != "_target_" for t in foreign_targets(value, allowed)
        ]
    if isinstance(config, list):
        return [t for item in config for t in foreign_targets(item, allowed)]
    return []


def _stored_bytes(path: Path) -> int:
    """The bytes of tensor data the file holds, from its zip directory; compressed entries are refused: torch writes
    none, and a compressed entry can expand to far more than the file (2 GiB from 2 MB)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            f"{path}: refused, its entry {compressed[0]} is compressed (torch writes checkpoints uncompressed; "
            "a compressed entry can expand to far more than the file)"
        )
    return sum(e.file_size for e in entries if "/data/" in e.filename)


def _leaves(node, key=""):
    """(dotted key, value) of every leaf of a stored config."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, node


def check_run_config(path: Path, run_config, config_folders=()) -> None:
    """The stored config and choices are plain data, complete, and build nothing but the project's classes and
    those of the user's config folders `config_folders`."""
    if not isinstance(run_config, dict) or not isinstance(run_config.get("config"), dict):
        raise CheckpointError(f"{path}: not a checkpoint written by train.py (it holds no run config)")
    config, choices = run_config["config"], run_config.get("choices", {})
    if not isinstance(choices, dict) or not all(isinstance(v, (str, type(None))) for v in choices.values()):
        raise CheckpointError(f"{path}: its stored choices are not a mapping of config groups to names")
    missing = [group for group in GROUPS if not isinstance(config.get(group), dict)]
    if missing:
        raise CheckpointError(f"{path}: its run config lacks the config group {missing[0]!r}")
    T = config.get("T")
    if not (isinstance(T, int) and not isinstance(T, bool) and T >= 1):
        raise CheckpointError(f"{path}: its stored config: T={T!r} is not allowed: an integer >= 1")
    for key, value in _leaves(config):
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise CheckpointError(f"{path}: its run config's {key} is a {type(value).__name__}, not a plain value")
        if isinstance(value, str) and "${" in value:  # resolving it would read the environment or other keys
            raise CheckpointError(
                f"{path}: refused, its run config's {key}={value!r} is an interpolation; stored configs hold plain "
                "values only"
            )
    foreign = foreign_targets(config, allowed_targets(config_folders))
    if foreign:
        given = ", ".join(str(folder) for folder in config_folders) or "none given"
        raise CheckpointError(
            f"{path}: refused, its run config would build {foreign[0]!r}, which is neither one of this project's "
            f"classes nor a _target_ in your config folders ({given}); a run of your own component needs "
            f"{SEARCHPATH_HINT} here as when training"
        )


def check_state(path: Path, checkpoint: dict, stored_bytes: int) -> None:
    """Validate the stored config as train.py would, build its model on the meta device (no memory), and compare the
    file's tensors with it: their sizes, their shapes, and that the network's weights are finite."""
    from omegaconf import OmegaConf

    from snn.build import build_classifier
    from snn.checks import ConfigError
    from snn.config import validate

    cfg = OmegaConf.create(checkpoint["run_config"]["config"])
    try:
        with torch.device("meta"):
            validate(cfg)
            expected = build_classifier(cfg, checkpoint["run_config"].get("choices", {})).state_dict()
    except ConfigError as error:
        raise CheckpointError(f"{path}: its stored config: {error}") from None
    model_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    if model_bytes > available_bytes()[0]:
        raise CheckpointError(
            f"{path}: its config describes a model of {gib(model_bytes)}, more than the {gib(available_bytes()[0])} "
            "of memory available"
        )
    if stored_bytes > STATE_FACTOR * model_bytes + 2**20:
        raise CheckpointError(
            f"{path}: refused, it holds {gib(stored_bytes)} of tensors where the model its config describes has "
            f"{gib(model_bytes)}"
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{path}: it holds no state_dict of tensors")
    for key, tensor in state.items():
        if key in expected and tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: weights do not fit the stored config ({key} has shape {list(tensor.shape)}, the config's "
                f"model {list(expected[key].shape)})"
            )
        if key.startswith("net.") and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: refused, its weights {key} hold NaN or infinite values")


def read_checkpoint(path: str | Path, config_folders=()) -> dict:
    """The checkpoint as a dict (weights on the CPU, memory-mapped) after the checks above; CheckpointError
    otherwise. `config_folders`: the user's own config folders given on this command line (hydra.searchpath), whose
    `_target_`s a stored config may build too."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    stored_bytes = _stored_bytes(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain containers (loading them could run code)"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    check_run_config(path, checkpoint.get("run_config") if isinstance(checkpoint, dict) else None, config_folders)
    check_state(path, checkpoint, stored_bytes)
    return checkpoint
