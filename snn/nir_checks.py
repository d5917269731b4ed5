"""Checks of what a .nir file declares, made before its arrays are read or used: the arrays' declared sizes (HDF5
keeps shapes apart from the data, and gzip lets a small file declare a huge array), their values (finite), and the
graph's metadata, which is data: read as plain values (never passed to Hydra), its encoder and dataset only options
of this project's config groups (conf/encoder/, conf/data/) or of the user's config folders given on this command
line (hydra.searchpath, as when training)."""

import functools
import inspect
import math
from pathlib import Path

import h5py
import nir
import numpy as np
from hydra.utils import get_class
from omegaconf import OmegaConf

from snn import CONF
from snn.checks import ConfigError
from snn.nir_graph import NIRError

MAX_BYTES = 2**30  # of declared arrays in one graph: ~40x the largest model here (csnn_wide), far above MNIST nets
# the last three: CubaLIF
PARAMETERS = ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset", "tau_syn", "tau_mem", "w_in")


def check_declared_sizes(path: Path) -> None:
    """Before nir.read reads any array: the bytes every dataset declares, each and in all, at most MAX_BYTES."""
    datasets = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, obj: datasets.append((name, obj.shape, obj.size * obj.dtype.itemsize))
                        if isinstance(obj, h5py.Dataset) else None)  # fmt: skip
    total = sum(size for _, _, size in datasets)
    if total > MAX_BYTES:
        name, shape, size = max(datasets, key=lambda d: d[2])
        raise NIRError(
            f"refused, its arrays declare {total / 2**30:.1f} GiB (the largest, {name}, has shape {list(shape)}); a "
            f"graph may hold at most {MAX_BYTES / 2**30:.0f} GiB"
        )


def check_finite(graph: nir.NIRGraph) -> None:
    """Weights and neuron parameters are finite numbers: a NaN or infinite one (tau=inf, a NaN weight) would make
    every prediction meaningless without an error."""
    for name, node in graph.nodes.items():
        for field in PARAMETERS:
            value = getattr(node, field, None)
            if value is not None and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                raise NIRError(f"node {name!r}: {field} holds NaN or infinite values")


@functools.cache
def _options(group: str, config_folders: tuple[Path, ...] = ()) -> dict[str, str]:
    """name -> `_target_` of the options of a config group: conf/<group>/*.yaml, then the user's folders' (the
    project's option wins a name both have, as Hydra's search path does)."""
    found = {}
    for folder in (CONF, *config_folders):
        for path in sorted(Path(folder).glob(f"{group}/*.yaml")):
            try:
                target = OmegaConf.load(path).get("_target_")
            except Exception:  # omegaconf and yaml raise several kinds; such a file names nothing
                continue
            if isinstance(target, str):
                found.setdefault(path.stem, target)
    return found


def option_class(group: str, name, config_folders=(), key: str | None = None) -> type:
    """The class of the option `name` of a config group (only that one is imported); NIRError naming the options,
    and the metadata `key` that held the name."""
    options = _options(group, tuple(Path(folder) for folder in config_folders))
    if not isinstance(name, str) or name not in options:
        raise NIRError(f"metadata {key or group}={name!r} is not allowed: one of {', '.join(options)}")
    return get_class(options[name])


def stored_data(metadata: dict, config_folders=()) -> type:
    """The data module class of the dataset the metadata names; MNIST for graphs that name none (exported before
    datasets were a choice, or made elsewhere)."""
    return option_class("data", metadata.get("data", "mnist"), config_folders)


def _is_plain_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def stored_T(metadata: dict) -> int | None:
    """The metadata's T, if any: an integer >= 1."""
    T = metadata.get("T")
    if T is not None and not (isinstance(T, int) and not isinstance(T, bool) and T >= 1):
        raise NIRError(f"metadata T={T!r} is not allowed: an integer >= 1")
    return T


def stored_encoder(metadata: dict, config_folders=()) -> tuple[type, dict] | None:
    """(the encoder class, its keyword arguments but T) that the metadata names, or None if it names none.
    Refused: a name not in conf/encoder/ (or the user's folders' encoder/), a key the class does not take, a value
    that is not a plain finite number, string or bool, and any value the class itself refuses."""
    stored = metadata.get("encoder")
    if stored is None:
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("name"), str):
        raise NIRError(f"metadata encoder={stored!r} is not allowed: a mapping with a name, an option of encoder=")
    name = stored["name"]
    cls = option_class("encoder", name, config_folders, key="encoder.name")
    takes = [p for p in inspect.signature(cls).parameters if p != "T"]
    kwargs = {key: value for key, value in stored.items() if key != "name"}
    for key, value in kwargs.items():
        if key not in takes:
            allowed = ", ".join(takes) or "none"
            raise NIRError(f"metadata encoder.{key} is not allowed: the {name} encoder takes {allowed} (and name)")
        if not (_is_plain_number(value) or isinstance(value, (str, bool))):
            raise NIRError(f"metadata encoder.{key}={value!r} is not allowed: a finite number, a string or a bool")
    try:
        cls(T=1, **kwargs)  # the class checks its own values
    except ConfigError as error:
        raise NIRError(f"metadata encoder.{error}") from None
    return cls, kwargs
