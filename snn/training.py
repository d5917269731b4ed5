"""One training run: build the components from the config, fit, test the best checkpoint, write results."""

import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EMAWeightAveraging, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from snn.build import build_classifier
from snn.checkpoint_io import AtomicCheckpointIO
from snn.checkpoints import CheckpointError, read_checkpoint
from snn.checks import ConfigError
from snn.events_logger import EventsLogger
from snn.failed_start import FirstStep
from snn.hparams_view import log_session
from snn.progress import progress_callbacks
from snn.run_identity import hparams, identity
from snn.run_setup import STORAGE_ERRORS, Interrupted, rank, user_config_folders

log = logging.getLogger(__name__)
# In-memory tensors need no loader workers; Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Noise on every run: torch 2.14 deprecates a class Lightning still uses, and Lightning advertises its cloud services.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*deprecated.*")
# The test leaves out the weight-averaging callback on purpose (see train); Lightning would warn that it is missing.
warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage() and "litmodels" not in record.getMessage()
)


def environment() -> dict:
    """Library versions and the git commit of this code, so a run can be reproduced."""
    packages = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "snntorch", "torchmetrics")
    versions = {"python": platform.python_version(), **{p: importlib.metadata.version(p) for p in packages}}
    versions["torch"] = torch.__version__  # with the build's local tag (+cpu, +cu130), which the metadata may lack
    here = Path(__file__).resolve().parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"versions": versions, "git_commit": (commit + ("-dirty" if dirty else "")) or None}


def resume_point(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict, str]:
    """For `ckpt_path`: the checkpoint's own run config and choices, so a resumed run is the run it continues."""
    path = run_dir / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    try:
        stored = read_checkpoint(path, user_config_folders())["run_config"]
    except CheckpointError as error:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is not allowed: {error}") from None
    resumed = OmegaConf.create(stored["config"])
    resumed.ckpt_path = str(path)
    return resumed, stored.get("choices", {}), str(path)


@contextmanager
def _interruptible(trainer: pl.Trainer, run_dir: Path, stage: str):
    """A stopped fit or test raises `Interrupted` naming the resume command: Lightning turns SIGTERM into
    SystemExit(None) (an exit status of 0: the run would pass for finished) and Ctrl-C into sys.exit(1)."""
    try:
        yield
    except (SIGTERMException, SystemExit) as stop:
        sigterm = isinstance(stop, SIGTERMException)  # a SystemExit too
        if not (sigterm or trainer.interrupted):
            raise
        how = "SIGTERM" if sigterm else "Ctrl-C"
        when = f"in epoch {trainer.current_epoch + 1}" if stage == "fit" else "while testing"  # 1-based, as the bar
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.exists():
            raise Interrupted(f"the run was interrupted ({how}) {when}, before its first checkpoint: start it again")
        resume = f"python train.py ckpt_path={os.path.relpath(last)}"
        raise Interrupted(f"the run was interrupted ({how}) {when}; resume it with: {resume}") from None


def _quiet_storage_errors_in_threads() -> None:
    """TensorBoard writes from a thread: a full disk there would print that thread's traceback, and then reach the
    training loop at the next write, where train.py reports it in one line. Only the traceback is left out."""
    default = threading.excepthook
    if getattr(default, "quiet_storage_errors", False):
        return  # installed by an earlier run of this process (a sweep)

    def hook(args):
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in STORAGE_ERRORS):
            default(args)

    hook.quiet_storage_errors = True
    threading.excepthook = hook


def finite(results: dict) -> dict:
    """JSON has no NaN or infinity: a metric that is not finite (a diverged run) is recorded as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in results.items()}


def train(cfg: DictConfig, run_dir: Path, choices: dict) -> dict:
    started = time.time()
    run_dir = Path(run_dir)
    resume_from = None
    if cfg.get("ckpt_path"):
        cfg, choices, resume_from = resume_point(cfg, run_dir)
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # Under torchrun every rank runs this function; rank 0 alone writes files (Lightning reads the rank from the
    # launcher's environment). Under ddp_spawn only this process runs it, as rank 0.
    writes = rank() == 0
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"seed": cfg.seed, "resumed_from": resume_from, **environment()}
        environment_file = run_dir / ("environment_resumed.json" if resume_from else "environment.json")
        environment_file.write_text(json.dumps(record, indent=2) + "\n")
    module = build_classifier(cfg, choices)
    run_identity = identity(module.run_config["config"], choices, module.spiking)
    data = instantiate(cfg.data)

    logger = EventsLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/acc",
        mode="max",
        auto_insert_metric_name=False,
    )
    # last.ckpt after every epoch, so a killed run loses at most the unfinished one. (ModelCheckpoint's save_last
    # copies only the checkpoints it writes, i.e. best.ckpt when val/acc improved.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False)
    # The progress bar shows epoch k/N and the whole run's time left (Lightning refuses a bar it was told not to show)
    progress = progress_callbacks(progress_bar=cfg.trainer.get("enable_progress_bar", True))
    callbacks = [checkpoint, last, FirstStep(run_dir), *progress]
    if cfg.optimizer.get("ema_decay"):  # validation, checkpoints and the test see the averaged weights
        callbacks.append(EMAWeightAveraging(decay=cfg.optimizer.ema_decay))
    # default_root_dir: where Lightning's SLURM auto-requeue saves its hpc_ckpt_<n>.ckpt (not the working directory,
    # where a later, unrelated run under SLURM would restore it)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()], default_root_dir=run_dir
    )
    cpu = trainer.strategy.root_device.type == "cpu"
    if "bf16" in str(trainer.precision) and cpu and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("trainer.precision=%s: this CPU has no bf16 instructions, 32-true is faster", trainer.precision)
    if writes:  # other ranks have no file writer (their logger's experiment is a dummy)
        log_session(logger, hparams(run_identity, cfg.seed))  # before training: the HParams tab lists the run
    _quiet_storage_errors_in_threads()
    try:
        with _interruptible(trainer, run_dir, "fit"):
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    except OSError as error:  # from TensorBoard's writer thread it names no file: say which run could not be written
        error.filename = error.filename or str(run_dir)
        raise

    best = checkpoint.best_model_path or None  # none under fast_dev_run: test the final weights
    best_score, epochs = checkpoint.best_model_score, trainer.current_epoch
    if best and best_score is None:  # ddp_spawn: the fit ran in worker processes, which hand back the best path only
        stored = read_checkpoint(run_dir / "checkpoints" / "last.ckpt", user_config_folders())
        best_score, epochs = stored["callbacks"][checkpoint.state_key]["best_model_score"], stored["epoch"] + 1
    # best.ckpt holds the averaged weights validation chose; the callback would load the raw ones back over them.
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, EMAWeightAveraging)]
    with _interruptible(trainer, run_dir, "test"):
        tested = trainer.test(module, datamodule=data, ckpt_path=best, verbose=False, weights_only=True)[0]
    results = {
        **run_identity,
        "seed": cfg.seed,
        **{k: v for k, v in tested.items() if k.startswith("test/")},
        "val/acc_best": float(best_score) if best_score is not None else None,
        "epochs": epochs,
        "wall_time_s": round(time.time() - started, 1),
        "best_checkpoint": best,
        "run_dir": str(run_dir),
        "choices": choices,
        "config": module.run_config["config"],
    }
    results = finite(results)
    if writes:
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return results
