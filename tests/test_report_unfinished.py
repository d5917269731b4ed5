"""snn.report on runs without a results.json (stopped, killed, still running): listed beside the finished ones with
how far they got, why they ended and how to resume them, and drawn in the validation figure. A real killed run is
reported in test_resume."""

import json

import pytest

from snn.report import main as report
from snn.unfinished_runs import NO_END
from tests.test_report import SNN, table_rows
from tests.test_report_plots import val_run

STOPPED = "error: the run was interrupted (SIGTERM) during epoch 4; resume it with: python train.py ckpt_path=x | y"


def log(folder, *lines: tuple[str, str]) -> None:
    """A train.log in the format of conf/hydra/job_logging (level, text per line)."""
    stamp = "[2026-12-07 10:00:00,000][snn.train_log]"
    text = "".join(f"{stamp}[{level}] - {line}\n" for level, line in lines)
    (folder / "train.log").write_text(text)


def epoch_line(epoch: int, elapsed: str) -> tuple[str, str]:
    return "INFO", f"epoch {epoch}/50: train loss 1.0 acc 0.5, val loss 1.0 acc 0.5; {elapsed} elapsed, 1:00:00 left"


def unfinished_sweep(folder, finished: bool = True) -> None:
    """A finished run, a run stopped by SIGTERM after 3 epochs, and one killed after 1 (no end line, no checkpoint)."""
    if finished:
        (folder / "done").mkdir(parents=True)
        (folder / "done" / "results.json").write_text(json.dumps(SNN))
        log(folder / "done", epoch_line(1, "00:10"))
    stopped = folder / "stopped"
    val_run(stopped, [0.5, 0.7, 0.6])
    log(stopped, epoch_line(1, "03:54"), epoch_line(2, "07:40"), epoch_line(3, "11:31"), ("ERROR", STOPPED))
    (stopped / "checkpoints").mkdir()
    (stopped / "checkpoints" / "last.ckpt").write_bytes(b"")
    killed = folder / "killed"
    val_run(killed, [0.4])
    log(killed, epoch_line(1, "04:02"))


def test_stopped_and_killed_runs_are_listed_with_how_far_they_got_and_how_to_resume(tmp_path, capsys):
    unfinished_sweep(tmp_path)
    assert report([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "results.md").read_text()
    finished, _, section = text.partition("## Runs without a result")
    assert len(table_rows_of(finished)) == 1  # the finished run's configuration, as before
    killed, stopped = table_rows_of(section)
    assert killed == ["killed", "1", "40.00 (1)", "40.00", "04:02", NO_END, "–"]
    resume = f"`python train.py ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.ckpt'}`"
    assert stopped == ["stopped", "3", "70.00 (2)", "60.00", "11:31", STOPPED.replace("|", "\\|"), resume]
    assert "1 run (+2 without a result), 1 configuration" in out
    assert (tmp_path / "val_acc_per_epoch.png").stat().st_size > 0


def test_a_folder_of_unfinished_runs_only_gets_their_table_and_curves(tmp_path, capsys):
    unfinished_sweep(tmp_path, finished=False)
    assert report([str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert written == [".snn-report.json", "results.md", "val_acc_per_epoch.png"]
    assert len(table_rows(tmp_path / "results.md")) == 2
    assert "0 runs (+2 without a result)" in capsys.readouterr().out


def test_the_figure_draws_each_unfinished_run_dotted(tmp_path):
    from snn.report_plots import val_curves_figure
    from snn.run_groups import group_runs
    from snn.unfinished_runs import unfinished_runs

    unfinished_sweep(tmp_path, finished=False)
    ax = val_curves_figure(group_runs([]), unfinished_runs(tmp_path)).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"killed (unfinished)", "stopped (unfinished)"}
    assert list(lines["stopped (unfinished)"].get_ydata()) == pytest.approx([50.0, 70.0, 60.0])
    assert all(line.get_linestyle() == ":" for line in lines.values())


def table_rows_of(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
