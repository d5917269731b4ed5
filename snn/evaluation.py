"""Evaluate a checkpoint: the test set through Lightning's test loop (accuracy, per-class accuracy, confusion
matrix, spike statistics), or single images (prediction, scores, inference figure)."""

import json
import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from snn.build import build_classifier, step_shape
from snn.checkpoints import CheckpointError, read_checkpoint
from snn.checks import ConfigError
from snn.classifier import Classifier
from snn.config import validate
from snn.digits import image_files, load_digit
from snn.memory import check_evaluation
from snn.plots import confusion_figure, inference_figure, save
from snn.run_identity import identity

log = logging.getLogger(__name__)


def load_classifier(path: str | Path, T: int | None = None, config_folders=()) -> tuple[Classifier, DictConfig]:
    """Rebuild the trained model from the run config stored in its checkpoint; `T` overrides the time steps.
    `config_folders`: the user's own config folders given on this command line (see snn.checkpoints)."""
    checkpoint = read_checkpoint(path, config_folders)
    cfg = OmegaConf.create(checkpoint["run_config"]["config"])
    if T is not None:
        cfg.T = cfg.encoder.T = T
        validate(cfg)
    module = build_classifier(cfg, checkpoint["run_config"].get("choices", {}))
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(error).splitlines()[0]})") from None
    return module.eval(), cfg


def load_nir_classifier(
    path: str | Path, T: int | None, encoder: DictConfig | None, config_folders=()
) -> tuple[Classifier, dict]:
    """A NIR graph made anywhere, fed by `encoder` over `T` steps; both default to what its metadata records
    (graphs exported here record them). Returns the module and what evaluate.py reports of it."""
    from hydra.utils import instantiate

    from snn.nir_import import load_nir

    net, info = load_nir(path, config_folders)  # checks the metadata: an encoder of the config groups, plain values
    T = T or info["T"]
    if T is None:
        raise ConfigError(f"{path}: its metadata records no T; give one: T=<time steps>")
    if encoder is not None:  # the user's own config group
        built = instantiate(OmegaConf.merge(encoder, {"T": T}))
    elif info["encoder"] is not None:
        cls, kwargs = info["encoder"]
        built = cls(T=T, **kwargs)
    else:
        raise ConfigError(f"{path}: its metadata names no encoder; give one: encoder=rate|latency|direct")
    module = Classifier(net, built, {}, dataset=info["data"])
    encoder_name = type(built).__name__.removesuffix("Encoder").lower()
    described = {
        "data": info["metadata"].get("data", "mnist"),  # checked by load_nir
        "model": "nir",
        "neuron": "from the graph",
        "encoder": encoder_name,
        "T": int(T),
        "precision": "32-true",
    }
    return module.eval(), described


def load_model(
    path: str | Path, T: int | None, encoder: DictConfig | None, batch: int = 1, config_folders=()
) -> tuple[Classifier, dict]:
    """A checkpoint of train.py or a .nir graph, and the choices a reader of the evaluation needs (as training's
    results.json records them: baselines with T=1 and no encoder; the precision it was trained and tested in).
    `batch`: the images it will see at once; a T whose activity cannot fit in memory for it is refused."""
    if str(path).endswith(".nir"):
        module, described = load_nir_classifier(path, T, encoder, config_folders)
    else:
        if encoder is not None:
            raise ConfigError("encoder= is for .nir graphs: a checkpoint's encoder comes from its run config")
        module, cfg = load_classifier(path, T, config_folders)
        run = identity(OmegaConf.to_container(cfg, resolve=True), module.run_config.get("choices", {}), module.spiking)
        described = {  # as results.json records them: baselines with T=1 and no neuron or encoder
            "data": run.get("data") or "mnist",  # runs from before the data group trained on MNIST
            "model": run.get("model", "?"),
            "neuron": run.get("neuron", "none"),
            "encoder": run.get("encoder", "none"),
            "T": run.get("T", 1),
            "precision": str(run.get("trainer.precision", "32-true")),
        }
    if module.spiking:
        shape = step_shape(module.encoder, module.dataset.input_shape)  # a T that does not fit it: refused here
        check_evaluation(path, int(described["T"]), batch, shape, module.net)
    return module, {
        "checkpoint": str(path),
        **{key: described[key] for key in ("data", "model", "neuron", "encoder", "T", "precision")},
    }


def default_repeats(module: Classifier) -> int:
    """Passes over the test set: 5 for random input encodings (a sample std from 5 differs from the true one by
    about a third; each pass costs the same as the first), 1 for deterministic inputs, where repeats agree."""
    return 5 if getattr(module.encoder, "stochastic", False) else 1


def evaluate_test_set(
    module: Classifier,
    data_root: str,
    batch_size: int,
    out_dir: Path,
    repeats: int,
    seed: int,
    precision="32-true",
    download: bool = True,
):
    """Lightning's test loop (on a GPU where there is one), `repeats` times with encoder seeds seed, seed+1, ...:
    metrics as the mean over repeats, test/acc with its sample std, per-class accuracy over all repeats, and the
    confusion matrix of the first pass (encoder seed `seed`): counts that add up to the test set, as its title says.
    `precision`: Lightning's, as in training (a bf16-mixed run is tested under bf16 autocast there, so here too).
    The test set is that of the dataset the model was trained on (its data module class, `module.dataset`)."""
    data = module.dataset(root=data_root, batch_size=batch_size, download=download)
    trainer = pl.Trainer(accelerator="auto", devices=1, precision=precision, logger=False, enable_model_summary=False)
    passes, matrices = [], []
    for i in range(repeats):
        torch.manual_seed(seed + i)
        if repeats > 1:  # each pass draws its own progress bar: say which one it is
            log.info("test pass %d of %d (encoder seed %d)", i + 1, repeats, seed + i)
        passes.append(trainer.test(module, datamodule=data, verbose=False)[0])
        matrices.append(module.confusion_matrix)
    metrics = {key: sum(p[key] for p in passes) / repeats for key in passes[0]}
    accuracies = [p["test/acc"] for p in passes]
    spread = math.sqrt(sum((a - metrics["test/acc"]) ** 2 for a in accuracies) / (repeats - 1)) if repeats > 1 else None
    pooled = torch.stack(matrices).sum(0)
    per_class = (pooled.diag() / pooled.sum(1).clamp_min(1)).tolist()
    confusion = matrices[0]
    title = "confusion matrix (test set" + (f", pass 1 of {repeats}: encoder seed {seed})" if repeats > 1 else ")")
    save(confusion_figure(confusion, module.classes, title), out_dir / "confusion_matrix.png")
    return {
        "repeats": repeats,
        "encoder_seeds": list(range(seed, seed + repeats)),
        "test/acc": metrics.pop("test/acc"),
        "test/acc_std": spread,
        "test/acc_per_repeat": accuracies,
        **metrics,
        "per_class_acc": {name: round(a, 4) for name, a in zip(module.classes, per_class)},
        "confusion_matrix": confusion.tolist(),
        "confusion_matrix_encoder_seed": seed,
    }


def scores_of(logits: torch.Tensor, counts: bool) -> dict:
    """What a reader can interpret: spike counts with each class's share of the output spikes (a softmax of raw
    counts saturates at 1.000), or for other readouts the softmax probabilities."""
    if not counts:
        return {"softmax_probabilities": [round(p, 4) for p in F.softmax(logits, dim=0).tolist()]}
    spikes = [int(c) for c in logits.tolist()]
    total = sum(spikes)
    return {"spike_counts": spikes, "spike_share": [round(c / total, 4) if total else 0.0 for c in spikes]}


@torch.no_grad()
def classify(module: Classifier, image: torch.Tensor, out_png: Path, label: int | None = None, title: str = "") -> dict:
    """Predict one image (`[C, H, W]`, the data module's input shape) and draw what the network did."""
    logits, trace = module(image.unsqueeze(0), trace=True)
    prediction = int(logits[0].argmax())
    counts = module.spiking and module.net.readout == "spike_count"
    probabilities = F.softmax(logits[0], dim=0)
    scores, name = (logits[0], "output spike counts") if counts else (probabilities, "softmax probability")
    threshold = module.net.output_threshold if module.spiking else None  # SpikingLayer's declared attribute
    trace = trace if module.spiking else None
    figure = inference_figure(image, scores, prediction, name, trace, threshold, label, title, classes=module.classes)
    save(figure, out_png)
    result = {"prediction": prediction, "class": module.classes[prediction], **scores_of(logits[0], counts)}
    result["figure"] = str(out_png)
    if label is not None:
        result["label"], result["label_class"] = label, module.classes[label]
    return result


def figure_name(image: Path) -> str:
    """`seven.png` -> `seven_png.png`: named by the whole file name, so that `seven.jpg` beside it keeps its own."""
    return f"{image.stem}_{image.suffix[1:]}.png" if image.suffix else f"{image.name}.png"


def classify_files(module: Classifier, path: Path, out_dir: Path) -> list[dict]:
    files = image_files(path)
    digits = [load_digit(f) for f in files]  # all read first: a bad file stops the run before anything is written
    return [
        {"image": str(f), **classify(module, d, out_dir / figure_name(f), title=f.name)} for f, d in zip(files, digits)
    ]


def classify_test_sample(
    module: Classifier, data_root: str, sample, out_dir: Path, seed: int, download: bool = True
) -> list[dict]:
    """One image of the test set of the dataset the model was trained on."""
    data = module.dataset(root=data_root, download=download)
    data.setup("test")
    images, labels = data.test_dataloader().dataset.tensors
    if sample == "random":
        index = int(torch.randint(len(labels), (1,), generator=torch.Generator().manual_seed(seed)))
    elif isinstance(sample, int) and not isinstance(sample, bool) and 0 <= sample < len(labels):
        index = sample
    else:
        raise ConfigError(f"sample={sample!r} is not allowed: 'random' or a test-set index in [0, {len(labels) - 1}]")
    result = classify(module, images[index], out_dir / f"test_{index}.png", int(labels[index]), f"test image {index}")
    return [{"image": f"test[{index}]", **result}]


def _named(index: int, name: str | None) -> str:
    """`3` for MNIST's class "3"; `9 "Ankle boot"` where the class has a name of its own (Fashion-MNIST)."""
    return str(index) if name in (None, str(index)) else f'{index} "{name}"'


def prediction_line(result: dict) -> str:
    truth = f" (true {_named(result['label'], result.get('label_class'))})" if "label" in result else ""
    chosen = result["prediction"]
    if "spike_counts" in result:
        spikes = result["spike_counts"]
        score = f"spike share {result['spike_share'][chosen]:.3f} ({spikes[chosen]} of {sum(spikes)} output spikes)"
        score += f"  spike counts {spikes}"
    else:
        score = f"softmax probability {result['softmax_probabilities'][chosen]:.3f}"
    return f"{result['image']}: predicted {_named(chosen, result.get('class'))}{truth}  {score}"


def test_set_summary(metrics: dict) -> str:
    lines = [
        f"{'model':<10}{metrics['model']}  neuron={metrics['neuron']} encoder={metrics['encoder']} T={metrics['T']}"
    ]
    spread = ""
    if metrics["repeats"] > 1:
        spread = f" ± {metrics['test/acc_std']:.4f} (sample std over {metrics['repeats']} encoder seeds)"
    lines.append(f"{'test/acc':<28}{metrics['test/acc']:.4f}{spread}")
    for key, value in metrics.items():
        if key.startswith("test/") and isinstance(value, float) and key not in ("test/acc", "test/acc_std"):
            lines.append(f"{key:<28}{value:.4f}" if value < 1e4 else f"{key:<28}{value:,.0f}")
    lines.append("per-class acc  " + "  ".join(f"{d}:{a:.3f}" for d, a in metrics["per_class_acc"].items()))
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
