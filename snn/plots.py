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


def _membranes(ax, membrane: torch.Tensor, threshold: float | None, highlight: int) -> None:
    for digit in range(membrane.shape[1]):
        bold = digit == highlight
        ax.plot(
            membrane[:, digit].numpy(),
            lw=2.2 if bold else 0.8,
            alpha=1 if bold else 0.6,
            label=str(digit),
            color=plt.cm.tab10(digit),
        )
    if threshold is not None and math.isfinite(threshold):  # a leaky integrator (NIR's LI) never fires
        ax.axhline(threshold, ls="--", color="grey", lw=0.8)
    ax.set_title("output membrane potential")
    ax.set_xlabel("time step")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), handlelength=1, title="digit", title_fontsize=6)


def activity_figure(hidden: torch.Tensor, membrane: torch.Tensor, threshold: float | None, label: int):
    """Hidden-layer raster and output membrane traces of one sample (logged to TensorBoard each epoch)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    _raster(left, hidden, "hidden-layer spikes", "neuron")
    _membranes(right, membrane, threshold, label)
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
):
    """One input: the 28x28 image the network saw, its encoded spikes, the hidden raster, the output
    membranes and the output scores (spike counts or probabilities) with the prediction marked."""
    panels = 5 if trace is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 3.3))
    axes[0].imshow(image.reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input (as the network saw it)")
    axes[0].axis("off")
    if trace is not None:
        inputs = trace.inputs[:, 0].reshape(trace.inputs.shape[0], -1)
        if not is_spikes(inputs):
            axes[1].imshow(inputs.T.numpy(), aspect="auto", cmap="gray_r", interpolation="nearest")
            axes[1].set_title("input current (direct)")
            axes[1].set_xlabel("time step")
            axes[1].set_ylabel("pixel")
        else:
            _raster(axes[1], inputs, "encoded input", "pixel")
        _raster(axes[2], trace.spikes[0][:, 0], "hidden-layer spikes", "neuron")
        _membranes(axes[3], trace.membrane[:, 0], threshold, prediction)
    bars = axes[-1].bar(range(10), scores.numpy(), color="lightgrey", edgecolor="black")
    bars[prediction].set_color("tab:orange")
    axes[-1].set_xticks(range(10))
    axes[-1].set_title(f"{score_name}\npredicted {prediction}" + ("" if label is None else f", true {label}"))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: torch.Tensor):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for (i, j), count in zip(
        torch.cartesian_prod(torch.arange(10), torch.arange(10)).tolist(), matrix.flatten().tolist()
    ):
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
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test set)")
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
