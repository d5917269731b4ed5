"""Checks of the public config keys, run before anything is built, loaded or written: each group's object is built,
so its own constructor checks its values (snn.checks), and a refusal names the config key."""

import importlib
import inspect

from omegaconf import DictConfig, OmegaConf

from snn.checks import ConfigError, InvalidValue, is_count, not_importable, require


def _check_keys(cfg: DictConfig, group: str) -> None:
    """Each key of a group with a `_target_` must be a parameter of that target (e.g. experiment=smnist's ALIF keys
    with neuron=lif): read off its signature, before anything is built."""
    target = cfg[group].get("_target_")
    if not isinstance(target, str):
        return
    module, _, name = target.rpartition(".")
    try:  # importlib, not hydra's get_object, which logs an error line of its own on failure
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except Exception:  # not importable, no signature: building it says why
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in cfg[group] if not key.startswith("_") and key not in parameters]
    if unknown:
        keys, drop = ", ".join(f"{group}.{k}" for k in unknown), " ".join(f"'~{group}.{k}'" for k in unknown)
        verb, it = ("is", "it") if len(unknown) == 1 else ("are", "them")
        raise ConfigError(
            f"{keys} {verb} not allowed: {target} takes no {', '.join(unknown)} (a preset may set {it} for another "
            f"{group}: drop {it} with {drop})"
        )


def _built(cfg: DictConfig, group: str, build):
    """Build a group's object, so its constructor checks every value, and name a refused one by its config key."""
    from hydra.errors import InstantiationException

    if isinstance(cfg.get(group), DictConfig):
        _check_keys(cfg, group)
    try:
        return build()
    except (InstantiationException, InvalidValue) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
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
