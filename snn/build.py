"""What a run config builds: the data module class it names, the network sized by that data (nanoGPT-style: the
model reads its sizes from the data), and the LightningModule around them. Used by training, by validation before
a run starts, and by everything that rebuilds a run from its checkpoint."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from snn.checks import ConfigError, not_importable
from snn.classifier import Classifier


def data_class(cfg: DictConfig) -> type:
    """The data module class the run config names (every older run config names snn.data.MNISTDataModule). A stored
    config reaches here only after snn.checkpoints has refused any class that is not the project's."""
    target = cfg.data.get("_target_")
    try:  # a partial builds nothing; Hydra's get_class would log its own error line before ours
        found = instantiate({"_target_": target, "_partial_": True}).func
    except Exception as error:  # noqa: BLE001 - Hydra raises its own errors for a name it cannot import
        if isinstance(error.__cause__, ImportError):
            raise not_importable("data", target, error.__cause__) from None
        found = None
    if not isinstance(found, type) or not all(hasattr(found, k) for k in ("input_shape", "num_classes", "class_names")):
        raise ConfigError(
            f"data._target_={target!r} is not allowed: a data module class that says its input_shape, num_classes "
            "and class_names, e.g. snn.data.MNISTDataModule"
        )
    return found


def build_model(cfg: DictConfig) -> torch.nn.Module:
    """The network, sized by the data it is trained on (nanoGPT-style: the model reads its sizes from the data)."""
    data = data_class(cfg)
    return instantiate(cfg.model, input_shape=list(data.input_shape), num_classes=data.num_classes)


def build_classifier(cfg: DictConfig, choices: dict) -> Classifier:
    """The LightningModule of a run config; the config travels in every checkpoint so the run can be rebuilt."""
    net = build_model(cfg)
    encoder = instantiate(cfg.encoder) if net.spiking else None
    run_config = {"config": OmegaConf.to_container(cfg, resolve=True), "choices": choices}
    loss = OmegaConf.to_container(cfg.loss, resolve=True) if "loss" in cfg else {}  # older run configs have none
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    return Classifier(net, encoder, optimizer, run_config, loss, dataset=data_class(cfg))
