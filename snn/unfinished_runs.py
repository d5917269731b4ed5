"""Runs below a folder that have no results.json: stopped (SIGTERM, Ctrl-C, a kill), failed after training began, or
still running. snn.report lists them beside the finished ones — how far each got, why it ended, how to resume it — so
that a sweep's missing seeds are seen, not silently left out, and a long run stopped part-way still has its table and
curve. Everything is read as data: the TensorBoard events and the tail of train.log."""

import re
from pathlib import Path

from snn.run_folder import LOG

TAIL_BYTES = 65536  # the end of train.log is enough: its last epoch line and why the run ended
_LINE = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[(?P<level>\w+)\] - (?P<text>.*)$")  # conf/hydra/job_logging's format
_ELAPSED = re.compile(r"^epoch \d+/\d+: .*; (?P<elapsed>[\d:]+) elapsed")
NO_END = "no end recorded: still running, or killed (SIGKILL, out of memory, power loss)"


def val_curve(run_dir: str | Path) -> list[float]:
    """Validation accuracy (%) per epoch from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir)).Reload()
    if "val/acc" not in events.Tags()["scalars"]:
        return []
    by_step = {e.step: 100 * e.value for e in events.Scalars("val/acc")}  # a step logged twice: the later one
    return [by_step[step] for step in sorted(by_step)]


def _log_lines(log: Path) -> list[tuple[str, str]]:
    """(level, text) of train.log's last lines."""
    with log.open("rb") as file:
        file.seek(max(0, log.stat().st_size - TAIL_BYTES))
        tail = file.read().decode("utf-8", errors="replace")
    return [(m["level"], m["text"]) for m in map(_LINE.match, tail.splitlines()) if m]


def _unfinished(run: Path) -> dict:
    lines = _log_lines(run / LOG)
    ending = lines[-1][1] if lines and lines[-1][0] == "ERROR" else NO_END
    elapsed = [m["elapsed"] for m in (_ELAPSED.match(text) for _, text in lines) if m]
    last = run / "checkpoints" / "last.ckpt"
    return {
        "run_dir": str(run),
        "curve": val_curve(run),
        "elapsed": elapsed[-1] if elapsed else None,
        "ending": ending,
        "resume": f"python train.py ckpt_path={last}" if last.is_file() else None,
    }


def unfinished_runs(folder: Path) -> list[dict]:
    """Every run folder below `folder` (one with a train.log) that has no results.json."""
    logs = sorted(folder.rglob(LOG))
    return [_unfinished(log.parent) for log in logs if log.is_file() and not (log.parent / "results.json").exists()]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def unfinished_markdown(runs: list[dict], folder: Path) -> str:
    """The section of results.md that lists them."""
    lines = [
        "## Runs without a result\n",
        "No results.json (not tested): stopped, failed, or still running. Validation accuracy from their TensorBoard "
        "events; wall time from train.log's last epoch line.\n",
        "| run | epochs validated | best val acc (%) (epoch) | last val acc (%) | wall time | how it ended | resume |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        curve = run["curve"]
        best = max(range(len(curve)), key=curve.__getitem__) if curve else None
        cells = [
            _cell(str(Path(run["run_dir"]).relative_to(folder)) or "."),
            str(len(curve)),
            "–" if best is None else f"{curve[best]:.2f} ({best + 1})",
            f"{curve[-1]:.2f}" if curve else "–",
            run["elapsed"] or "–",
            _cell(run["ending"]),
            f"`{run['resume']}`" if run["resume"] else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
