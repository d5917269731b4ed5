"""Evaluate a checkpoint: the test set (accuracy, per-class accuracy, confusion matrix, spike statistics),
or single images (prediction, scores, inference figure)."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from snn.classifier import Classifier
from snn.config import ConfigError, validate
from snn.data import load_mnist
from snn.digits import image_files, load_digit
from snn.plots import confusion_figure, inference_figure, save
from snn.spike_stats import SpikeStats
from snn.training import describe


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not from this project."""


def load_classifier(path: str | Path, T: int | None = None) -> tuple[Classifier, DictConfig]:
    """Rebuild the trained model from the run config stored in its checkpoint; `T` overrides the time steps."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not (checkpoint.get("run_config") or {}).get("config"):
        raise CheckpointError(f"{path}: not a checkpoint written by train.py (it holds no run config)")
    cfg = OmegaConf.create(checkpoint["run_config"]["config"])
    if T is not None:
        cfg.T = cfg.encoder.T = T
        validate(cfg)
    net = instantiate(cfg.model)
    encoder = instantiate(cfg.encoder) if getattr(net, "spiking", False) else None
    module = Classifier(net, encoder, cfg.optimizer, checkpoint["run_config"])
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(error).splitlines()[0]})") from None
    return module.eval(), cfg


def describe_model(module: Classifier, cfg: DictConfig, choices: dict) -> dict:
    """The comparable choices of training's results.json (baselines: T=1, no encoder) that a reader needs here."""
    described = describe(cfg, choices, module.spiking)
    return {key: described[key] for key in ("model", "neuron", "encoder", "T")}


@torch.no_grad()
def evaluate_test_set(module: Classifier, data_root: str, batch_size: int, out_dir: Path) -> dict:
    images, labels = load_mnist(data_root, train=False)
    stats, confusion, loss = SpikeStats(module.net), torch.zeros(10, 10, dtype=torch.long), 0.0
    for start in tqdm(range(0, len(labels), batch_size), desc="test set", unit="batch"):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        logits, trace = module(x, trace=True)
        stats.update(trace)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        confusion += torch.bincount(y * 10 + logits.argmax(1), minlength=100).view(10, 10)
    per_class = (confusion.diag() / confusion.sum(1).clamp_min(1)).tolist()
    save(confusion_figure(confusion), out_dir / "confusion_matrix.png")
    return {
        "test/acc": float(confusion.diag().sum() / confusion.sum()),
        "test/loss": loss / len(labels),
        "per_class_acc": {str(d): round(a, 4) for d, a in enumerate(per_class)},
        **{f"test/{k}": v for k, v in stats.compute().items()},
        "confusion_matrix": confusion.tolist(),
    }


@torch.no_grad()
def classify(module: Classifier, image: torch.Tensor, out_png: Path, label: int | None = None, title: str = "") -> dict:
    """Predict one `[1, 28, 28]` image and draw what the network did."""
    logits, trace = module(image.unsqueeze(0), trace=True)
    probabilities = F.softmax(logits[0], dim=0)
    prediction = int(logits[0].argmax())
    counts = module.spiking and module.net.readout == "spike_count"
    scores, name = (logits[0], "output spike counts") if counts else (probabilities, "probability")
    threshold = getattr(module.net.neurons[-1], "threshold", None) if module.spiking else None
    figure = inference_figure(
        image, scores, prediction, name, trace if module.spiking else None, threshold, label, title
    )
    save(figure, out_png)
    result = {
        "prediction": prediction,
        "probabilities": [round(p, 4) for p in probabilities.tolist()],
        "figure": str(out_png),
    }
    if counts:
        result["spike_counts"] = [int(c) for c in logits[0].tolist()]
    if label is not None:
        result["label"] = label
    return result


def classify_files(module: Classifier, path: Path, out_dir: Path) -> list[dict]:
    files = image_files(path)
    digits = [load_digit(f) for f in files]  # all read first: a bad file stops the run before anything is written
    return [
        {"image": str(f), **classify(module, d, out_dir / f"{f.stem}.png", title=f.name)} for f, d in zip(files, digits)
    ]


def classify_test_sample(module: Classifier, data_root: str, sample, out_dir: Path, seed: int) -> list[dict]:
    images, labels = load_mnist(data_root, train=False)
    if sample == "random":
        index = int(torch.randint(len(labels), (1,), generator=torch.Generator().manual_seed(seed)))
    elif isinstance(sample, int) and not isinstance(sample, bool) and 0 <= sample < len(labels):
        index = sample
    else:
        raise ConfigError(f"sample={sample!r} is not allowed: 'random' or a test-set index in [0, {len(labels) - 1}]")
    result = classify(module, images[index], out_dir / f"test_{index}.png", int(labels[index]), f"test image {index}")
    return [{"image": f"test[{index}]", **result}]


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
