"""Training speed through `train.py` as a user runs it, against the snnTorch loop stepped inside the same run.

    python benchmarks/cli_throughput.py model=snn trainer.precision=bf16-mixed trainer.max_epochs=1 \
        trainer.limit_train_batches=400 trainer.enable_progress_bar=false

The arguments go to train.py unchanged. A passive callback times the training batches from one batch's end to the
next (data, Lightning's hooks, logging and the progress bar included), and every `--every` batches it steps the
snnTorch loop of benchmarks/throughput.py three times on the current batch with the training clock paused, so that
both share the machine's state of the moment. Printed: each side's samples/s and the median over rounds of the
ratio of the batches since the previous round to that round's snnTorch steps."""

import os
import runpy
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback

import snn.progress

sys.path.insert(0, os.path.dirname(__file__))
from mlp_nets import SnntorchLoop  # noqa: E402

WARM_UP, SNNTORCH_STEPS = 20, 3


class InterleavedTimer(Callback):
    def __init__(self, every: int, T: int, hidden: int):
        self.every, self.T, self.hidden = every, T, hidden
        self.batches, self.mark, self.ours, self.rounds = 0, None, [], []  # ours: (samples, seconds) since a round
        self.reference = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.mark = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.batches += 1
        if self.batches > WARM_UP and self.mark is not None:
            self.ours.append((len(batch[1]), now - self.mark))
        if self.batches > WARM_UP and self.batches % self.every == 0:
            self.round(batch)
        self.mark = time.perf_counter()

    def round(self, batch):
        images, labels = batch
        if self.reference is None:
            torch.manual_seed(0)
            self.reference = SnntorchLoop(self.T, self.hidden, False)
            self.optimizer = torch.optim.Adam(self.reference.parameters(), lr=1e-3)  # as its tutorial
            self.step(images, labels)  # warm-up
        start = time.perf_counter()
        for _ in range(SNNTORCH_STEPS):
            self.step(images, labels)
        theirs = SNNTORCH_STEPS * len(labels) / (time.perf_counter() - start)
        samples, seconds = map(sum, zip(*self.ours[-self.every :]))
        self.rounds.append((samples / seconds, theirs))

    def step(self, images, labels):
        with torch.autocast("cpu", enabled=False), torch.enable_grad():
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.reference(images.float()), labels).backward()
            self.optimizer.step()

    def on_train_end(self, trainer, pl_module):
        samples, seconds = map(sum, zip(*self.ours))
        ours, theirs = samples / seconds, statistics.median(t for _, t in self.rounds)
        ratio = statistics.median(o / t for o, t in self.rounds)
        print(
            f"\ntrain.py: {ours:,.0f} samples/s over {len(self.ours)} batches after {WARM_UP} warm-up; snnTorch loop: "
            f"{theirs:,.0f} samples/s (median of {len(self.rounds)} rounds); ratio, median over rounds: {ratio:.2f}x "
            f"(threads: {torch.get_num_threads()})",
            flush=True,
        )


def main():
    every = int(os.environ.get("EVERY", "25"))
    args = sys.argv[1:]
    T = int(next((a.split("=", 1)[1] for a in args if a.startswith("T=")), 25))
    timer = InterleavedTimer(every, T, hidden=1000)
    original = snn.progress.progress_callbacks
    snn.progress.progress_callbacks = lambda progress_bar: [*original(progress_bar), timer]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    sys.argv = ["train.py", *args]
    runpy.run_path(os.path.join(root, "train.py"), run_name="__main__")


if __name__ == "__main__":
    main()
