"""One conversion run (python -m snn.convert): read an `ann`/`cnn` checkpoint, build its spiking twin's run config,
convert (snn/conversion.py), test it with Lightning's test loop, and leave a run folder as train.py does:
checkpoints/best.ckpt (a checkpoint of this project: evaluate.py, snn.export refuse or take it as any other),
TensorBoard events with HParams, results.json with the run's identity."""

import copy
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from snn import CONF
from snn.build import build_classifier
from snn.checkpoint_io import AtomicCheckpointIO
from snn.checks import ConfigError, is_count, is_number, require
from snn.conversion import activation_scales, ann_stages, load_converted
from snn.evaluation import load_classifier
from snn.events_logger import EventsLogger
from snn.hparams_view import log_session
from snn.memory import check_evaluation
from snn.qcfs import QCFS
from snn.run_identity import hparams, identity
from snn.run_setup import user_config_folders
from snn.training import finite

TWINS = {"snn.architectures.MLP": "snn", "snn.architectures.CNN": "csnn"}  # ANN class -> its spiking model option
ARCHITECTURE_KEYS = ("hidden_sizes", "channels", "hidden_size", "pool")  # what the spiking twin takes over
NORMALISATIONS = ("percentile", "max")
NEURONS = ("if", "signed_if")  # conf/neuron options a converted net can take: reset by subtraction, threshold 1


def check_values(cfg: DictConfig, sweeping: bool = False) -> None:
    """The convert config's own keys, before anything is read or written; ConfigError (one line) otherwise.
    `sweeping`: a sweep's base config, which holds no swept values (a swept ckpt is still null there)."""
    if cfg.get("ckpt") is None and not sweeping:
        raise ConfigError("ckpt is required: ckpt=outputs/<ann or cnn run>/checkpoints/best.ckpt")
    require(is_count(cfg.T), "T", cfg.T, "an integer >= 1")
    require(cfg.neuron_model in NEURONS, "neuron_model", cfg.neuron_model, ", ".join(NEURONS))
    require(cfg.normalisation in NORMALISATIONS, "normalisation", cfg.normalisation, ", ".join(NORMALISATIONS))
    p = cfg.percentile
    require(is_number(p) and 0 < p <= 100, "percentile", p, "a number in (0, 100]")
    batches = cfg.calibration_batches
    require(is_count(batches), "calibration_batches", batches, "an integer >= 1")
    start = cfg.initial_membrane
    ok = start is None or (is_number(start) and 0 <= start < 1)
    require(ok, "initial_membrane", start, "null (0.5 for QCFS nets, 0 for ReLU nets) or a number in [0, 1)")
    require(is_count(cfg.data.batch_size), "data.batch_size", cfg.data.batch_size, "an integer >= 1")
    require(isinstance(cfg.get("overwrite", False), bool), "overwrite", cfg.get("overwrite"), "true or false")


def _group(group: str, option: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))


def spiking_run_config(cfg: DictConfig, ann: dict, choices: dict, qcfs: bool) -> tuple[dict, dict]:
    """The spiking twin's run config: the ANN's (data, training record, seed) with model=snn|csnn, neuron=if (reset
    by subtraction, threshold 1), encoder=direct, T, readout=integrator, and a `conversion` section saying how."""
    target = ann["model"].get("_target_")
    if target not in TWINS:
        raise ConfigError(f"model._target_={target!r} cannot be converted: an ann or cnn checkpoint is needed")
    option = TWINS[target]
    model, encoder = _group("model", option), _group("encoder", "direct")
    neuron = _group("neuron", cfg.neuron_model)
    start = cfg.initial_membrane if cfg.initial_membrane is not None else (0.5 if qcfs else 0.0)
    neuron.update(threshold=1.0, initial=float(start))
    if "reset" in neuron:  # signed_if's reset is subtraction by construction
        neuron["reset"] = "subtract"
    encoder["T"] = cfg.T
    model.update({k: ann["model"][k] for k in ARCHITECTURE_KEYS if k in model and k in ann["model"]})
    model.update(neuron=neuron, readout="integrator")
    percentile = 100.0 if cfg.normalisation == "max" else float(cfg.percentile)
    config = {**copy.deepcopy(ann), "model": model, "neuron": neuron, "encoder": encoder, "T": cfg.T}
    config["conversion"] = {  # the identity: a converted run is its own configuration in snn.report
        "converted_from": choices.get("model") or option,
        "activation": ann["model"].get("activation", "relu"),  # checkpoints from before the key: ReLU
        "levels": ann["model"].get("levels") if qcfs else None,
        "normalisation": "qcfs_clip" if qcfs else cfg.normalisation,
        "percentile": None if qcfs else percentile,
        "calibration_images": None if qcfs else cfg.calibration_batches * cfg.data.batch_size,
        "checkpoint": str(cfg.ckpt),  # a record, not identity (snn.run_identity): each ANN seed converts its own
    }
    return config, {**choices, "model": option, "neuron": cfg.neuron_model, "encoder": "direct", "baseline": None}


def calibration_images(ann_config: dict, cfg: DictConfig) -> list[torch.Tensor]:
    """The first `calibration_batches` batches of the ANN's own training split (not validation, not test)."""
    data = instantiate({**ann_config["data"], "root": cfg.data.root, "download": cfg.data.download})
    data.setup("fit")
    images = data.splits["train"][0][: cfg.calibration_batches * cfg.data.batch_size]
    return list(images.split(cfg.data.batch_size))


def convert(cfg: DictConfig, run_dir: Path) -> dict:
    started, run_dir = time.time(), Path(run_dir)
    check_values(cfg)
    ann, ann_cfg = load_classifier(cfg.ckpt, None, user_config_folders())
    if ann.spiking:
        model = ann.run_config.get("choices", {}).get("model") or ann_cfg.model.get("_target_")
        raise ConfigError(f"{cfg.ckpt} is a spiking network (model={model}): conversion takes an ann or cnn checkpoint")
    stages = ann_stages(ann.net)
    qcfs = isinstance(stages[0].activation, QCFS)
    ann_config = OmegaConf.to_container(ann_cfg, resolve=True)
    config, choices = spiking_run_config(cfg, ann_config, ann.run_config.get("choices", {}), qcfs)
    module = build_classifier(OmegaConf.create(config), choices)
    images = [] if qcfs else calibration_images(ann_config, cfg)
    percentile = config["conversion"]["percentile"]
    load_converted(module.net, stages, activation_scales(ann.net, stages, images, percentile))
    check_evaluation(cfg.ckpt, cfg.T, cfg.data.batch_size, module.dataset.input_shape, module.net)

    run_identity, seed = identity(module.run_config["config"], choices, True), ann_config["seed"]
    logger = EventsLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False)
    log_session(logger, hparams(run_identity, seed))
    precision = str(ann_config["trainer"].get("precision", "32-true"))
    trainer = pl.Trainer(
        accelerator="auto", devices=1, precision=precision, logger=logger, plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir, enable_model_summary=False,
    )  # fmt: skip
    data = module.dataset(root=cfg.data.root, batch_size=cfg.data.batch_size, download=cfg.data.download)
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    best = run_dir / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(best, weights_only=True)
    results = {
        **run_identity,
        "seed": seed,  # the ANN's: converted runs of several ANN seeds are repeats of one configuration
        **{k: v for k, v in tested.items() if k.startswith("test/")},
        "val/acc_best": None,  # nothing was trained or validated
        "wall_time_s": round(time.time() - started, 1),
        "best_checkpoint": str(best),
        "run_dir": str(run_dir),
        "choices": choices,
        "config": module.run_config["config"],
    }
    results = finite(results)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return results
