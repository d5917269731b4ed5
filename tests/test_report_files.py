"""python -m snn.report and its files: results.json read as data (wrong types, deep nesting, NaN, a FIFO), and only
files it wrote itself replaced."""

import json
import os
import re
import subprocess
import sys

import pytest

from snn.report import main as report
from tests.conftest import ROOT
from tests.test_report import SNN, table_rows, write_runs

REPORT_FILES = ("results.md", "results_grouped.csv", "results_runs.md", "results.csv", "accuracy_vs_T.png")


def test_a_file_the_user_had_is_never_replaced(tmp_path):
    """Through the entry point: the user's results.md stops the report before it writes anything."""
    write_runs(tmp_path, SNN)
    mine = tmp_path / "results.md"
    mine.write_text("my own notes\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra, code, message in (
        ([], 1, f"error: {mine}: exists and was not written by snn.report (or was changed since); move it away or "
         "choose another --out"),
        (["--out", str(mine)], 2, f"error: {mine}: not a folder (--out must be one)"),
    ):  # fmt: skip
        command = [sys.executable, "-m", "snn.report", str(tmp_path), *extra]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        assert (result.returncode, result.stderr.splitlines()) == (code, [message])
    assert mine.read_text() == "my own notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md", "run0"]  # nothing else written either
    out = tmp_path / "report"
    assert report([str(tmp_path), "--out", str(out)]) == 0
    assert report([str(tmp_path), "--out", str(out)]) == 0  # its own files, unchanged: replaced
    assert all((out / name).exists() for name in REPORT_FILES)


def test_a_report_changed_since_or_a_link_in_its_place_is_not_replaced(tmp_path, capsys):
    write_runs(tmp_path / "runs", SNN)
    out = tmp_path / "report"
    assert report([str(tmp_path / "runs"), "--out", str(out)]) == 0
    (out / "results_runs.md").write_text((out / "results_runs.md").read_text() + "my comment\n")
    victim = tmp_path / "victim.csv"
    victim.write_text("precious\n")
    (out / "results.csv").unlink()
    (out / "results.csv").symlink_to(victim)
    for name in ("results_runs.md", "results.csv"):
        capsys.readouterr()
        assert report([str(tmp_path / "runs"), "--out", str(out)]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: {out / name}: exists and was not written by snn.report")
        (out / "results_runs.md").unlink(missing_ok=True)  # moved away as told: the next run meets the link
    assert victim.read_text() == "precious\n" and "my comment" not in (out / "results.md").read_text()


def test_out_must_be_a_folder(tmp_path, capsys):
    write_runs(tmp_path, SNN)
    (tmp_path / "notes.txt").write_text("mine\n")
    assert report([str(tmp_path), "--out", str(tmp_path / "notes.txt")]) == 2
    expected = f"error: {tmp_path / 'notes.txt'}: not a folder (--out must be one)"
    assert capsys.readouterr().err.splitlines() == [expected]
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize(
    "case, text, reason",
    [
        ("T as a string", json.dumps({**SNN, "T": "1"}), 'T is "1", expected an integer'),
        ("T as a list", json.dumps({**SNN, "T": [1]}), "T is [1], expected an integer"),
        ("a metric as a string", json.dumps({**SNN, "test/synops": "1e6"}), 'test/synops is "1e6", expected a number'),
        ("a boolean seed", json.dumps({**SNN, "seed": True}), "seed is true, expected an integer"),
        ("nested too deeply", "[" * 100_000 + "]" * 100_000, "nested too deeply to be a results.json"),
        ("NaN accuracy", json.dumps({**SNN, "test/acc": float("nan")}), "test/acc is NaN or infinite"),
        ("infinite accuracy", json.dumps({**SNN, "test/acc": 1e999}), "test/acc is NaN or infinite"),
        ("a FIFO", None, "not a regular file"),
    ],
)
def test_a_results_json_that_is_not_data_of_a_run_is_skipped_naming_it(tmp_path, capsys, case, text, reason):
    write_runs(tmp_path, {**SNN, "seed": 1, "test/acc": 0.9}, {**SNN, "seed": 2, "test/acc": 0.8})
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    os.mkfifo(bad) if text is None else bad.write_text(text)  # a FIFO: reading it would wait for ever
    assert report([str(tmp_path)]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"skipped {bad}: ") and line.endswith(reason)
    (row,) = table_rows(tmp_path / "results.md")
    assert row[6:8] == ["2", "85.00 ± 7.07"]  # n and mean ± std of the two good runs


def test_non_finite_values_are_missing_and_named(tmp_path, capsys):
    """NaN and Infinity literals (written by older code) are read as missing, never averaged or printed as nan."""
    write_runs(tmp_path, SNN, {**SNN, "seed": 1, "test/acc": 0.99, "val/acc_best": float("nan"), "test/loss": 1e999})
    assert report([str(tmp_path)]) == 0
    (note,) = capsys.readouterr().err.splitlines()
    path = tmp_path / "run1" / "results.json"
    assert note == f"note: {path}: val/acc_best, test/loss not finite (NaN or infinity): read as missing"
    (row,) = table_rows(tmp_path / "results.md")
    assert row[6] == "2" and row[9] == "97.50%"  # best val acc: the finite one alone
    for name in REPORT_FILES[:4]:
        assert not re.search(r"\b(nan|inf)", (tmp_path / name).read_text(), re.IGNORECASE), name
