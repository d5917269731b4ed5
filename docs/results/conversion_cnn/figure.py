"""accuracy_vs_T_all.png: the converted conv nets against T beside their ANNs (bands) and the directly trained csnn.

    python docs/results/conversion_cnn/figure.py

Reads this folder's results_grouped.csv and results.csv (python -m snn.report of the conversion runs) and
../conv/results_grouped.csv (the csnn preset, directly trained at T=4); draws the full range and a zoom on the top."""

import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy import stats  # noqa: E402

HERE = Path(__file__).parent


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def percent(row: dict, key: str) -> float:
    return 100 * float(row[key]) if row.get(key) else float("nan")


def main():
    conversion, direct = rows(HERE / "results_grouped.csv"), rows(HERE.parent / "conv" / "results_grouped.csv")
    csnn = next(r for r in direct if r["baseline"] == "csnn")
    # the ANN bands from the runs: the third ReLU ANN was resumed after model.activation existed, so the report
    # groups it apart from the two older ones (model.activation None against relu): the same configuration
    anns: dict[str, list[float]] = {}
    for run in rows(HERE / "results.csv"):
        if run["model"] == "cnn":
            name = "QCFS ANN" if "ann_qcfs" in run["run_dir"] else "ReLU ANN"
            anns.setdefault(name, []).append(percent(run, "test/acc"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, bottom in zip(axes, (0, 98.4)):
        for (name, runs), color in zip(anns.items(), ("0.45", "0.75")):
            mean, sem = statistics.mean(runs), statistics.stdev(runs) / len(runs) ** 0.5
            half = stats.t.ppf(0.975, len(runs) - 1) * sem
            ax.axhline(mean, ls="--", color=color, label=f"{name} (n={len(runs)})")
            ax.axhspan(mean - half, mean + half, color=color, alpha=0.25)
        lines: dict[str, list[dict]] = {}
        for r in (r for r in conversion if r["T"]):
            activation = "QCFS" if r["conversion.activation"] == "qcfs" else "ReLU"
            neuron = "signed burst IF" if r["neuron"] == "signed_if" else "IF"
            lines.setdefault(f"converted {activation}, {neuron}", []).append(r)
        for name, members in sorted(lines.items()):
            members.sort(key=lambda r: int(r["T"]))
            ts, means = [int(r["T"]) for r in members], [percent(r, "test/acc_mean") for r in members]
            errors = [0 if not r["test/acc_ci95_high"] else percent(r, "test/acc_ci95_high") - m
                      for r, m in zip(members, means)]  # fmt: skip
            ax.errorbar(ts, means, yerr=errors, marker="o", capsize=3, label=f"{name} (n={members[0]['n']})")
        ax.errorbar([4], [percent(csnn, "test/acc_mean")], marker="*", markersize=12, color="black", capsize=3,
                    yerr=[percent(csnn, "test/acc_ci95_high") - percent(csnn, "test/acc_mean")], ls="none",
                    label=f"csnn, trained directly (n={csnn['n']})")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
        ax.set_ylim(bottom, 100)
        ax.set_xlabel("time steps T")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%): mean, 95 % CI")
    axes[1].set_title("zoom", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "accuracy_vs_T_all.png", dpi=120)


if __name__ == "__main__":
    main()
