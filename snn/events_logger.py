"""Lightning's TensorBoard logger, less the hparams.yaml it leaves beside the events file and its `epoch` scalar."""

from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class EventsLogger(TensorBoardLogger):
    """Writes TensorBoard's events file only. Lightning's `save` (after each epoch and at the end) also writes
    hparams.yaml from `log_hyperparams`, which this project never calls: the file was empty. A run's config is in
    .hydra/ and results.json, and the HParams tab reads its values from the events file."""

    @rank_zero_only
    def save(self) -> None:
        self.experiment.flush()

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Without Lightning's `epoch` counter: a step count, not a result, yet the scalars page's first card."""
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
