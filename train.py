"""Train one configuration: `python train.py model=snn encoder=rate T=25` (add -m to sweep)."""

import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from snn.checks import ConfigError
from snn.config import validate
from snn.data import DataError
from snn.failed_start import clean_up, failure_line
from snn.run_folder import TRAIN_LOG
from snn.run_setup import STORAGE_ERRORS, Interrupted, quote_path_overrides, rank, storage_error


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return _run(cfg, run_dir)
    except BaseException as error:
        reason = failure_line(error)
        if reason:  # a run that failed before its first training step leaves nothing behind
            clean_up(run_dir, reason, resumed=bool(cfg.get("ckpt_path")), writes=rank() == 0)
        raise


def _run(cfg: DictConfig, run_dir: Path) -> float:
    try:
        validate(cfg)
        from snn.training import train  # imported after validation: bad input fails fast

        results = train(cfg, run_dir, dict(HydraConfig.get().runtime.choices))
    except Interrupted as error:  # a sweep stops too: the scheduler stopped this process
        sys.exit(f"error: {error}")
    except (ConfigError, DataError, FloatingPointError) as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            print(f"error: {error}", file=sys.stderr)
            raise  # an exception, not an exit: the sweep's other jobs still run and keep their results
        sys.exit(f"error: {error}")
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise
        sys.exit(storage_error(error))  # e.g. the disk filled up while a checkpoint was being written
    run = os.path.relpath(results["run_dir"])
    if rank() == 0:  # one line per run, also when torchrun started one process per device
        loss = math.nan if results["test/loss"] is None else results["test/loss"]  # null in results.json
        line = f"test/acc={results['test/acc']:.4f} test/loss={loss:.4f} run={run}"
        print(line)
        TRAIN_LOG.info(line)  # the log of a run under nohup or SLURM ends like its output
    if results["val/acc_best"] is None:  # a sweeper tunes on validation data only: this run has nothing to offer
        print("no validation score (validation was skipped): this run cannot be a search objective", file=sys.stderr)
    return results["val/acc_best"]


if __name__ == "__main__":
    sys.argv[1:] = quote_path_overrides(sys.argv[1:], ("ckpt_path", "data.root", "hydra.run.dir"))
    main()
