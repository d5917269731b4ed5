"""What the entry points set up around Hydra: the resolvers that name run folders (one timestamp across torchrun's
ranks, from its store), the pre-run callback that checks a config before any folder is made, argv quoting, and how
a run that cannot write or was stopped ends."""

import errno
import os
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from snn.checks import ConfigError, require
from snn.config import validate


def rank() -> int:
    """This process's global rank, as Lightning reads it from a launcher's environment (torchrun, SLURM); else 0."""
    return rank_zero_only.rank


def run_time(pattern: str) -> str:
    """The timestamp in the run folder's name. torchrun starts `python train.py` once per rank, and each composes
    its config a moment apart: the first to get here leaves its time in torchrun's store (served by the launching
    agent at MASTER_ADDR:MASTER_PORT) and every rank takes that one, so all agree on one folder."""
    now = datetime.now().strftime(pattern)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return now
    from torch.distributed import TCPStore

    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    store = TCPStore(address, port, is_master=False, timeout=timedelta(minutes=5))
    return store.compare_set(f"snn-mnist/run_time/{pattern}", "", now).decode()  # sets it only if unset


OmegaConf.register_new_resolver("run_time", run_time, use_cache=True, replace=True)


def run_name(overrides: str) -> str:
    """The run folder is named by its overrides (a run with none: "defaults"), as one folder name: a value with a
    path separator (`+tag=a/../../x`) must not place the run elsewhere."""
    return (overrides or "defaults").replace("/", "_").replace("\\", "_")


OmegaConf.register_new_resolver("run_name", run_name, replace=True)
# Resuming from outputs/<run>/checkpoints/<x>.ckpt continues in outputs/<run>, and leaves its .hydra/ untouched.
OmegaConf.register_new_resolver(
    "run_dir", lambda ckpt, new: str(Path(ckpt).parent.parent) if ckpt and ckpt != "last" else new, replace=True
)
# Only rank 0 writes .hydra/ (the other ranks of a torchrun launch share its folder).
OmegaConf.register_new_resolver("config_subdir", lambda ckpt: None if ckpt or rank() else ".hydra", replace=True)


def eval_root(ckpt: str | None) -> str:
    """Evaluations of outputs/<run>/checkpoints/<x>.ckpt (or export/<x>.nir) go to outputs/<run>/eval/, of any other
    file to outputs/eval/."""
    path = Path(str(ckpt)) if ckpt else None
    return (
        str(path.parent.parent / "eval")
        if path is not None and path.parent.name in ("checkpoints", "export")
        else "outputs/eval"
    )


OmegaConf.register_new_resolver("eval_root", eval_root, replace=True)


def eval_name(overrides: str, image: str | None, sample) -> str:
    """An evaluation folder is named by what was evaluated: `test`, `image=<file or folder name>` or `sample=<which>`,
    then any other overrides (`test,T=10`)."""
    what = "test" if sample is None else f"sample={sample}"
    if image is not None:
        what = f"image={Path(str(image)).resolve().name}"
    return run_name(",".join(filter(None, (what, overrides))))


OmegaConf.register_new_resolver("eval_name", eval_name, replace=True)


def user_config_folders() -> tuple[Path, ...]:
    """The config folders given on this command line as `hydra.searchpath=[file://<dir>]`: the only place the
    `_target_`s of the user's own components are read from to accept a checkpoint (never the checkpoint itself);
    () outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ()
    entries = HydraConfig.get().searchpath  # hydra.searchpath: conf/config.yaml sets none, so the command line's
    return tuple(Path(e.removeprefix("file://")) for e in entries if e.startswith("file://"))


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


class Interrupted(Exception):
    """The run was stopped by SIGTERM (a scheduler's preemption, scancel) or Ctrl-C before it finished."""


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
    def _check(config: DictConfig, folder: Path, multirun: bool) -> None:
        from snn.run_folder import claim

        try:
            validate(config)
            overwrite = config.get("overwrite", False)
            require(isinstance(overwrite, bool), "overwrite", overwrite, "true or false")
            if not config.get("ckpt_path") and rank() == 0:  # a resumed run continues its folder; ranks share one
                claim(folder, overwrite, multirun)
        except ConfigError as error:
            sys.exit(f"error: {error}")
        check_writable(folder if multirun else folder.parent)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from snn.failed_start import note_new

        note_new(Path(config.hydra.run.dir))  # before anything below creates it: a failed start removes only its own
        self._check(config, Path(config.hydra.run.dir), multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, Path(config.hydra.sweep.dir), multirun=True)
