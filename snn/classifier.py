"""The LightningModule: encoder -> network -> cross-entropy, with accuracy and spike statistics per split."""

import logging
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from snn.checks import is_number, require
from snn.spike_stats import SpikeStats

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("none", "cosine")
# A total gradient norm above this is an explosion, not learning: the nets here train at norms of ~0.1-100; the
# S-MNIST net at the atan surrogate's default slope starts at ~1e15 (784 steps multiply its derivative).
EXPLODED = 1e4
EXPLODING_ADVICE = (
    "backpropagation through many time steps multiplies the surrogate's derivative at every step: lower neuron.slope, "
    "clip with +trainer.gradient_clip_val=1, or in a recurrent net limit model.recurrent_max_norm"
)
log = logging.getLogger(__name__)


def grad_norm(parameters) -> torch.Tensor | None:
    """The total (2-norm) gradient norm over the parameters that have a gradient; None where none has."""
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def check_optimizer(optimizer: dict) -> None:
    name, lr, schedule = optimizer.get("name"), optimizer.get("lr"), optimizer.get("schedule", "none")
    decay, ema = optimizer.get("weight_decay", 0.0), optimizer.get("ema_decay")
    require(name in OPTIMIZERS, "name", name, ", ".join(OPTIMIZERS))
    require(is_number(lr) and 0 < lr < math.inf, "lr", lr, "a finite number > 0")
    require(is_number(decay) and 0 <= decay < math.inf, "weight_decay", decay, "a finite number >= 0")
    require(schedule in SCHEDULES, "schedule", schedule, ", ".join(SCHEDULES))
    require(ema is None or (is_number(ema) and 0 < ema < 1), "ema_decay", ema, "null (off) or a number in (0, 1)")


def check_loss(loss: dict) -> None:
    smoothing = loss.get("label_smoothing", 0.0)
    require(is_number(smoothing) and 0 <= smoothing < 1, "label_smoothing", smoothing, "a number in [0, 1)")


class Classifier(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        encoder: nn.Module | None,
        optimizer: dict,
        run_config: dict | None = None,
        loss: dict | None = None,
        *,
        dataset: type,
    ):
        super().__init__()
        self.net, self.encoder = net, encoder
        self.optimizer_config = dict(optimizer)
        if self.optimizer_config:  # empty for a model built only to be evaluated
            check_optimizer(self.optimizer_config)
        loss = loss or {}
        check_loss(loss)
        self.label_smoothing = loss.get("label_smoothing", 0.0)
        self.run_config = run_config  # saved into every checkpoint so evaluation can rebuild the run
        # The data module class (snn/data.py) the net was trained on: its classes size the metrics and name the
        # figures' axes, and evaluation tests on it.
        self.dataset, self.classes = dataset, tuple(dataset.class_names)
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes=dataset.num_classes, average="micro"))
            # float("nan") keeps a NaN loss in the mean (as Lightning's own mean would), instead of dropping it
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy=float("nan")))
        self.test_confusion = MulticlassConfusionMatrix(num_classes=dataset.num_classes)
        self.confusion_matrix = None  # of the last test epoch, [true, predicted] counts
        self.best_val_acc = MaxMetric()
        self.best_val_acc.persistent(True)  # in the checkpoint, so a resumed run remembers its best epoch
        self.train_grad_norm = MaxMetric()  # the epoch's largest, before any clipping
        self.exploded = False  # warned once a run
        self._register_load_state_dict_pre_hook(_best_of_older_checkpoints)
        self.spike_stats = SpikeStats(net)
        self.example = None  # (hidden spikes, output membrane, label) of the first validation sample

    @property
    def spiking(self) -> bool:
        return getattr(self.net, "spiking", False)

    def forward(self, images: torch.Tensor, trace: bool = False):
        if self.spiking:
            images = self.encoder(images)
        return self.net(images, trace=trace)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        if stage == "train":
            logits = self(images)
        else:
            logits, trace = self(images, trace=True)
            self.spike_stats.update(trace)
            if stage == "val" and self.example is None and self.spiking:
                self.example = (trace.spikes[0][:, 0].cpu(), trace.membrane[:, 0].cpu(), int(labels[0]))
        # Smoothing is part of the training objective only: validation and test report the plain cross-entropy.
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(labels))
        getattr(self, f"{stage}_acc").update(logits, labels)
        if stage == "test":
            self.test_confusion.update(logits, labels)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train/loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "stopped (checkpoints/ keeps the last good epoch): lower optimizer.lr?"
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        """Logged once, as the epoch starts, and updated per batch: Lightning computes a logged Metric over the whole
        epoch at its end (gathered over DDP processes) and resets it. self.log on every batch would cost ~1 ms of
        Lightning's bookkeeping per batch, 4 % of an MLP training step on 2 cores."""
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), prog_bar=stage != "test")
        self.log(f"{stage}/acc", getattr(self, f"{stage}_acc"), prog_bar=True)

    def on_train_epoch_start(self):
        self._log_epoch_metrics("train")
        self.log("train/grad_norm_max", self.train_grad_norm)

    def on_before_optimizer_step(self, optimizer):
        norm = grad_norm(self.parameters())
        if norm is None:
            return
        scaled = getattr(self._trainer, "precision", None) == "16-mixed"  # its scaler skips inf steps itself
        if not torch.isfinite(norm) and not scaled:  # the step would write NaN weights: a silent net, a finite loss
            raise FloatingPointError(
                f"the gradients became {norm.item()} at epoch {self.current_epoch}, step {self.global_step}; stopped "
                f"(checkpoints/ keeps the last good epoch): {EXPLODING_ADVICE}"
            )
        self.train_grad_norm.update(norm)  # before Lightning clips (trainer.gradient_clip_val)

    def on_train_epoch_end(self):
        """One warning per run when the gradients explode, from this process's own largest norm of the epoch
        (Lightning syncs the logged one over DDP processes in its own order)."""
        peak = float(self.train_grad_norm.max_value)
        if not self.exploded and peak > EXPLODED and self.trainer.is_global_zero:
            self.exploded = True
            log.warning(
                f"gradients exploded in epoch {self.current_epoch + 1}: their total norm reached {peak:.3g} (training "
                f"that learns stays far below {EXPLODED:g}): {EXPLODING_ADVICE}"
            )

    def on_validation_epoch_start(self):
        self.spike_stats.reset()
        self.example = None
        self._log_epoch_metrics("val")

    def on_test_epoch_start(self):
        self.spike_stats.reset()
        self._log_epoch_metrics("test")

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.best_val_acc(self.val_acc.compute())
        self.log("val/acc_best", self.best_val_acc.compute())
        self._log_spike_stats("val")

    def on_test_epoch_end(self):
        self._log_spike_stats("test")
        self.confusion_matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()

    def _log_spike_stats(self, stage: str) -> None:
        for name, value in self.spike_stats.compute().items():
            self.log(f"{stage}/{name}", value, sync_dist=True)
        writer = getattr(self.logger, "experiment", None)
        # Other ranks get a dummy writer that drops the figure without closing it: draw on rank 0 only.
        if stage != "val" or not self.spiking or not hasattr(writer, "add_figure") or not self.trainer.is_global_zero:
            return
        from snn.plots import activity_figure  # matplotlib only where figures are drawn

        for i, rates in enumerate(self.spike_stats.per_neuron_rates(), start=1):
            writer.add_histogram(f"val/neuron_firing_rate/layer{i}", rates, self.current_epoch)
        figure = activity_figure(*self.example[:2], self.net.output_threshold, self.example[2], self.classes)
        writer.add_figure("val/activity", figure, self.current_epoch)

    def configure_optimizers(self):
        cfg = self.optimizer_config
        params = list(self.parameters())
        # torch's fused kernels (one pass per parameter instead of ~10 tensor ops; the same update up to float
        # rounding): 2.5x faster on CPU for the MLP, where they apply
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
        optimizer = OPTIMIZERS[cfg["name"]](
            params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0), fused=fused
        )
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        _warn_if_average_stays_near_init(cfg.get("ema_decay"), steps)
        if cfg.get("schedule", "none") == "none":
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["run_config"] = self.run_config


def _warn_if_average_stays_near_init(decay: float | None, steps: int) -> None:
    """The average starts at the initial weights and keeps decay**steps of them: too much of that random net
    makes a short run validate and test near chance (0.999 over 2 epochs of MNIST keeps 42 %)."""
    kept = decay**steps if decay else 0.0
    if kept > 0.01:
        needed = math.ceil(math.log(0.01) / math.log(decay))
        log.warning(
            f"optimizer.ema_decay={decay} over {steps} training steps: the averaged weights that are validated and "
            f"tested keep {kept:.0%} of the random initial ones at the end; use more steps (>= {needed}) or a smaller "
            "decay"
        )


def _best_of_older_checkpoints(state_dict, prefix, *args):
    """Checkpoints written before the best validation accuracy was stored start from no best, as they did."""
    state_dict.setdefault(f"{prefix}best_val_acc.max_value", torch.tensor(float("-inf")))
