"""What a run config builds: the data module class it names, the network sized by that data (nanoGPT-style: the
model reads its sizes from the data), and the LightningModule around them. Used by training, by validation before
a run starts, and by everything that rebuilds a run from its checkpoint."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from snn.checks import ConfigError, not_importable
from snn.classifier import Classifier


def _class_of(group: str, target) -> type | None:
    """The class a `_target_` names, imported without building anything (a partial); None if it names no class.
    Hydra's get_class would log its own error line before ours."""
    try:
        found = instantiate({"_target_": target, "_partial_": True}).func
    except Exception as error:  # noqa: BLE001 - Hydra raises its own errors for a name it cannot import
        if isinstance(error.__cause__, ImportError):
            raise not_importable(group, target, error.__cause__) from None
        return None
    return found if isinstance(found, type) else None


def data_class(cfg: DictConfig) -> type:
    """The data module class the run config names (every older run config names snn.data.MNISTDataModule). A stored
    config reaches here only after snn.checkpoints has refused any class that is not the project's."""
    target = cfg.data.get("_target_")
    found = _class_of("data", target)
    if found is None or not all(hasattr(found, k) for k in ("input_shape", "num_classes", "class_names")):
        raise ConfigError(
            f"data._target_={target!r} is not allowed: a data module class that says its input_shape, num_classes "
            "and class_names, e.g. snn.data.MNISTDataModule"
        )
    return found


def step_shape(encoder, input_shape) -> tuple[int, ...]:
    """What a spiking net sees of one sample at one step: the encoder says (snn.encoders.Encoder.output_shape); an
    encoder of the user's own without that method passes the image's shape on, as every encoder did before it."""
    shape = getattr(encoder, "output_shape", None)
    return tuple(shape(tuple(input_shape))) if callable(shape) else tuple(input_shape)


def model_input_shape(cfg: DictConfig) -> tuple[int, ...]:
    """The per-step input shape the run's model is built for: the encoder's output for spiking models, the data's
    image for the ANN baselines (which see no encoder). A T that does not fit the encoder is refused here."""
    shape = tuple(data_class(cfg).input_shape)
    model = _class_of("model", cfg.model.get("_target_"))
    if model is not None and not getattr(model, "spiking", True):
        return shape
    return step_shape(instantiate(cfg.encoder), shape)


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The network, sized by the data it is trained on (nanoGPT-style: the model reads its sizes from the data) as
    the encoder presents it: a spiking net's input is one step of the encoder's output."""
    return instantiate(cfg.model, input_shape=list(model_input_shape(cfg)), num_classes=data_class(cfg).num_classes)


def build_classifier(cfg: DictConfig, choices: dict) -> Classifier:
    """The LightningModule of a run config; the config travels in every checkpoint so the run can be rebuilt."""
    net = build_model(cfg)
    encoder = instantiate(cfg.encoder) if net.spiking else None
    run_config = {"config": OmegaConf.to_container(cfg, resolve=True), "choices": choices}
    loss = OmegaConf.to_container(cfg.loss, resolve=True) if "loss" in cfg else {}  # older run configs have none
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    return Classifier(net, encoder, optimizer, run_config, loss, dataset=data_class(cfg))
