"""Gradient norms of a run config's network on real training batches: does backpropagation through its T steps
explode or vanish, before hours of training say so?

    python benchmarks/gradient_norms.py experiment=smnist --slopes 2 1 0.5
    python benchmarks/gradient_norms.py experiment=smnist neuron.slope=0.5 --steps 100 --clip 1

The arguments are train.py's overrides (composed the same way); each `--slopes` value sets neuron.slope. Printed per
slope: the loss and each parameter's gradient norm at initialisation, the median over `--batches` batches (the
initial weights are the same for all: the config's seed). `--steps N` then trains N steps with the config's
optimizer (Adam or AdamW or SGD at its lr; `--clip`: gradient norm clipping) and prints, every 5 steps, the loss, the
total gradient norm and each recurrent weight's spectral norm: where training drives the dynamics to explode."""

import argparse
import statistics

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from snn import CONF
from snn.build import build_classifier
from snn.classifier import OPTIMIZERS, grad_norm
from snn.recurrent import Recurrent


def measure(overrides: list[str], batches: int, steps: int, clip: float | None) -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(cfg.seed)
    module = build_classifier(cfg, {})
    data = instantiate(cfg.data)
    data.setup("fit")
    optimizer = OPTIMIZERS[cfg.optimizer.name](module.parameters(), lr=cfg.optimizer.lr)
    recurrent = [m for m in module.modules() if isinstance(m, Recurrent)]
    losses, grads = [], {name: [] for name, _ in module.named_parameters()}
    print(f"\n{' '.join(overrides)}")
    for i, (images, labels) in enumerate(data.train_dataloader()):
        if i == batches + steps:
            break
        module.zero_grad()
        loss = F.cross_entropy(module(images), labels)
        loss.backward()
        if i < batches:  # at initialisation: no step yet
            losses.append(loss.item())
            for name, p in module.named_parameters():
                grads[name].append(p.grad.norm().item() if p.grad is not None else 0.0)
            if i + 1 == batches:
                print(f"  at initialisation: loss {statistics.median(losses):.3f}")
                for name, g in grads.items():
                    print(f"    {name:40s} |grad| {statistics.median(g):.3g}")
            continue
        step, norm = i - batches, grad_norm(module.parameters())
        if step % 5 == 0 or not torch.isfinite(norm):
            spectral = " ".join(f"{torch.linalg.matrix_norm(m.weight.detach(), 2):.3f}" for m in recurrent)
            print(f"  step {step:4d}: loss {loss.item():.3f}, |grad| {norm:.3g}, recurrent ||W||_2 {spectral or '-'}")
        if not torch.isfinite(norm):
            print("  the gradient is no longer finite: stopped")
            break
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slopes", type=float, nargs="+", default=[None])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="then train this many steps, printing the norms")
    parser.add_argument("--clip", type=float, default=None, help="clip the total gradient norm to this while training")
    args, overrides = parser.parse_known_args()
    for slope in args.slopes:
        measure(overrides + ([] if slope is None else [f"neuron.slope={slope}"]), args.batches, args.steps, args.clip)


if __name__ == "__main__":
    main()
