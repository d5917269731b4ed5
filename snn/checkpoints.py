"""Checkpoints are data. They are read with torch's weights-only unpickler (tensors and plain containers, nothing
that runs code), and the run config stored in them may name only the classes the project's own config files build.
"""

import functools
import pickle
from pathlib import Path

import torch
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or not from this project; one line naming the file."""


@functools.cache
def project_targets() -> frozenset[str]:
    """Every `_target_` in conf/ outside Hydra's own settings: the only classes a stored config may build."""
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

    for path in CONF.rglob("*.yaml"):
        if "hydra" not in path.relative_to(CONF).parts:
            collect(OmegaConf.to_container(OmegaConf.load(path)))
    return frozenset(targets)


def foreign_targets(config) -> list[str]:
    """The `_target_`s anywhere in `config` that are not the project's own."""
    if isinstance(config, dict):
        found = [config["_target_"]] if "_target_" in config and config["_target_"] not in project_targets() else []
        return found + [t for key, value in config.items() if key != "_target_" for t in foreign_targets(value)]
    if isinstance(config, list):
        return [t for item in config for t in foreign_targets(item)]
    return []


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint as a dict (weights on the CPU) after the checks above; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused, it holds objects other than tensors and plain containers (loading them could run code)"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    run_config = checkpoint.get("run_config") if isinstance(checkpoint, dict) else None
    if not isinstance(run_config, dict) or not isinstance(run_config.get("config"), dict):
        raise CheckpointError(f"{path}: not a checkpoint written by train.py (it holds no run config)")
    foreign = foreign_targets(run_config["config"])
    if foreign:
        raise CheckpointError(
            f"{path}: refused, its run config would build {foreign[0]!r}, which is not one of this project's classes"
        )
    return checkpoint
