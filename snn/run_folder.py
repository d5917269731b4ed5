"""A run folder holds one run: a new run refuses a folder with another run's files, unless told to replace them."""

import logging
import shutil
from pathlib import Path

from snn.checks import ConfigError

# What train.py (and Hydra for it) writes into a run folder; `overwrite=true` removes these and nothing else.
# train.log is no sign of a run: under torchrun another rank may have opened it in this run's folder already.
LOG = "train.log"
# Lines for the run folder's train.log only (conf/hydra/job_logging/snn.yaml keeps them off the console, which shows
# the progress bar and train.py's own lines): per-epoch metrics, the final line, why a run stopped.
TRAIN_LOG = logging.getLogger("snn.train_log")
RUN_FILES = (
    "results.json", "environment.json", "environment_resumed.json", "checkpoints", ".hydra",
    "hparams.yaml",  # no longer written (snn/events_logger.py), but older runs have it
    "multirun.yaml", "optimization_results.yaml",  # a sweep folder's own
)  # fmt: skip
RUN_PATTERNS = ("events.out.tfevents.*", "hpc_ckpt_*.ckpt")


def run_files(folder: Path) -> list[Path]:
    """The files and folders a previous run left in `folder` (none if it does not exist)."""
    if not folder.is_dir():
        return []
    found = [folder / name for name in RUN_FILES if (folder / name).exists()]
    return found + sorted(p for pattern in RUN_PATTERNS for p in folder.glob(pattern))


def claim(folder: Path, overwrite: bool, multirun: bool = False) -> None:
    """Before Hydra writes anything: refuse a folder that holds a run, or with `overwrite` remove that run's files
    (in a sweep folder, also those of each job folder in it)."""
    folders = [folder, *(p for p in folder.iterdir() if p.is_dir())] if multirun and folder.is_dir() else [folder]
    found = [path for f in folders for path in run_files(f)]
    if not found:
        return
    if not overwrite:
        what = "a sweep" if multirun else "a run"
        resume = "" if multirun else f" resume it with ckpt_path={folder / 'checkpoints' / 'last.ckpt'},"
        raise ConfigError(
            f"{folder} already holds {what} ({found[0].name}):{resume} choose another folder, "
            "or pass overwrite=true to replace its files"
        )
    found += [f / LOG for f in folders if (f / LOG).is_file()]
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
