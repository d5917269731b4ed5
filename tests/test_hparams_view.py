"""TensorBoard's HParams tab after a real sweep: the sweep folder declares the keys that differ across its jobs
(first, differs=true) and the accuracies first; each run holds its own session start with a readable trial name."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from snn.hparams_view import EXPERIMENT_FOLDER, session_hparams
from tests.test_sweeps import results, train


def plugin_data(folder: Path, tag: str):
    content = EventAccumulator(str(folder)).Reload().PluginTagToContent("hparams")
    return plugin_data_pb2.HParamsPluginData.FromString(content[tag])


@pytest.mark.slow
def test_a_sweep_declares_the_keys_that_differ_as_the_first_columns(tmp_path, mnist_root):
    result = train("encoder=rate,direct", "seed=0,1", "T=2", cwd=tmp_path, data_root=mnist_root)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = results(tmp_path)
    assert len(runs) == 4
    experiment = plugin_data(tmp_path / "sweep" / EXPERIMENT_FOLDER, "_hparams_/experiment").experiment
    infos = list(experiment.hparam_infos)
    differing = [info.name for info in infos if info.differs]
    # the encoder group and the keys only one encoder has; the seed; then the rest, which did not vary
    assert {"encoder", "encoder.gain", "seed"} <= set(differing) and "T" not in differing
    assert [info.name for info in infos[: len(differing)]] == differing  # first: the columns the table shows
    assert not [info.name for info in infos if info.name.endswith("._target_")]  # says what `encoder` says
    assert {"T", "neuron", "optimizer.lr"} <= {info.name for info in infos}
    assert [m.name.tag for m in experiment.metric_infos][:2] == ["test/acc", "val/acc_best"]
    for run in runs.values():  # each run: its own session start, no experiment of its own
        start = plugin_data(Path(run["run_dir"]), "_hparams_/session_start_info").session_start_info
        assert start.hparams["encoder"].string_value == run["encoder"]
        assert start.hparams["seed"].number_value == run["seed"]
        assert start.group_name.startswith(f"encoder={run['encoder']},seed={run['seed']} · ")  # not the folder path
        assert "_hparams_/experiment" not in EventAccumulator(run["run_dir"]).Reload().PluginTagToContent("hparams")
        assert session_hparams(Path(run["run_dir"]))["T"].number_value == 2
