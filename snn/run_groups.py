"""The runs below a folder, read from their results.json and grouped into configurations repeated over seeds."""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from snn.absent_keys import fill_absent
from snn.run_identity import identity_of
from snn.uncertainty import Summary, summarize

# results.json files from before the whole config was recorded hold a fixed set of choices at their top level; the
# others were added to it later, and a file without one ran without the feature (on MNIST, before the data group).
LEGACY_DEFAULTS = {"label_smoothing": 0.0, "ema_decay": 0.0, "data": "mnist"}


class SelectionError(ValueError):
    """A --reference selector that does not pick exactly one configuration."""


def all_keys(keys: list[dict]) -> list[str]:
    """Every key of these configurations, in the order they first appear."""
    return list(dict.fromkeys(k for key in keys for k in key))


def differing_keys(keys: list[dict]) -> list[str]:
    """The keys on which these configurations do not all agree."""
    return [k for k in all_keys(keys) if len({json.dumps(key.get(k)) for key in keys}) > 1]


def is_class_path(key: str) -> bool:
    """`neuron._target_`: says again what the group choice (`neuron`) says, in a longer way."""
    return key.endswith(("._target_", "._partial_"))


def naming_keys(keys: list[dict], leave_out: tuple[str, ...] = ()) -> list[str]:
    """Differing keys that tell these (distinct) keys apart, in order, each kept only if it splits configurations the
    keys before it left together: short labels, without keys that merely repeat another's split."""
    differing = [k for k in differing_keys(keys) if k not in leave_out and not is_class_path(k)]
    names: list[str] = []
    groups = 1
    for k in differing:
        split = len({json.dumps([key.get(n) for n in [*names, k]]) for key in keys})
        if split > groups:
            names, groups = [*names, k], split
        if groups == len(keys):
            break
    return names


def label(key: dict, names: list[str]) -> str:
    """`name=value,...`: also a selector that picks what it labels (see select)."""
    return ",".join(f"{k}={key.get(k)}" for k in names) or f"model={key.get('model')}"


@dataclass
class Configuration:
    key: dict  # the identity all its runs share (snn.run_identity)
    runs: list[dict]
    names: list[str] = field(default_factory=list)  # the keys that name it among the other configurations

    @property
    def label(self) -> str:
        return label(self.key, self.names)

    def values(self, metric: str) -> list[float]:
        return [run[metric] for run in self.runs if run.get(metric) is not None]

    @property
    def test_acc(self) -> Summary:
        return summarize(self.values("test/acc"))


# What the report computes with must be a number: the metrics and these counts (it sorts and plots by T). The other
# keys are the run's identity, compared as they are: any JSON value, null included.
INTEGER_KEYS = ("T", "epochs", "seed")
MAX_BYTES = 10 << 20  # results.json is a few kB; anything near this is not one


def _kind(key: str) -> tuple[str, tuple[type, ...]]:
    return ("an integer", (int,)) if key in INTEGER_KEYS else ("a number", (int, float))


def read_result(path: Path) -> tuple[dict, list[str]]:
    """One results.json as data: the values the report computes with checked to be numbers. NaN and infinities
    (json accepts them, older runs wrote them) become missing values, named in the returned notes. ValueError: not
    usable."""
    if not path.is_file():  # reading a FIFO would block
        raise ValueError("not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path.stat().st_size:,} bytes, larger than any results.json (at most {MAX_BYTES:,})")
    non_finite = object()
    try:
        result = json.loads(path.read_text(), parse_constant=lambda name: non_finite)
    except RecursionError:
        raise ValueError("nested too deeply to be a results.json") from None
    if not isinstance(result, dict):
        raise ValueError(f"a JSON {type(result).__name__}, not an object")
    missing = [k for k, v in result.items() if v is non_finite or (isinstance(v, float) and not math.isfinite(v))]
    result.update(dict.fromkeys(missing, None))
    metrics = [key for key in result if key.startswith("test/")]  # all numbers, as the report reads them
    checked = (*INTEGER_KEYS, "test/acc", *metrics, "val/acc_best", "wall_time_s")
    for key in dict.fromkeys(checked):
        kind, types = _kind(key)
        value = result.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise ValueError(f"{key} is {json.dumps(value)[:40]}, expected {kind}")
    if result.get("test/acc") is None:
        raise ValueError("test/acc is NaN or infinite" if "test/acc" in missing else "no test/acc")
    notes = [f"note: {path}: {', '.join(missing)} not finite (NaN or infinity): read as missing"] if missing else []
    return result, notes


def load_results(folder: Path) -> tuple[list[dict], list[str]]:
    """Every usable results.json below the folder, and one message for each that is not or has missing values."""
    runs, problems = [], []
    for path in sorted(folder.rglob("results.json")):
        try:
            result, notes = read_result(path)
        except (OSError, ValueError) as error:
            problems.append(f"skipped {path}: {type(error).__name__}: {error}")
            continue
        problems += notes
        missing = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in result and "config" not in result}
        runs.append({**result, **missing, "run_dir": str(path.parent)})
    problems += fill_absent(runs)
    order = {"ann": 0, "cnn": 1}
    runs.sort(
        key=lambda r: (
            order.get(r.get("model"), 2),
            str(r.get("model")),
            str(r.get("encoder")),
            r.get("T") or 0,
            r.get("seed") or 0,
        )
    )
    return runs, problems


def group_runs(runs: list[dict]) -> list[Configuration]:
    """Configurations in the order of their first run."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(json.dumps(identity_of(run), sort_keys=True), []).append(run)  # JSON: lists hash too
    configurations = [Configuration(identity_of(members[0]), members) for members in groups.values()]
    names = naming_keys([c.key for c in configurations])
    for configuration in configurations:
        configuration.names = names
    return configurations


def repeated_seed_notes(configurations: list[Configuration]) -> list[str]:
    """Runs of one configuration with the same seed are copies, not independent repeats: say so."""
    notes = []
    for configuration in configurations:
        seeds = [run.get("seed") for run in configuration.runs]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}, key=str):
            count, name = seeds.count(seed), configuration.label
            notes.append(f"note: {name}: {count} runs share seed {seed}; the spread treats them as independent")
    return notes


def _matches(value, text: str) -> bool:
    if str(value) == text:
        return True
    try:
        return json.loads(text) == value  # a number written another way: 1e-3 for 0.001
    except ValueError:
        return False


def select(configurations: list[Configuration], selector: str) -> Configuration:
    """The one configuration matching `key=value[,key=value…]` (values may contain commas, as in [500,500])."""
    wanted = {}
    known = all_keys([c.key for c in configurations])
    for pair in re.split(r",(?=[\w./]+=)", selector):
        name, equals, value = pair.partition("=")
        if not equals or name not in known:
            keys = ", ".join(known)
            raise SelectionError(f"--reference {selector}: expected key=value pairs with keys among {keys}")
        wanted[name] = value
    found = [c for c in configurations if all(_matches(c.key.get(k), v) for k, v in wanted.items())]
    if len(found) == 1:
        return found[0]
    if not found:
        candidates = " | ".join(c.label for c in configurations)
        raise SelectionError(f"--reference {selector} matches no configuration; the configurations: {candidates}")
    candidates = " | ".join(c.label for c in found)
    raise SelectionError(f"--reference {selector} matches {len(found)} configurations: {candidates}; add a key")
