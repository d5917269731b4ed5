"""The report's figures: ticks at the values plotted (swept T values, whole epochs), markers that stay visible where
lines coincide. Read from the figure objects."""

from torch.utils.tensorboard import SummaryWriter

from snn.report_plots import accuracy_vs_T_figure, val_curves_figure
from snn.run_groups import group_runs
from tests.test_report import SNN


def val_run(folder, accuracies: list[float]) -> str:
    """A run folder whose TensorBoard events hold val/acc for epochs 1, 2, …"""
    with SummaryWriter(str(folder)) as writer:
        for step, accuracy in enumerate(accuracies):
            writer.add_scalar("val/acc", accuracy, step)
    return str(folder)


def test_accuracy_vs_T_ticks_at_the_swept_T_values_and_keeps_coinciding_points_visible():
    runs = [{**SNN, "T": t, "encoder": encoder} for t in (5, 8, 13) for encoder in ("rate", "latency")]  # same acc
    ax = accuracy_vs_T_figure(group_runs(runs)).axes[0]
    assert list(ax.get_xticks()) == [5, 8, 13]
    lines = [line for line in ax.get_lines() if line.get_marker() not in ("_", "None")]  # not the error bars' caps
    assert len(lines) == 2 and all(line.get_markerfacecolor() == "none" for line in lines)  # hollow
    assert len({(line.get_marker(), line.get_markersize()) for line in lines}) == 2  # one inside the other


def test_one_epoch_gets_one_whole_tick_and_many_epochs_whole_ticks(tmp_path):
    runs = [
        {**SNN, "encoder": encoder, "run_dir": val_run(tmp_path / encoder, [0.9])} for encoder in ("rate", "direct")
    ]
    ax = val_curves_figure(group_runs(runs)).axes[0]
    assert list(ax.get_xticks()) == [1]  # was 0.945 … 1.050
    lines = ax.get_lines()
    assert len(lines) == 2 and len({(line.get_marker(), line.get_markersize()) for line in lines}) == 2
    long = [{**SNN, "run_dir": val_run(tmp_path / "long", [0.5 + i / 100 for i in range(30)])}]
    ticks = val_curves_figure(group_runs(long)).axes[0].get_xticks()
    assert 2 < len(ticks) <= 12 and all(float(t).is_integer() for t in ticks)
