"""The figures of snn.report: test accuracy against T and validation accuracy per epoch, each with its spread over
the seeds of a configuration."""

import itertools
import json
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from snn.plots import plt  # with the headless backend that plots.py selects
from snn.run_groups import Configuration, label, naming_keys
from snn.uncertainty import summarize
from snn.unfinished_runs import val_curve

# Hollow markers, each line's a different shape and size: where lines meet, every point stays visible.
MARKERS = (("o", 10), ("s", 7.5), ("^", 6), ("D", 4), ("v", 8.5), ("p", 5))
MAX_TICKS = 12  # up to this many plotted x values each get a tick; more: integer ticks chosen by matplotlib


def _marker(index: int) -> dict:
    shape, size = MARKERS[index % len(MARKERS)]
    return {"marker": shape, "markersize": size, "markerfacecolor": "none", "markeredgewidth": 1.3}


def _line_chart(ax, xlabel: str, ylabel: str, xs: set):
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -0.5), min(high, 100.5))  # a wide interval of few seeds: show what accuracy can be
    if 0 < len(xs) <= MAX_TICKS:  # the swept T values, the epochs: not 0.945…1.050 around one epoch
        ax.set_xticks(sorted(xs))
        if len(xs) == 1:  # matplotlib would zoom to ±5 % around the one value
            ax.set_xlim(min(xs) - 1, max(xs) + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:  # none when no run has TensorBoard events
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def spiking(configuration: Configuration) -> bool:
    """Non-spiking runs record no encoder (older results.json: encoder "none")."""
    return configuration.key.get("encoder") not in (None, "none")


def line_name(key: dict, names: list[str]) -> str:
    """A converted net's line says so (snn.convert): `converted ann (relu)`, then any other keys that tell it apart.
    Keys this line does not have (None: e.g. a converted net's model.activation, an ANN's neuron) say nothing of it
    and are left out."""
    names = [k for k in names if key.get(k) is not None] or names[:1]
    if key.get("conversion.converted_from") is None:
        return label(key, names)
    what = ("conversion.converted_from", "conversion.activation", "baseline")  # said here, or None for every one
    other = [k for k in names if k not in what]
    name = f"converted {key['conversion.converted_from']} ({key.get('conversion.activation')})"
    return f"{name}, {label(key, other)}" if other else name


def _runs_count(configurations: list[Configuration]) -> str:
    counts = sorted({c.test_acc.n for c in configurations})
    return f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}–{counts[-1]}"


def accuracy_vs_T_figure(configurations: list[Configuration]):
    """Mean test accuracy against T with 95 % CI error bars (none where n = 1), one line per configuration apart
    from T; non-spiking baselines as a horizontal line with their CI as a band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines: dict[str, list[Configuration]] = {}
    for c in configurations:  # configurations that differ only in T make one line
        lines.setdefault(json.dumps({k: v for k, v in c.key.items() if k != "T"}, sort_keys=True), []).append(c)
    names = naming_keys([members[0].key for members in lines.values()], leave_out=("T",))
    greys = itertools.cycle(plt.cm.Greys([0.5, 0.65, 0.8, 0.95]))
    xs = set()
    for index, members in enumerate(lines.values()):
        name = f"{line_name(members[0].key, names)} ({_runs_count(members)})"
        if not spiking(members[0]):
            accuracy, color = members[0].test_acc, next(greys)  # non-spiking: T=1, one configuration
            ax.axhline(100 * accuracy.mean, ls="--", color=color, label=f"{name}, non-spiking")
            if accuracy.ci is not None:
                ax.axhspan(*(100 * end for end in accuracy.ci), color=color, alpha=0.2, lw=0)
            continue
        members.sort(key=lambda c: c.key["T"])
        means = [100 * c.test_acc.mean for c in members]
        errors = [0.0 if c.test_acc.ci is None else 100 * c.test_acc.ci[1] - mean for c, mean in zip(members, means)]
        ts = [c.key["T"] for c in members]
        xs.update(ts)
        ax.errorbar(ts, means, yerr=errors, capsize=3, label=name, **_marker(index))
    return _line_chart(ax, "time steps T", "test accuracy (%): mean, 95 % CI", xs)


def val_curves_figure(configurations: list[Configuration], unfinished: list[dict] = ()):
    """Validation accuracy per epoch, the mean over a configuration's seeds with a ± 1 std band; each unfinished
    run (snn.unfinished_runs) a dotted line of its own."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = set()
    for index, c in enumerate(configurations):
        curves = [curve for curve in (val_curve(run["run_dir"]) for run in c.runs) if curve]
        if not curves:
            continue
        epochs = range(1, min(map(len, curves)) + 1)  # the epochs every seed reached
        per_epoch = [summarize([curve[epoch - 1] for curve in curves]) for epoch in epochs]
        means = [s.mean for s in per_epoch]
        xs.update(epochs)
        style = {"ls": "-" if spiking(c) else "--", "label": f"{c.label} (n={len(curves)})", **_marker(index)}
        (line,) = ax.plot(epochs, means, **style)
        if len(curves) > 1:
            spread = [s.std for s in per_epoch]
            low, high = [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)]
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, lw=0)
    for index, run in enumerate(unfinished, start=len(configurations)):
        epochs = range(1, len(run["curve"]) + 1)
        xs.update(epochs)
        ax.plot(epochs, run["curve"], ls=":", label=f"{Path(run['run_dir']).name} (unfinished)", **_marker(index))
    return _line_chart(ax, "epoch", "validation accuracy (%): mean ± 1 std over seeds", xs)
