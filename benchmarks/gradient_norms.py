"""Gradient norms of a run config's network at initialisation, on real training batches: does backpropagation
through its T steps explode or vanish, before hours of training say so?

    python benchmarks/gradient_norms.py experiment=smnist --slopes 2 1 0.5

The arguments are train.py's overrides (composed the same way); each `--slopes` value sets neuron.slope. Printed per
slope: the loss and each parameter's gradient norm, the median over `--batches` batches (the net's initial weights
are the same for all: seed 42, or the seed given)."""

import argparse
import statistics

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from snn import CONF
from snn.build import build_classifier


def norms(overrides: list[str], batches: int) -> tuple[float, dict[str, float]]:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(cfg.seed)
    module = build_classifier(cfg, {})
    data = instantiate(cfg.data)
    data.setup("fit")
    losses, grads = [], {name: [] for name, _ in module.named_parameters()}
    for i, (images, labels) in enumerate(data.train_dataloader()):
        if i == batches:
            break
        module.zero_grad()
        loss = F.cross_entropy(module(images), labels)
        loss.backward()
        losses.append(loss.item())
        for name, p in module.named_parameters():
            grads[name].append(p.grad.norm().item() if p.grad is not None else 0.0)
    return statistics.median(losses), {name: statistics.median(g) for name, g in grads.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slopes", type=float, nargs="+", default=[None])
    parser.add_argument("--batches", type=int, default=3)
    args, overrides = parser.parse_known_args()
    for slope in args.slopes:
        extra = [] if slope is None else [f"neuron.slope={slope}"]
        loss, grads = norms(overrides + extra, args.batches)
        print(f"\n{' '.join(overrides + extra)}: loss {loss:.3f}")
        for name, value in grads.items():
            print(f"  {name:40s} |grad| {value:.3g}")


if __name__ == "__main__":
    main()
