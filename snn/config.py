"""Checks of the public config keys, run before anything is built, loaded or written: each group's object is built,
so its own constructor checks its values (snn.checks), and a refusal names the config key."""

import re

from omegaconf import DictConfig, OmegaConf

from snn.checks import ConfigError, InvalidValue, is_count, not_importable, require


def _built(cfg: DictConfig, group: str, build):
    """Build a group's object, so its constructor checks every value, and name a refused one by its config key."""
    from hydra.errors import InstantiationException

    try:
        return build()
    except (InstantiationException, InvalidValue, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        unknown = isinstance(cause, TypeError) and re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if unknown:  # e.g. experiment=smnist's ALIF keys with neuron=lif
            key, target = unknown.group(1), cfg[group].get("_target_")
            raise ConfigError(
                f"{group}.{key} is not allowed: {target} takes no {key} (a preset may set it for another {group}: "
                f"drop it with ~{group}.{key})"
            ) from None
        if isinstance(cause, ImportError):
            raise not_importable(group, cfg[group].get("_target_"), cause) from None
        if not isinstance(cause, InvalidValue):
            raise
        key = "T" if (group, cause.key) == ("encoder", "T") else f"{group}.{cause.key}"  # the encoder's T is ${T}
        raise ConfigError(f"{key}={cause.value!r} is not allowed: {cause.allowed}") from None


def validate(cfg: DictConfig) -> None:
    """Check every public key before anything is loaded or written, by building what the config describes."""
    from hydra.utils import instantiate
    from lightning_fabric.utilities.seed import max_seed_value, min_seed_value

    from snn.classifier import check_loss, check_optimizer
    from snn.memory import check_training

    seed = cfg.seed
    ok = is_count(seed, min_seed_value) and seed <= max_seed_value
    require(ok, "seed", seed, f"an integer in [{min_seed_value}, {max_seed_value}] (Lightning's seed range)")
    _built(cfg, "encoder", lambda: instantiate(cfg.encoder))
    _built(cfg, "neuron", lambda: instantiate(cfg.neuron)(shape=(1,)))  # a partial: each layer builds its own
    from snn.build import build_model, model_input_shape  # sized by the data module's class, as the encoder shows it

    net = _built(cfg, "model", lambda: build_model(cfg))
    _built(cfg, "data", lambda: instantiate(cfg.data))
    _built(cfg, "optimizer", lambda: check_optimizer(OmegaConf.to_container(cfg.optimizer, resolve=True)))
    _built(cfg, "loss", lambda: check_loss(OmegaConf.to_container(cfg.loss, resolve=True)))
    check_training(cfg, net, model_input_shape(cfg))  # before the run folder is made: T=100000 would not fit
