"""python -m snn.report: grouping over seeds, the statistics (checked against hand-computed values), comparisons
with a reference, broken files, and a real seed sweep."""

import csv
import json
import re

import pytest

from snn.report import main as report
from snn.uncertainty import summarize, t_quantile, welch_difference
from tests.test_sweeps import results, train

SNN = {
    "model": "snn",
    "baseline": "none",
    "neuron": "lif",
    "encoder": "rate",
    "T": 1,
    "hidden_sizes": "[1000]",
    "channels": "[]",
    "readout": "spike_count",
    "beta": 0.9,
    "threshold": 1.0,
    "surrogate": "atan",
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "batch_size": 128,
    "max_epochs": 3,
    "seed": 0,
    "test/acc": 0.97,
    "val/acc_best": 0.975,
    "test/firing_rate/layer1": 0.05,
    "test/synops": 1e6,
    "test/macs": 0,
    "test/energy_nJ": 900.0,
    "epochs": 3,
    "wall_time_s": 60,
}
ANN = {**SNN, "model": "ann", "neuron": "none", "encoder": "none", "beta": 0.0, "threshold": 0.0, "surrogate": "none"}
ANN.pop("test/firing_rate/layer1")


def write_runs(folder, *runs: dict) -> None:
    for i, run in enumerate(runs):
        (folder / f"run{i}").mkdir(parents=True)
        (folder / f"run{i}" / "results.json").write_text(json.dumps(run))


def table_rows(path) -> list[list[str]]:
    """The cells of each body row of a markdown table."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.parametrize("dof, quantile", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantiles_match_the_tables(dof, quantile):
    assert t_quantile(0.975, dof) == pytest.approx(quantile, abs=5e-4)


def test_t_quantile_tends_to_the_normal_one_and_rejects_nonsense():
    assert t_quantile(0.975, 1e9) == pytest.approx(1.95996, abs=1e-5)
    assert t_quantile(0.995, 1) == pytest.approx(63.657, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0.3, 4)


def test_summary_by_hand():
    summary = summarize([2.0, 4.0, 6.0])
    assert (summary.n, summary.mean, summary.std) == (3, 4.0, pytest.approx(2.0))
    half_width = 4.302653 * 2.0 / 3**0.5  # t(0.975, 2 dof) * std / sqrt(n)
    assert summary.ci == pytest.approx((4.0 - half_width, 4.0 + half_width), abs=1e-5)
    single = summarize([0.98])
    assert (single.n, single.mean, single.std, single.ci) == (1, 0.98, None, None)


def test_welch_difference_by_hand():
    # equal sizes and variances (1 each): standard error sqrt(1/3 + 1/3), Welch dof = 4
    lower = welch_difference([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    half_width = 2.776445 * (2 / 3) ** 0.5
    assert (lower.delta, lower.dof) == (-2.0, pytest.approx(4.0))
    assert lower.ci == pytest.approx((-2.0 - half_width, -2.0 + half_width), abs=1e-5)
    # unequal variances (1 and 20/3): dof = (1/3 + 5/3)^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27)
    unequal = welch_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert (unequal.delta, unequal.dof) == (-3.0, pytest.approx(4 / (1 / 18 + 25 / 27)))
    assert welch_difference([1.0], [1.0, 2.0]) is None


def test_runs_differing_only_in_seed_form_one_configuration(tmp_path, capsys):
    write_runs(
        tmp_path,
        *({**SNN, "seed": seed, "test/acc": acc} for seed, acc in ((0, 0.980), (1, 0.982), (2, 0.984))),
        *({**SNN, "T": 2, "seed": seed, "test/acc": acc} for seed, acc in ((0, 0.99), (1, 0.99))),
        {**SNN, "lr": 0.003, "test/acc": 0.95},
    )
    assert report([str(tmp_path)]) == 0
    rows = table_rows(tmp_path / "results.md")
    header = [cell.strip() for cell in (tmp_path / "results.md").read_text().splitlines()[0].strip("|").split("|")]
    assert header[:8] == ["model", "baseline", "neuron", "encoder", "T", "lr", "epochs", "n"]  # lr: it differs
    assert header[8:10] == ["test acc (%)", "95 % CI (%)"]
    assert len(rows) == 3
    by_config = {(row[4], row[5]): row for row in rows}
    three = by_config["1", "0.001"]  # 98.2 ± 0.2; CI half-width t(0.975, 2) * 0.2 / sqrt(3) = 0.497
    assert three[7:10] == ["3", "98.20 ± 0.20", "[97.70, 98.70]"]
    assert by_config["2", "0.001"][7:10] == ["2", "99.00 ± 0.00", "[99.00, 99.00]"]
    assert by_config["1", "0.003"][7:10] == ["1", "95.00 (n=1, no spread)", ""]
    grouped = list(csv.DictReader((tmp_path / "results_grouped.csv").open()))
    assert [(g["T"], g["lr"], g["n"], g["seeds"]) for g in grouped] == [
        ("1", "0.001", "3", "0 1 2"),
        ("1", "0.003", "1", "0"),
        ("2", "0.001", "2", "0 1"),
    ]
    assert float(grouped[0]["test/acc_std"]) == pytest.approx(0.002) and grouped[1]["test/acc_std"] == ""
    per_run = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(per_run) == 6 and len(table_rows(tmp_path / "results_runs.md")) == 6
    assert sorted(r["seed"] for r in per_run) == ["0", "0", "0", "1", "1", "2"]
    for png in ("accuracy_vs_T.png", "val_acc_per_epoch.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "3 configurations" in capsys.readouterr().out


def test_runs_from_before_a_choice_was_recorded_ran_without_it(tmp_path):
    """label_smoothing and ema_decay were added to results.json later; older runs group with runs at 0 (off)."""
    write_runs(tmp_path, SNN, {**SNN, "seed": 1, "label_smoothing": 0.0, "ema_decay": 0.0}, {**SNN, "ema_decay": 0.9})
    assert report([str(tmp_path)]) == 0
    assert sorted(row[7] for row in table_rows(tmp_path / "results.md")) == ["1", "2"]  # n per configuration


def test_keys_newer_than_a_run_are_read_as_todays_default(tmp_path, capsys):
    """A run recorded before model.recurrent existed groups with today's runs at its default (false in
    conf/model/snn.yaml) and is not named by it; a run with the key set differently stays apart; the ANN, which has
    no neuron keys, gets none."""
    choices = {"model": "snn", "neuron": "lif", "encoder": "rate", "data": "mnist", "trainer": "default"}
    new = {**SNN, "model.hidden_sizes": [1000], "model.recurrent": False, "neuron.beta": 0.9, "choices": choices}
    new["config"] = {}  # a run that recorded its whole config (its contents are not read here)
    old = {key: value for key, value in new.items() if key != "model.recurrent"}
    ann = {**ANN, "model.hidden_sizes": [1000], "choices": {**choices, "model": "ann"}, "config": {}}
    write_runs(tmp_path, new, {**old, "seed": 1}, {**new, "model.recurrent": True, "seed": 2}, ann)
    assert report([str(tmp_path)]) == 0
    assert "runs from before model.recurrent existed read it as today's default" in capsys.readouterr().err
    grouped = list(csv.DictReader((tmp_path / "results_grouped.csv").open()))
    assert sorted((g["model"], g["model.recurrent"], g["neuron.beta"], g["seeds"]) for g in grouped) == [
        ("ann", "", "", "0"),
        ("snn", "False", "0.9", "0 1"),
        ("snn", "True", "0.9", "2"),
    ]


def test_a_results_json_gets_no_default_from_outside_conf_or_from_the_environment(monkeypatch):
    """Choices that are not option files of conf/ (an override in disguise, a user's own option) give no default, and
    a default that is an interpolation (data.root reads SNN_DATA_DIR) is not resolved."""
    from snn.absent_keys import ABSENT, default_of

    monkeypatch.setenv("SNN_DATA_DIR", "/secret")
    choices = {"model": "snn", "neuron": "lif", "hydra/launcher": "basic", "baseline": None}
    assert default_of({"choices": choices}, "model.recurrent") is False
    assert default_of({"choices": choices}, "data.root") is ABSENT and default_of({"choices": choices}, "T") == 25
    for bad in ({"model": "mine"}, {"hydra.searchpath": "[file:///tmp]"}, {"model": "snn,neuron=plif"}, {"model": 1}):
        assert default_of({"choices": {**choices, **bad}}, "model.recurrent") is ABSENT
    assert default_of({"choices": "model=snn"}, "model.recurrent") is ABSENT


def test_max_epochs_gets_a_column_only_where_a_run_stopped_before_it(tmp_path):
    write_runs(tmp_path, SNN, {**SNN, "max_epochs": 5, "epochs": 5})
    assert report([str(tmp_path)]) == 0
    assert "max_epochs" not in (tmp_path / "results.md").read_text().splitlines()[0]
    write_runs(tmp_path / "stopped", {**SNN, "max_epochs": 5, "epochs": 4})
    assert report([str(tmp_path)]) == 0
    assert "max_epochs" in (tmp_path / "results.md").read_text().splitlines()[0]


def test_same_seed_twice_is_pointed_out(tmp_path, capsys):
    write_runs(tmp_path, SNN, {**SNN, "test/acc": 0.98})
    assert report([str(tmp_path)]) == 0
    assert "2 runs share seed 0" in capsys.readouterr().err


def test_broken_and_partial_results_are_skipped_with_one_message_each(tmp_path, capsys):
    write_runs(tmp_path, SNN)
    broken = {"truncated": '{"model": "snn", "test/ac', "no_accuracy": '{"model": "snn"}', "a_list": "[]"}
    for name, text in broken.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    assert report([str(tmp_path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("skipped ") for line in err)
    for name in broken:
        assert sum(str(tmp_path / name / "results.json") in line for line in err) == 1
    assert len(table_rows(tmp_path / "results.md")) == 1


def test_a_folder_without_results_fails_clearly(tmp_path, capsys):
    assert report([str(tmp_path)]) == 1
    assert "no readable results.json" in capsys.readouterr().err
    assert report([str(tmp_path / "missing")]) == 2


def reference_sweep(folder) -> None:
    """ANN 98.2 ± 0.2 (n=3); SNN T=1 97.2 ± 0.2 (n=3), T=2 98.3 ± 0.2 (n=3), T=5 a single run."""
    write_runs(
        folder,
        *({**ANN, "seed": s, "test/acc": acc} for s, acc in enumerate((0.980, 0.982, 0.984))),
        *({**SNN, "seed": s, "test/acc": acc} for s, acc in enumerate((0.970, 0.972, 0.974))),
        *({**SNN, "T": 2, "seed": s, "test/acc": acc} for s, acc in enumerate((0.981, 0.983, 0.985))),
        {**SNN, "T": 5, "test/acc": 0.99},
    )


def test_differences_to_a_reference_by_welch(tmp_path, capsys):
    reference_sweep(tmp_path)
    assert report([str(tmp_path), "--reference", "model=ann"]) == 0
    comparison = (tmp_path / "comparison.md").read_text()
    assert comparison in capsys.readouterr().out
    assert comparison.startswith("Reference: model=ann,T=1 (n=3; test acc (%) 98.20 ± 0.20)")
    rows = {row[0].split("T=")[1].split(",")[0]: row[1:] for row in table_rows(tmp_path / "comparison.md")}
    # equal n and spreads: standard error sqrt(2 * 0.2^2 / 3) = 0.1633 pp, Welch dof 4, half-width 2.776 * 0.1633
    assert rows["1"] == ["3", "97.20 ± 0.20", "-1.00", "[-1.45, -0.55]", "4.0", "lower"]
    no_difference = "no significant difference (CI contains 0)"
    assert rows["2"] == ["3", "98.30 ± 0.20", "+0.10", "[-0.35, +0.55]", "4.0", no_difference]
    assert rows["5"] == ["1", "99.00 (n=1, no spread)", "+0.80", "", "", "no interval available (n < 2 on one side)"]
    assert report([str(tmp_path), "--reference", "T=1,encoder=rate,lr=1e-3"]) == 0  # 1e-3: the same number as 0.001
    assert "higher" in (tmp_path / "comparison.md").read_text()


@pytest.mark.parametrize(
    "selector, message",
    [
        ("model=foo", "error: --reference model=foo matches no configuration; the configurations: model=ann,"),
        ("model=snn", "error: --reference model=snn matches 3 configurations: model=snn,"),
        ("colour=red", "error: --reference colour=red: expected key=value pairs with keys among model, baseline,"),
        ("seed=0", "error: --reference seed=0: expected key=value pairs"),
    ],
)
def test_a_reference_must_select_exactly_one_configuration(tmp_path, capsys, selector, message):
    reference_sweep(tmp_path)
    assert report([str(tmp_path), "--reference", selector]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "results.md").exists()  # checked before anything is written


def test_list_values_with_commas_select_too(tmp_path):
    write_runs(tmp_path, {**SNN, "hidden_sizes": "[500,500]"}, {**SNN, "hidden_sizes": "[1000]"})
    assert report([str(tmp_path), "--reference", "hidden_sizes=[500,500],model=snn"]) == 0
    assert (tmp_path / "comparison.md").read_text().startswith("Reference: hidden_sizes=[500,500]")


def test_a_seed_sweep_reports_mean_and_spread(tmp_path, mnist_root):
    """Two configurations x three seeds from one Hydra multirun, then the report over it."""
    result = train("T=1,2", "seed=range(3)", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    runs = results(tmp_path)  # by folder name, "T=1,...,seed=0,..."
    expected = [[f"T={t}", f"seed={s}"] for t in (1, 2) for s in range(3)]
    assert sorted(re.findall(r"\bT=\d|seed=\d", name) for name in runs) == expected
    assert report([str(sweep)]) == 0
    rows = table_rows(sweep / "results.md")
    assert [(row[4], row[6]) for row in rows] == [("1", "3"), ("2", "3")]  # columns T, n
    assert all(re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", row[7]) for row in rows)
    for png in ("accuracy_vs_T.png", "val_acc_per_epoch.png"):
        assert (sweep / png).read_bytes()[:4] == b"\x89PNG"
    # the seed is an HParams column in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = next(run["run_dir"] for run in runs.values() if (run["T"], run["seed"]) == (2, 1))
    content = EventAccumulator(run_dir).Reload().PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["seed"].number_value == 1 and session.hparams["T"].number_value == 2


def test_the_identity_is_the_whole_config_but_what_cannot_change_a_result(compose_cfg):
    from omegaconf import OmegaConf

    from snn.run_identity import identity

    def of(*overrides, spiking=True):
        cfg = compose_cfg(*overrides, hydra=True)
        choices = dict(cfg.hydra.runtime.choices)
        config = OmegaConf.to_container(cfg)
        del config["hydra"]
        return identity(OmegaConf.to_container(OmegaConf.create(config), resolve=True), choices, spiking)

    plain = of()
    assert (plain["model"], plain["neuron"], plain["encoder"], plain["T"]) == ("snn", "lif", "rate", 25)
    assert plain["neuron.beta"] == 0.9 and plain["optimizer.lr"] == 1e-3 and plain["data.split_seed"] == 0
    assert not {"seed", "data.root", "torch_threads", "trainer.enable_progress_bar", "encoder.T"} & set(plain)
    assert not [k for k in plain if k.startswith(("model.neuron", "hydra"))]  # references and launcher choices
    for override, key, value in (
        ("data.split_seed=1", "data.split_seed", 1),
        ("neuron.slope=8", "neuron.slope", 8),
        ("+trainer.gradient_clip_val=0.5", "trainer.gradient_clip_val", 0.5),
    ):
        assert of(override)[key] == value and of(override) != plain
    assert of("seed=3", "data.root=/elsewhere", "trainer.enable_progress_bar=false") == plain
    ann = of("model=ann", spiking=False)
    assert not [k for k in ann if k.split(".")[0] in ("T", "neuron", "encoder")]
    assert of("model=ann", "T=4", "neuron=plif", spiking=False) == ann


@pytest.mark.slow
def test_a_sweep_over_any_keys_reports_one_configuration_per_combination(tmp_path, mnist_root):
    """The issue's sweep: 2 x 2 values of keys nobody listed anywhere, 2 seeds each -> 4 configurations, n = 2."""
    swept = ("neuron.slope=1,8", "encoder.gain=0.5,1.0", "seed=0,1", "T=2")
    result = train(*swept, cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert report([str(sweep)]) == 0
    header = [cell.strip() for cell in (sweep / "results.md").read_text().splitlines()[0].strip("|").split("|")]
    rows = table_rows(sweep / "results.md")
    assert len(rows) == 4
    slope, gain, n = header.index("neuron.slope"), header.index("encoder.gain"), header.index("n")
    assert sorted((row[slope], row[gain], row[n]) for row in rows) == [
        ("1", "0.5", "2"), ("1", "1.0", "2"), ("8", "0.5", "2"), ("8", "1.0", "2")
    ]  # fmt: skip
    assert report([str(sweep), "--reference", "neuron.slope=8,encoder.gain=0.5"]) == 0
    # every swept key is an HParams column in TensorBoard, the seed too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = next(iter(results(tmp_path).values()))["run_dir"]
    content = EventAccumulator(run_dir).Reload().PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {"neuron.slope", "encoder.gain", "seed", "T"} <= set(session.hparams)
