"""Keys a run lacks because it ran before they existed (`model.recurrent` before recurrent layers), read as their
default today: conf/ composed with the run's own group choices. So a report neither splits one configuration in two
nor names configurations by a key that only the newer runs record.

A results.json is data: its choices are used only where they name an option file of conf/, and a default that is an
interpolation (`${T}`, `${oc.env:…}`) is not resolved, so nothing it holds reaches Hydra's override parser or the
environment."""

import re
from functools import cache

from snn import CONF
from snn.run_identity import identity_of

ABSENT = object()
NAME = re.compile(r"\w+")


def _choices(run: dict) -> tuple[tuple[str, str], ...] | None:
    """The run's group choices, each an option file of conf/; None where one is not (a user's own, or since removed:
    no default of today's describes that run)."""
    choices = run.get("choices")
    if not isinstance(choices, dict):
        return None
    picked = []
    for group, choice in choices.items():
        if "/" in group or choice is None:
            continue  # Hydra's own groups (hydra/launcher), and groups left unset (baseline: null)
        named = isinstance(choice, str) and NAME.fullmatch(group) and NAME.fullmatch(choice)
        if not (named and (CONF / group / f"{choice}.yaml").is_file()):
            return None
        picked.append((group, choice))
    return tuple(sorted(picked))


@cache
def _defaults(choices: tuple[tuple[str, str], ...]) -> dict | None:
    """conf/config.yaml with these group choices, unresolved; None where they no longer compose."""
    from hydra import compose, initialize_config_dir  # here: reports of runs that lack no key never import Hydra
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            return OmegaConf.to_container(compose("config", overrides=[f"{g}={c}" for g, c in choices]))
    except Exception:  # hydra and omegaconf raise several kinds; such a run keeps only the keys it recorded
        return None


def default_of(run: dict, key: str):
    """Today's default of `key` (`model.recurrent`) for this run's group choices; ABSENT where there is none."""
    choices = _choices(run)
    node = None if choices is None else _defaults(choices)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    interpolation = isinstance(node, str) and "${" in node
    return ABSENT if interpolation or isinstance(node, dict) else node  # a whole group is not one key


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
