"""Collect every results.json below a folder into a table, a CSV and two plots.

python -m snn.report outputs/multirun/<sweep>      # or any folder of runs; writes there (or --out)
"""

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = [  # (header, results.json key, format)
    ("model", "model", "{}"),
    ("baseline", "baseline", "{}"),
    ("neuron", "neuron", "{}"),
    ("encoder", "encoder", "{}"),
    ("T", "T", "{}"),
    ("test acc (%)", "test/acc", "{:.2%}"),
    ("hidden firing rate", "test/firing_rate/layer1", "{:.3f}"),
    ("SynOps/sample", "test/synops", "{:,.0f}"),
    ("MACs/sample", "test/macs", "{:,.0f}"),
    ("energy/sample (nJ)", "test/energy_nJ", "{:,.1f}"),
    ("epochs", "epochs", "{}"),
    ("wall time (s)", "wall_time_s", "{:.0f}"),
]


def load_results(folder: Path) -> tuple[list[dict], list[str]]:
    runs, problems = [], []
    for path in sorted(folder.rglob("results.json")):
        try:
            result = json.loads(path.read_text())
            if not isinstance(result, dict) or "test/acc" not in result:
                raise ValueError("no test/acc")
        except (OSError, ValueError) as error:
            problems.append(f"skipped {path}: {type(error).__name__}: {error}")
            continue
        runs.append({**result, "run_dir": str(path.parent)})
    order = {"ann": 0, "cnn": 1}
    runs.sort(key=lambda r: (order.get(r.get("model"), 2), str(r.get("model")), str(r.get("encoder")), r.get("T", 0)))
    return runs, problems


def cell(run: dict, key: str, fmt: str) -> str:
    value = run.get(key)
    return "–" if value is None else fmt.format(value)


def markdown(runs: list[dict]) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, key, fmt) for _, key, fmt in COLUMNS) + " |" for r in runs]
    return "\n".join(lines) + "\n"


def write_csv(runs: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([key for _, key, _ in COLUMNS] + ["run_dir"])
        writer.writerows([[r.get(key, "") for _, key, _ in COLUMNS] + [r["run_dir"]] for r in runs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, help="where to write (default: the folder)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: no such folder", file=sys.stderr)
        return 2
    runs, problems = load_results(args.folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not runs:
        print(f"error: {args.folder}: no readable results.json below it", file=sys.stderr)
        return 1
    out = args.out or args.folder
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(runs)
    (out / "results.md").write_text(table)
    write_csv(runs, out / "results.csv")
    from snn.plots import accuracy_vs_T_figure, save, val_curves_figure  # matplotlib only when plotting

    save(accuracy_vs_T_figure(runs), out / "accuracy_vs_T.png")
    save(val_curves_figure(runs), out / "val_acc_per_epoch.png")
    print(table)
    print(f"{len(runs)} runs -> {out / 'results.md'}, results.csv, accuracy_vs_T.png, val_acc_per_epoch.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
