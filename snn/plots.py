"""Figures: what the spikes did for one input, and the confusion matrix. Saved as PNG, or sent to TensorBoard.

The sweep figures of snn.report are in report_plots.py.
"""

import math

import matplotlib

matplotlib.use("Agg")  # no display needed: evaluation and training run headless
import matplotlib.pyplot as plt
import torch

from snn.spike_stats import is_spikes


def _raster(ax, spikes: torch.Tensor, title: str, ylabel: str) -> None:
    """spikes: [T, ...] for one sample (a conv layer's maps are flattened to neurons)."""
    spikes = spikes.reshape(spikes.shape[0], -1)
    t, n = spikes.nonzero(as_tuple=True)
    ax.scatter(t.numpy(), n.numpy(), s=2, marker="|", color="black", linewidths=0.6)
    ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
    ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
    ax.set_title(f"{title} ({int(spikes.sum())} spikes)")
    ax.set_xlabel("time step")
    ax.set_ylabel(ylabel)


def _class_axis(axis, classes) -> None:
    """Ticks named by the classes; on an x axis, names longer than a digit stand upright so they do not overlap."""
    upright = axis.axis_name == "x" and max(map(len, classes)) > 2
    axis.set_ticks(range(len(classes)), classes, rotation=90 if upright else 0, fontsize=7)


def _membranes(ax, membrane: torch.Tensor, threshold: float | None, highlight: int, classes) -> None:
    for index, name in enumerate(classes):
        bold = index == highlight
        ax.plot(
            membrane[:, index].numpy(),
            lw=2.2 if bold else 0.8,
            alpha=1 if bold else 0.6,
            label=name,
            color=plt.cm.tab10(index % 10),
        )
    if threshold is not None and math.isfinite(threshold):  # a leaky integrator (NIR's LI) never fires
        ax.axhline(threshold, ls="--", color="grey", lw=0.8)
    ax.set_title("output membrane potential")
    ax.set_xlabel("time step")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), handlelength=1, title="class", title_fontsize=6)


def _events_image(ax, events: torch.Tensor, title: str) -> None:
    """events: [steps, 2, H, W] of one sample, drawn on white: a pixel with ON events red, with OFF events blue
    (purple: both), deeper the more steps had one."""
    on, off = (events[:, p].float().mean(0) for p in (0, 1))
    scale = max(float(on.max()), float(off.max()), 1e-9)
    on, off = on / scale, off / scale
    ax.imshow(torch.stack((1 - off, 1 - torch.maximum(on, off), 1 - on), -1).numpy(), interpolation="nearest")
    ax.set_title(f"{title} ({int(events.sum())} events)", fontsize=8)
    ax.axis("off")


def is_events(inputs: torch.Tensor) -> bool:
    """An encoder's output of polarity events, [T, B, 2, H, W] (encoder=delta)."""
    return inputs.dim() == 5 and inputs.shape[2] == 2 and is_spikes(inputs)


def events_figure(image: torch.Tensor, events: torch.Tensor, title: str = "", slices: int = 6):
    """An image ([C, H, W]) and its events ([T, 2, H', W'], snn/delta.py) in `slices` successive time slices."""
    bounds = torch.linspace(0, events.shape[0], slices + 1).round().long().tolist()
    fig, axes = plt.subplots(1, slices + 1, figsize=(1.9 * (slices + 1), 2.3))
    axes[0].imshow(image.mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=8)
    axes[0].axis("off")
    for ax, start, stop in zip(axes[1:], bounds[:-1], bounds[1:]):
        _events_image(ax, events[start:stop], f"steps {start}-{stop - 1}")
    fig.suptitle(f"{title}: ON events red, OFF blue" if title else "ON events red, OFF blue", fontsize=9)
    fig.tight_layout()
    return fig


def activity_figure(hidden: torch.Tensor, membrane: torch.Tensor, threshold: float | None, label: int, classes):
    """Hidden-layer raster and output membrane traces of one sample (logged to TensorBoard each epoch)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    _raster(left, hidden, "hidden-layer spikes", "neuron")
    _membranes(right, membrane, threshold, label, classes)
    fig.tight_layout()
    return fig


def inference_figure(
    image: torch.Tensor,
    scores: torch.Tensor,
    prediction: int,
    score_name: str,
    trace=None,
    threshold: float | None = None,
    label: int | None = None,
    title: str = "",
    *,
    classes,
):
    """One input: the image the network saw, its encoded spikes, the hidden raster, the output
    membranes and the output scores (spike counts or probabilities) with the prediction marked."""
    panels = 5 if trace is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 3.3))
    axes[0].imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)  # [C, H, W] -> [H, W(, C)]
    axes[0].set_title("input (as the network saw it)")
    axes[0].axis("off")
    if trace is not None:
        inputs = trace.inputs[:, 0].reshape(trace.inputs.shape[0], -1)
        if is_events(trace.inputs):
            _events_image(axes[1], trace.inputs[:, 0], "input events, all steps\n(ON red, OFF blue)")
        elif not is_spikes(inputs):  # analog: the image at every step (direct), or one pixel or row a step
            axes[1].imshow(inputs.T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
            axes[1].set_title("input current (analog)")
            axes[1].set_xlabel("time step")
            axes[1].set_ylabel("pixel")
        else:
            _raster(axes[1], inputs, "encoded input", "pixel")
        _raster(axes[2], trace.spikes[0][:, 0], "hidden-layer spikes", "neuron")
        _membranes(axes[3], trace.membrane[:, 0], threshold, prediction, classes)
    bars = axes[-1].bar(range(len(classes)), scores.numpy(), color="lightgrey", edgecolor="black")
    bars[prediction].set_color("tab:orange")
    _class_axis(axes[-1].xaxis, classes)
    true = "" if label is None else f", true {classes[label]}"
    axes[-1].set_title(f"{score_name}\npredicted {classes[prediction]}{true}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: torch.Tensor, classes, title: str = "confusion matrix (test set)"):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix.numpy(), cmap="Blues")
    n = len(classes)
    cells = torch.cartesian_prod(torch.arange(n), torch.arange(n)).tolist()
    for (i, j), count in zip(cells, matrix.flatten().tolist()):
        if count:
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > matrix.max() / 2 else "black",
            )
    _class_axis(ax.xaxis, classes)
    _class_axis(ax.yaxis, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
