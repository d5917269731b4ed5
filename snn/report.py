"""Collect every results.json below a folder: one row per configuration (runs that differ only in their seed
grouped) with mean, spread and 95 % confidence interval, per-run rows, plots, and comparisons with a reference.

python -m snn.report outputs/multirun/<sweep>                          # writes there (or --out)
python -m snn.report outputs/multirun/<sweep> --reference model=ann    # + comparison.md: differences to it
"""

import argparse
import csv
import io
import sys
from pathlib import Path

from snn.report_outputs import RECORD, OutputError, write_owned
from snn.run_groups import (
    Configuration,
    SelectionError,
    all_keys,
    differing_keys,
    group_runs,
    is_class_path,
    load_results,
    repeated_seed_notes,
    select,
)
from snn.uncertainty import Difference, Summary, summarize, welch_difference
from snn.unfinished_runs import unfinished_markdown, unfinished_runs

OWNERSHIP = (
    "Writes results.md, results_grouped.csv, results_runs.md, results.csv, accuracy_vs_T.png, val_acc_per_epoch.png "
    "(and comparison.md with --reference) into the folder or --out; runs without a results.json (stopped, failed, "
    "still running) are listed in results.md and drawn in val_acc_per_epoch.png (only those two files when no run "
    f"has finished). It records what it wrote in {RECORD} there and "
    "replaces only files it wrote itself and that are unchanged since: if another file has one of these names (your "
    "own results.md, a report edited since), it stops with one line naming it and writes nothing."
)
ALWAYS_SHOWN = ("model", "baseline", "neuron", "encoder", "T", "epochs")  # other keys: a column where they differ
METRICS = [  # (header, results.json key, format of one value or of a mean)
    ("hidden firing rate", "test/firing_rate/layer1", "{:.3f}"),
    ("SynOps/sample", "test/synops", "{:,.0f}"),
    ("MACs/sample", "test/macs", "{:,.0f}"),
    ("energy/sample (nJ)", "test/energy_nJ", "{:,.1f}"),
    ("wall time (s)", "wall_time_s", "{:.0f}"),
]
RUN_COLUMNS = [
    *[(key, key, "{}") for key in ("model", "baseline", "neuron", "encoder", "T", "seed")],
    ("test acc (%)", "test/acc", "{:.2%}"),
    ("best val acc (%)", "val/acc_best", "{:.2%}"),
    *METRICS[:4],
    ("epochs", "epochs", "{}"),
    METRICS[4],
]
GROUPED_NOTE = (
    "One row per configuration: n runs that differ only in their seed. Test accuracy: mean ± sample std; "
    "95 % CI of the mean by Student's t; the other columns are means. Per run: results_runs.md, results.csv.\n"
)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]) + "\n"


def formatted(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def mean_or_none(values: list[float]) -> float | None:
    return summarize(values).mean if values else None


def percent_with_spread(summary: Summary) -> str:
    if summary.std is None:
        return f"{100 * summary.mean:.2f} (n=1, no spread)"
    return f"{100 * summary.mean:.2f} ± {100 * summary.std:.2f}"


def percent_interval(ci: tuple[float, float] | None, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return "" if ci is None else "[" + ", ".join(fmt.format(100 * end) for end in ci) + "]"


def shown_keys(configurations: list[Configuration]) -> list[str]:
    keys = [c.key for c in configurations]
    differing = [k for k in differing_keys(keys) if not is_class_path(k)]
    for max_epochs in ("trainer.max_epochs", "max_epochs"):  # the second: results.json from before the whole config
        if all(c.key.get("epochs") == c.key.get(max_epochs) for c in configurations):
            differing = [k for k in differing if k != max_epochs]  # the epochs column says it: every run ran to its end
    return [k for k in all_keys(keys) if k in ALWAYS_SHOWN or k in differing]


def runs_markdown(runs: list[dict]) -> str:
    rows = [[formatted(run.get(key), fmt) for _, key, fmt in RUN_COLUMNS] for run in runs]
    return markdown_table([header for header, _, _ in RUN_COLUMNS], rows)


def grouped_markdown(configurations: list[Configuration]) -> str:
    keys = shown_keys(configurations)
    headers = [*keys, "n", "test acc (%)", "95 % CI (%)", "best val acc (%)", *[h for h, _, _ in METRICS]]
    rows = []
    for c in configurations:
        accuracy = c.test_acc
        rows.append(
            [
                *(formatted(c.key.get(k), "{}") for k in keys),
                accuracy.n,
                percent_with_spread(accuracy),
                percent_interval(accuracy.ci),
            ]
            + [formatted(mean_or_none(c.values("val/acc_best")), "{:.2%}")]
            + [formatted(mean_or_none(c.values(key)), fmt) for _, key, fmt in METRICS]
        )
    return markdown_table(headers, rows) + "\n" + GROUPED_NOTE


def runs_csv(runs: list[dict]) -> str:
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key for _, key, _ in RUN_COLUMNS] + ["run_dir"])
        writer.writerows([[run.get(key, "") for _, key, _ in RUN_COLUMNS] + [run["run_dir"]] for run in runs])
        return f.getvalue()


def grouped_csv(configurations: list[Configuration]) -> str:
    """Fractions as in results.json (test/acc 0.9831), not percent; empty where n = 1 gives no spread."""
    means = ["val/acc_best", *[key for _, key, _ in METRICS]]
    keys = all_keys([c.key for c in configurations])
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [*keys, "n", "seeds", "test/acc_mean", "test/acc_std", "test/acc_ci95_low", "test/acc_ci95_high"]
            + [f"{key}_mean" for key in means]
            + ["run_dirs"]
        )
        for c in configurations:
            accuracy = c.test_acc
            writer.writerow(
                [*(c.key.get(k, "") for k in keys), accuracy.n, " ".join(str(run.get("seed")) for run in c.runs)]
                + [accuracy.mean, "" if accuracy.std is None else accuracy.std, *(accuracy.ci or ("", ""))]
                + [mean_or_none(c.values(key)) for key in means]
                + [";".join(run["run_dir"] for run in c.runs)]
            )
        return f.getvalue()


def verdict(difference: Difference | None) -> str:
    if difference is None:
        return "no interval available (n < 2 on one side)"
    low, high = difference.ci
    if low <= 0 <= high:
        return "no significant difference (CI contains 0)"
    return "higher" if low > 0 else "lower"


def comparison_markdown(reference: Configuration, configurations: list[Configuration]) -> str:
    base = reference.test_acc
    headers = ["configuration", "n", "test acc (%)", "difference (pp)", "95 % CI (pp)", "Welch dof", "verdict"]
    rows = []
    for c in configurations:
        if c is reference:
            continue
        difference = welch_difference(c.values("test/acc"), reference.values("test/acc"))
        rows.append(
            [c.label, c.test_acc.n, percent_with_spread(c.test_acc), f"{100 * (c.test_acc.mean - base.mean):+.2f}"]
            + ([percent_interval(difference.ci, signed=True), f"{difference.dof:.1f}"] if difference else ["", ""])
            + [verdict(difference)]
        )
    return (
        f"Reference: {reference.label} (n={base.n}; test acc (%) {percent_with_spread(base)})\n\n"
        "Difference in mean test accuracy, configuration minus reference, in percentage points, with its 95 % "
        "confidence interval by Welch's t-test (unequal variances, Welch–Satterthwaite degrees of freedom).\n\n"
        + (markdown_table(headers, rows) if rows else "No other configuration to compare.\n")
    )


def figure_bytes(figure) -> bytes:
    from snn.plots import save

    with io.BytesIO() as buffer:
        save(figure, buffer)
        return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m snn.report", description=__doc__.split("\n\n")[0], epilog=OWNERSHIP)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, help="the folder to write into (default: the folder read)")
    parser.add_argument(
        "--reference",
        metavar="KEY=VALUE[,KEY=VALUE...]",
        help="compare every configuration's mean test accuracy with the one this selects (e.g. model=ann)",
    )
    args = parser.parse_args(argv)
    out = args.out or args.folder
    for path, what in ((args.folder, "the folder to read"), (out, "--out")):
        if path.exists() and not path.is_dir():
            print(f"error: {path}: not a folder ({what} must be one)", file=sys.stderr)
            return 2
    if not args.folder.is_dir():
        print(f"error: {args.folder}: no such folder", file=sys.stderr)
        return 2
    runs, problems = load_results(args.folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    unfinished = unfinished_runs(args.folder)
    if not runs and not unfinished:
        print(f"error: {args.folder}: no readable results.json below it", file=sys.stderr)
        return 1
    configurations = group_runs(runs)
    for note in repeated_seed_notes(configurations):
        print(note, file=sys.stderr)
    try:
        reference = None if args.reference is None else select(configurations, args.reference)
    except SelectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = grouped_markdown(configurations) if runs else ""
    if unfinished:
        table += ("\n" if table else "") + unfinished_markdown(unfinished, args.folder)
    texts = {"results.md": table}
    if runs:
        texts.update({
            "results_grouped.csv": grouped_csv(configurations),
            "results_runs.md": runs_markdown(runs),
            "results.csv": runs_csv(runs),
        })  # fmt: skip
    if reference is not None:
        texts["comparison.md"] = comparison_markdown(reference, configurations)
    from snn.report_plots import accuracy_vs_T_figure, val_curves_figure  # matplotlib only when plotting

    contents = {name: text.encode() for name, text in texts.items()}
    if runs:
        contents["accuracy_vs_T.png"] = figure_bytes(accuracy_vs_T_figure(configurations))
    contents["val_acc_per_epoch.png"] = figure_bytes(val_curves_figure(configurations, unfinished))
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_owned(out, contents)
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, no permission
        print(f"error: {out}: cannot write the report ({error.strerror or error})", file=sys.stderr)
        return 1
    print(table)
    if reference is not None:
        print(texts["comparison.md"])
    run_count = f"{len(runs)} run" + "s" * (len(runs) != 1)
    run_count += f" (+{len(unfinished)} without a result)" if unfinished else ""
    configuration_count = f"{len(configurations)} configuration" + "s" * (len(configurations) != 1)
    print(f"{run_count}, {configuration_count} -> {out}: {', '.join(contents)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
