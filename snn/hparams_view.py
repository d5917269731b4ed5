"""What TensorBoard shows of runs: each run's HParams session (its identity, no experiment of its own) and, at the
end of a Hydra multirun, one experiment summary in the sweep folder that declares the keys that differ across its
jobs first and the accuracies first, so that the HParams tab opens on what the sweep compared.

TensorBoard's HParams plugin takes the first experiment summary it finds for all runs; without one it derives the
columns from the runs' session starts (keys that differ first), so a run declares none of its own."""

import time
from pathlib import Path

from google.protobuf import struct_pb2
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from snn.run_groups import is_class_path
from snn.run_identity import NOT_IDENTITY

# The HParams columns of the metrics, in this order: what a comparison reads first, then the costs.
METRICS = (
    "test/acc",
    "val/acc_best",
    "test/loss",
    "test/firing_rate/layer1",
    "test/spikes_per_sample",
    "test/synops",
    "test/macs",
    "test/energy_nJ",
)
EXPERIMENT_FOLDER = "hparams"


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def _value(value) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=str(value))


def _swept_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a multirun sweeps over, from the multirun.yaml Hydra wrote before its jobs (None: unreadable)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra_cfg = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
        overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    except Exception:  # noqa: BLE001 - only a name depends on it: fall back to all overrides
        return None
    searched = hydra_cfg.sweeper.get("params") or {}  # Optuna's search space
    return {o.key_or_group for o in overrides if o.is_sweep_override()} | set(searched)


def trial_name() -> str:
    """The run's name in the HParams table, readable where the table cuts it short: what this job of a sweep set
    (`encoder=rate`), or a run's overrides, then its start time (runs of other sweeps may share the first part)."""
    when = time.strftime("%m-%d %H:%M:%S")
    if not HydraConfig.initialized():
        return ""  # trained from Python: the run's folder names it
    hydra_cfg = HydraConfig.get()
    keys = {o: o.split("=")[0].lstrip("+~") for o in hydra_cfg.overrides.task}
    unnamed = set(NOT_IDENTITY) - {"seed"}  # what cannot change a result (paths, threads, ...) does not name a run
    overrides = [o for o, key in keys.items() if key not in unnamed and not key.startswith("hydra")]
    if hydra_cfg.mode == RunMode.MULTIRUN:
        swept = _swept_keys(Path(hydra_cfg.sweep.dir))
        overrides = [o for o in overrides if swept is None or keys[o] in swept] or overrides
    return f"{','.join(overrides) or 'defaults'} · {when}"


def session_summaries(params: dict, name: str = "") -> list[Summary]:
    """A run's session: its hparams (numbers, strings, booleans), marked ended, so the HParams tab lists the run from
    its start and picks up its metrics' scalars as they are logged; `name`: its trial id there (default: its path)."""
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time(), group_name=name)
    for key, value in params.items():
        start.hparams[key].CopyFrom(_value(value))
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    return [
        _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
        _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ]


def log_session(logger: TensorBoardLogger, params: dict) -> None:
    writer = logger.experiment._get_file_writer()
    for summary in session_summaries(params, trial_name()):
        writer.add_summary(summary)


def session_hparams(run_dir: Path) -> dict | None:
    """The hparams of the session start a run folder's events hold (written before training: read no further)."""
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    content = value.metadata.plugin_data.content
                    return dict(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)
    return None


def _type(values: list[struct_pb2.Value]) -> int:
    kinds = {value.WhichOneof("kind") for value in values}
    kind = kinds.pop() if len(kinds) == 1 else "string_value"
    return {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64}.get(
        kind, api_pb2.DATA_TYPE_STRING
    )


def experiment(sessions: list[dict]) -> api_pb2.Experiment:
    """Every key the sessions hold, those whose values differ first (differs=true); the metrics in METRICS' order."""
    # `neuron._target_` says again what `neuron` says: not a column
    names = sorted({name for session in sessions for name in session if not is_class_path(name)})
    values = {name: [s[name] for s in sessions if name in s] for name in names}
    differs = {name: len({v.SerializeToString() for v in values[name]}) > 1 or len(values[name]) < len(sessions)
               for name in names}  # fmt: skip
    infos = []
    for name in sorted(names, key=lambda n: (not differs[n], n)):
        info = api_pb2.HParamInfo(name=name, type=_type(values[name]), differs=differs[name])
        if info.type == api_pb2.DATA_TYPE_STRING:  # a filter with a tick box per value
            info.domain_discrete.extend(sorted({v.string_value for v in values[name]}))
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag) for tag in METRICS]
    return api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())


def write_sweep_experiment(sweep_dir: Path) -> None:
    """The experiment summary of the jobs under `sweep_dir`, in `<sweep_dir>/hparams/` (TensorBoard lists that
    folder as a run without data, named for what it holds); one written before (a sweep run again) is replaced."""
    from torch.utils.tensorboard import SummaryWriter

    folder = sweep_dir / EXPERIMENT_FOLDER
    runs = sorted({events.parent for events in sweep_dir.rglob("events.out.tfevents.*")} - {sweep_dir, folder})
    sessions = [found for found in map(session_hparams, runs) if found]
    if not sessions:
        return
    for older in folder.glob("events.out.tfevents.*.sweep"):  # TensorBoard would take the first it finds
        older.unlink()
    data = plugin_data_pb2.HParamsPluginData(experiment=experiment(sessions))
    with SummaryWriter(str(folder), filename_suffix=".sweep") as writer:
        writer._get_file_writer().add_summary(_summary(metadata.EXPERIMENT_TAG, data))


class SweepHParams(Callback):
    """At the end of a multirun: the sweep folder's experiment summary (see the module's docstring)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write_sweep_experiment(sweep_dir)
