"""Progress of the whole run: epoch k of N (1-based) and the time left, on the progress bar and, one line per
epoch, in train.log (so a run under nohup or SLURM reads from its log)."""

import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf
from tqdm import tqdm

from snn.run_folder import TRAIN_LOG


def duration(seconds: float | None) -> str:
    return "--:--" if seconds is None else tqdm.format_interval(seconds)


class RunClock(Callback):
    """Measures the time per training and per validation batch so far; the time left is those times the batches left
    in this and every remaining epoch. `clock` is replaceable so a test can count instead of time."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.spent = {"train": 0.0, "val": 0.0}
        self.batches = {"train": 0, "val": 0}
        self.done = {"train": 0, "val": 0}  # in the current epoch
        self.started = self.mark = None

    def _tick(self, stage: str) -> None:
        now = self.clock()
        self.spent[stage] += now - self.mark
        self.batches[stage] += 1
        self.done[stage] += 1
        self.mark = now

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = self.clock()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.done = {"train": 0, "val": 0}
        self.mark = self.clock()

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self._tick("train")

    def on_validation_start(self, trainer, pl_module) -> None:
        self.mark = self.clock()

    def on_validation_batch_end(self, trainer, *args, **kwargs) -> None:
        if not trainer.sanity_checking:
            self._tick("val")

    def on_validation_end(self, trainer, pl_module) -> None:
        self.mark = self.clock()  # training resumes from here (val_check_interval < 1)

    def elapsed(self) -> float | None:
        return None if self.started is None else self.clock() - self.started

    def remaining(self, trainer: "pl.Trainer") -> float | None:
        """Seconds left in the run, or None while nothing is measured or the run has no set length."""
        epochs, per_epoch = trainer.max_epochs, trainer.num_training_batches
        if not self.batches["train"] or epochs is None or epochs < 0 or not math.isfinite(per_epoch):
            return None
        later = epochs - trainer.current_epoch - 1  # whole epochs after this one
        train_rate = self.spent["train"] / self.batches["train"]
        val_rate = self.spent["val"] / self.batches["val"] if self.batches["val"] else train_rate  # until measured
        val = sum(trainer.num_val_batches) if trainer.enable_validation else 0
        every = trainer.check_val_every_n_epoch or 1
        val_epochs_later = sum((e + 1) % every == 0 for e in range(trainer.current_epoch + 1, epochs))
        validates_now = (trainer.current_epoch + 1) % every == 0
        train_left = per_epoch - self.done["train"] + later * per_epoch
        val_left = (val - self.done["val"] if validates_now else 0) + val_epochs_later * val
        return max(train_left, 0) * train_rate + max(val_left, 0) * val_rate

    def epoch(self, trainer: "pl.Trainer") -> str:
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else "?"
        return f"{trainer.current_epoch + 1}/{total}"


class EpochLog(Callback):
    """One line per epoch in train.log: epoch k/N, train and validation loss and accuracy, time elapsed and left."""

    def __init__(self, clock: RunClock):
        self.clock = clock

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        parts = [
            f"{stage} loss {metrics[f'{stage}/loss']:.4f} acc {metrics[f'{stage}/acc']:.4f}"
            for stage in ("train", "val")
            if f"{stage}/loss" in metrics and f"{stage}/acc" in metrics and self.clock.done[stage]  # not stale ones
        ]
        elapsed, left = duration(self.clock.elapsed()), duration(self.clock.remaining(trainer))
        TRAIN_LOG.info(f"epoch {self.clock.epoch(trainer)}: {', '.join(parts)}; {elapsed} elapsed, {left} left")


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, described as `Epoch k/N (run: <time> left)` for the whole run instead of `Epoch k-1` with
    the epoch's own time left."""

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, clock: RunClock):
        super().__init__()
        self.clock = clock

    def description(self, trainer: "pl.Trainer") -> str:
        return f"Epoch {self.clock.epoch(trainer)} (run: {duration(self.clock.remaining(trainer))} left)"

    def on_train_epoch_start(self, trainer, *_) -> None:  # Lightning's, with this description set before it shows
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.set_description(self.description(trainer), refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self.train_progress_bar.set_description(self.description(trainer), refresh=False)
        super().on_train_batch_end(trainer, *args, **kwargs)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._train_progress_bar is not None and trainer.state.fn == "fit":
            self.train_progress_bar.set_description(self.description(trainer), refresh=False)
        super().on_validation_end(trainer, pl_module)


def progress_callbacks(progress_bar: bool) -> list[Callback]:
    """The clock first: the bar and the log read it after it has counted the batch."""
    clock = RunClock()
    return [clock, EpochLog(clock), *([RunProgressBar(clock)] if progress_bar else [])]
