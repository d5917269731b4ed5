"""Checks of the public config keys, run before anything is built, loaded or written."""

import errno
import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from snn.architectures import POOLS, READOUTS
from snn.classifier import OPTIMIZERS, SCHEDULES
from snn.neurons import RESETS
from snn.sparse_input import MODES as SPARSE_INPUT_MODES
from snn.surrogates import SURROGATES

# The run folder is named by its overrides; a run with none is named "defaults".
OmegaConf.register_new_resolver("run_name", lambda overrides: overrides or "defaults", replace=True)
# Resuming from outputs/<run>/checkpoints/<x>.ckpt continues in outputs/<run>, and leaves its .hydra/ untouched.
OmegaConf.register_new_resolver(
    "run_dir", lambda ckpt, new: str(Path(ckpt).parent.parent) if ckpt and ckpt != "last" else new, replace=True
)
OmegaConf.register_new_resolver("config_subdir", lambda ckpt: None if ckpt else ".hydra", replace=True)


def eval_root(ckpt: str | None) -> str:
    """Evaluations of outputs/<run>/checkpoints/<x>.ckpt go to outputs/<run>/eval/, of any other file to outputs/eval/."""
    path = Path(str(ckpt)) if ckpt else None
    return (
        str(path.parent.parent / "eval") if path is not None and path.parent.name == "checkpoints" else "outputs/eval"
    )


OmegaConf.register_new_resolver("eval_root", eval_root, replace=True)


def quote_path_overrides(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """Quote `key=path` arguments for Hydra's override parser: run folders are named like
    `T=25,encoder=rate`, and an unquoted `=` or `,` inside a path would be a syntax error."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys and value and value[0] not in "'\"" and "'" not in value:
            arg = f"{key}='{value}'"
        quoted.append(arg)
    return quoted


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line naming the key."""


def _number(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number")
    return value


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate(cfg: DictConfig) -> None:
    T = OmegaConf.select(cfg, "T")
    _require(isinstance(T, int) and not isinstance(T, bool) and T >= 1, "T", T, "an integer >= 1")
    batch_size = OmegaConf.select(cfg, "data.batch_size")
    _require(isinstance(batch_size, int) and batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
    for key in ("data.max_shift", "data.max_rotation", "data.max_scale"):
        if OmegaConf.select(cfg, key) is not None:  # absent from the stored configs of older checkpoints
            _require(_number(cfg, key) >= 0, key, OmegaConf.select(cfg, key), "a number >= 0")
    max_scale = OmegaConf.select(cfg, "data.max_scale")
    if max_scale is not None:
        _require(max_scale < 1, "data.max_scale", max_scale, "a number in [0, 1)")
    lr = _number(cfg, "optimizer.lr")
    _require(lr > 0, "optimizer.lr", lr, "a number > 0")
    _require(
        _number(cfg, "optimizer.weight_decay") >= 0,
        "optimizer.weight_decay",
        cfg.optimizer.weight_decay,
        "a number >= 0",
    )
    _require(cfg.optimizer.name in OPTIMIZERS, "optimizer.name", cfg.optimizer.name, ", ".join(OPTIMIZERS))
    _require(cfg.optimizer.schedule in SCHEDULES, "optimizer.schedule", cfg.optimizer.schedule, ", ".join(SCHEDULES))

    for key, example in (("model.hidden_sizes", "[1000] or [500,500]"), ("model.channels", "[32,64,128]")):
        sizes = OmegaConf.select(cfg, key)
        if sizes is not None:
            ok = OmegaConf.is_list(sizes) and len(sizes) > 0 and all(isinstance(h, int) and h >= 1 for h in sizes)
            _require(
                ok,
                key,
                OmegaConf.to_container(sizes) if OmegaConf.is_list(sizes) else sizes,
                f"a list of integers >= 1, e.g. {example}",
            )
    hidden_size = OmegaConf.select(cfg, "model.hidden_size")
    if hidden_size is not None:
        _require(isinstance(hidden_size, int) and hidden_size >= 1, "model.hidden_size", hidden_size, "an integer >= 1")
    readout = OmegaConf.select(cfg, "model.readout")
    if readout is not None:
        _require(readout in READOUTS, "model.readout", readout, ", ".join(READOUTS))
    pool = OmegaConf.select(cfg, "model.pool")
    if pool is not None:
        _require(pool in POOLS, "model.pool", pool, ", ".join(POOLS))
    sparse_input = OmegaConf.select(cfg, "model.sparse_input")
    if sparse_input is not None:
        _require(sparse_input in SPARSE_INPUT_MODES, "model.sparse_input", sparse_input, ", ".join(SPARSE_INPUT_MODES))

    neuron = cfg.neuron
    threshold = _number(cfg, "neuron.threshold")
    _require(threshold > 0, "neuron.threshold", threshold, "a number > 0")
    if "beta" in neuron:
        beta = _number(cfg, "neuron.beta")
        upper = "1)" if neuron._target_.endswith("PLIF") else "1]"
        _require(0 < beta < 1 or (beta == 1 and upper == "1]"), "neuron.beta", beta, f"a number in (0, {upper}")
    _require(neuron.reset in RESETS, "neuron.reset", neuron.reset, ", ".join(RESETS))
    _require(neuron.surrogate in SURROGATES, "neuron.surrogate", neuron.surrogate, ", ".join(SURROGATES))
    if neuron.slope is not None:
        _require(
            _number(cfg, "neuron.slope") > 0,
            "neuron.slope",
            neuron.slope,
            "a number > 0, or null for the surrogate's default",
        )
    if "gain" in cfg.encoder:
        _require(_number(cfg, "encoder.gain") > 0, "encoder.gain", cfg.encoder.gain, "a number > 0")


STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)


def storage_error(error: OSError) -> str:
    return f"error: cannot write {error.filename or 'the run folder'}: {error.strerror} (disk full or not writable?)"


def check_writable(folder: Path) -> None:
    """Create `folder` (as Hydra will) and write a scratch file in it; a one-line error if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as scratch:
            scratch.write(b"\0" * 4096)
    except OSError as error:
        if error.filename is None:
            error.filename = str(folder)
        sys.exit(storage_error(error))


class ValidateOnStart(Callback):
    """Checks the composed config, and that the outputs can be written, before Hydra creates any run folder
    (train.py checks each job again)."""

    @staticmethod
    def _check(config: DictConfig, folder: Path) -> None:
        try:
            validate(config)
        except ConfigError as error:
            sys.exit(f"error: {error}")
        check_writable(folder)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, Path(config.hydra.run.dir).parent)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, Path(config.hydra.sweep.dir))
