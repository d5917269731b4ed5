"""Keys a run lacks because it ran before they existed (`model.recurrent` before recurrent layers), read as their
default today: conf/ composed with the run's own group choices. So a report neither splits one configuration in two
nor names configurations by a key that only the newer runs record."""

from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from snn.run_identity import identity_of

CONF = Path(__file__).resolve().parents[1] / "conf"
ABSENT = object()


@cache
def _composed(choices: tuple[tuple[str, str], ...]):
    """conf/config.yaml with these group choices, or None where they no longer compose (an option since removed)."""
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            return compose("config", overrides=[f"{group}={choice}" for group, choice in choices])
    except Exception:  # hydra and omegaconf raise several kinds; such a run keeps only the keys it recorded
        return None


def default_of(run: dict, key: str):
    """Today's default of `key` (`model.recurrent`) for this run's group choices; ABSENT where there is none."""
    choices = run.get("choices") or {}
    cfg = _composed(tuple(sorted((g, c) for g, c in choices.items() if isinstance(c, str) and "/" not in g)))
    try:
        value = ABSENT if cfg is None else OmegaConf.select(cfg, key, default=ABSENT)
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except Exception:  # an interpolation that only resolves inside a Hydra run
        return ABSENT
    return ABSENT if isinstance(value, dict) else value  # a whole group is not one key


def fill_absent(runs: list[dict]) -> list[str]:
    """Give every run that recorded its whole config the keys of its groups that only other runs record, at their
    default; a note naming them (runs that recorded less, or no such group, are left as they are)."""
    recorded = [run for run in runs if "config" in run]
    keys = dict.fromkeys(k for run in recorded for k in identity_of(run) if "." in k)
    filled = set()
    for run in recorded:
        groups = {k.split(".")[0] for k in identity_of(run) if "." in k}  # an ANN has no neuron keys to fill
        for key in keys:
            if key not in run and key.split(".")[0] in groups and (value := default_of(run, key)) is not ABSENT:
                run[key] = value
                filled.add(key)
    return [f"note: runs from before {key} existed read it as today's default" for key in sorted(filled)]
