"""Progress of the whole run: epoch k of N and the run's time left, on the bar (and in train.log)."""

import itertools
import re

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.callbacks import Callback

from snn.build import build_classifier
from snn.progress import RunClock
from tests.conftest import TINY, train_tiny
from tests.test_runs import _train


class Probe(Callback):
    """Reads the clock's estimate after each training batch (after the clock has counted it)."""

    def __init__(self, clock: RunClock):
        self.clock, self.seen = clock, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch_idx, self.clock.remaining(trainer), self.clock.epoch(trainer)))


def test_time_left_is_the_time_per_batch_times_the_batches_left_in_the_run(compose_cfg):
    cfg = compose_cfg("T=2")
    clock = RunClock(clock=itertools.count().__next__)  # each reading one second later: every batch takes 1 s
    probe = Probe(clock)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[clock, probe], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(build_classifier(cfg, {}), datamodule=instantiate(cfg.data))
    # The tiny data: 80 training images in 5 batches of 16, 16 validation images in one batch, per epoch.
    expected = [(e, b, (5 - b - 1) + 1 + (3 - e - 1) * (5 + 1), f"{e + 1}/3") for e in range(3) for b in range(5)]
    assert probe.seen == expected
    assert expected[0][2] == 17 and expected[-1][2] == 1  # the last: the final validation batch still to come


def test_the_bar_shows_epoch_k_of_n_and_the_runs_time_left(tmp_path, mnist_root, capsys):
    train_tiny(tmp_path / "run", mnist_root, "T=2", "trainer.max_epochs=2", "trainer.enable_progress_bar=true")
    out = capsys.readouterr().out
    descriptions = set(re.findall(r"Epoch \S+ \(run: [^)]*\)|Epoch \d+(?=: )", out))  # ours, or Lightning's
    assert "Epoch 1/2 (run: --:-- left)" in descriptions  # at the start, before a batch is measured
    assert any(re.fullmatch(r"Epoch 2/2 \(run: \d\d:\d\d left\)", d) for d in descriptions), descriptions
    assert all(re.fullmatch(r"Epoch [12]/2 \(run: (--:--|\d\d:\d\d) left\)", d) for d in descriptions), descriptions


@pytest.mark.slow
def test_train_log_has_a_line_per_epoch_and_the_final_line(tmp_path, mnist_root):
    run = tmp_path / "outputs" / "logged"
    args = [f"data.root={mnist_root}", *TINY, "T=2", "trainer.max_epochs=2", f"hydra.run.dir={run}"]
    result = _train(*args, "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    final = result.stdout.strip().splitlines()[-1]
    assert final.startswith("test/acc=") and final.endswith(" run=outputs/logged")
    lines = [line.split("][snn.train_log][INFO] - ", 1)[-1] for line in (run / "train.log").read_text().splitlines()]
    epoch = r"train loss \d\.\d{4} acc \d\.\d{4}, val loss \d\.\d{4} acc \d\.\d{4}; \d\d:\d\d elapsed, \d\d:\d\d left"
    assert [line for line in lines if line.startswith("epoch ")] == lines[-3:-1], lines
    assert re.fullmatch(f"epoch 1/2: {epoch}", lines[-3]) and re.fullmatch(f"epoch 2/2: {epoch}", lines[-2]), lines
    assert lines[-2].endswith(", 00:00 left")  # nothing left after the last epoch
    assert lines[-1] == final  # the same line train.py prints
    assert "epoch 1/2" not in result.stdout  # the console has the progress bar; these lines are for the log
