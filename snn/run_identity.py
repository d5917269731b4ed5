"""What identifies a run: its config-group choices and its whole resolved config, flattened to `group.key` names.

results.json records these keys at its top level and TensorBoard's HParams get them (with the seed), so
`snn.report` can group runs that agree on every one of them but the seed, and name each configuration by the keys
that differ. Nothing here lists the keys that count: every key counts except the few below, which cannot change a
result.
"""

import json

# Where files go, what is printed, how many threads compute the same numbers, how a sweep was launched.
NOT_IDENTITY = (
    "seed",  # what repeats vary: the report's n
    "ckpt_path",
    "conversion.checkpoint",  # the ANN a converted run came from (snn.convert): its seed is the run's seed
    "overwrite",
    "torch_threads",
    "data.root",
    "data.download",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "experiment",  # group choices that only launch sweeps; the values they set are in the config
    "hparams_search",
)
# A non-spiking model uses no neuron, no input encoding and no time steps: runs that differ only there are one.
UNUSED_WITHOUT_SPIKES = ("T", "neuron", "encoder")
# What results.json holds besides the identity and the measurements: the seed, the record, where things are.
RECORDS = ("seed", "wall_time_s", "best_checkpoint", "run_dir", "config", "choices")


def _flatten(node, prefix: str, top: dict, out: dict) -> None:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if prefix and key in top and value == top[key]:
            continue  # a reference to a top-level group (model.neuron is ${neuron}, encoder.T is ${T}): said once
        if isinstance(value, dict) and value:
            _flatten(value, name + ".", top, out)
        else:
            out[name] = value


def identity(config: dict, choices: dict, spiking: bool) -> dict:
    """`{name: value}`: the group choices (`neuron: lif`), then every leaf of the resolved `config` (`neuron.beta:
    0.9`), without NOT_IDENTITY and, for a non-spiking model, without what it does not use."""
    unused = () if spiking else UNUSED_WITHOUT_SPIKES
    keys = {group: choice for group, choice in choices.items() if not group.startswith("hydra")}
    _flatten(config, "", config, keys)
    return {key: value for key, value in keys.items() if key not in NOT_IDENTITY and key.split(".")[0] not in unused}


def is_measurement(key: str) -> bool:
    return key.startswith(("test/", "val/", "train/"))


def identity_of(result: dict) -> dict:
    """The identity a results.json holds at its top level (also one written before the whole config was
    recorded, whose top level held a fixed set of choices): every key but the seed, measurements and the record.
    The epochs actually trained count, so that a run stopped early is not averaged with finished ones."""
    return {k: v for k, v in result.items() if k not in RECORDS and not is_measurement(k)}


def hparams(identity: dict, seed: int) -> dict:
    """TensorBoard's HParams take numbers, strings and booleans: lists and None become their JSON text."""
    plain = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in identity.items()}
    return {**plain, "seed": seed}
