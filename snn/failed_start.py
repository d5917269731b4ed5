"""A run that fails before its first training step leaves nothing behind: no run folder for TensorBoard to list,
no empty folders. Only what this invocation made is removed: a folder that was there before (claimed with
overwrite=true, or a resumed run's) stays, with its train.log saying why the run stopped.

A sweep's failed job keeps its folder with that train.log line (and no events file, so TensorBoard does not list
it): the sweep's other jobs go on, and the folder says afterwards which job failed and why."""

import logging
import os
import shutil
from pathlib import Path

from pytorch_lightning import Callback

from snn.checks import ConfigError
from snn.data import DataError
from snn.run_folder import TRAIN_LOG, run_files

_new: dict[str, Path] = {}  # run folder -> the topmost folder this process is about to create for it
_started: set[str] = set()  # run folders whose training took its first step


def _key(folder: Path) -> str:
    return os.path.abspath(folder)  # as Hydra writes hydra.runtime.output_dir


def note_new(folder: Path) -> None:
    """Called before Hydra makes the run folder: remember which folders (it and missing parents) are this run's."""
    folder = Path(_key(folder))
    if folder.exists():
        return
    topmost = folder
    while not topmost.parent.exists():
        topmost = topmost.parent
    _new[_key(folder)] = topmost


class FirstStep(Callback):
    """Marks the run as started when its first training batch begins: from then on a failure keeps the folder."""

    def __init__(self, run_dir: Path):
        self.run_dir = _key(run_dir)

    def on_train_batch_start(self, *args, **kwargs) -> None:
        _started.add(self.run_dir)


def _close_logs_in(folder: Path) -> None:
    """Hydra's job logging keeps train.log open; close it before its folder goes."""
    loggers = [logging.root, *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder):
                handler.close()
                logger.removeHandler(handler)


def _remove_empty(folder: Path, topmost: Path) -> None:
    """Remove `folder` and its parents up to `topmost` while they are empty (folders this run created)."""
    for path in (folder, *folder.parents):
        try:
            path.rmdir()
        except OSError:
            return
        if path == topmost:
            return


def failure_line(error: BaseException) -> str | None:
    """The line a failure ends with (what train.py prints), for train.log; None for a clean exit."""
    if isinstance(error, SystemExit):
        return None if error.code in (None, 0) else str(error.code)
    if isinstance(error, (ConfigError, DataError, FloatingPointError)):
        return f"error: {error}"
    return f"error: {type(error).__name__}: {error}"


def clean_up(run_dir: Path, reason: str, resumed: bool, writes: bool) -> None:
    """After a failure: say why in train.log; before the first training step, remove what this run wrote."""
    TRAIN_LOG.error(reason)
    key = _key(run_dir)
    if resumed or not writes or key in _started:  # a resumed run's folder holds its earlier epochs
        return
    run_dir = Path(key)
    if key in _new:  # made by this run: it goes entirely
        _close_logs_in(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir != _new[key]:
            _remove_empty(run_dir.parent, _new[key])
        return
    # There before (or a sweep's job folder): the claim left no run's files in it, so those there now are this run's.
    for path in run_files(run_dir):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
