"""Convert a trained ANN into a spiking net: `python -m snn.convert ckpt=outputs/<ann run>/checkpoints/best.ckpt T=32`
(add -m to sweep: `-m ckpt=... T=4,8,16,32` makes one run folder per T). See conf/convert.yaml, docs/conversion.md."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from snn.checkpoints import CheckpointError
from snn.checks import ConfigError
from snn.data import DataError
from snn.failed_start import clean_up, note_new
from snn.run_folder import TRAIN_LOG, claim
from snn.run_setup import check_writable, quote_path_overrides, run_name


def ann_name(ckpt) -> str:
    """A sweep job's folder is <sweep>/<this>/<overrides>: the converted checkpoint, named by its sweep and run folders
    and its name (outputs/multirun/ann/seed=0/checkpoints/best.ckpt: ann_seed=0_best), so that several ANNs in one
    sweep (ckpt=a,b,c) each get their own folders."""
    path = Path(str(ckpt))
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_name("_".join([*run.parts[-2:], path.stem]).lstrip("_"))


OmegaConf.register_new_resolver("ann_name", ann_name, replace=True)


class CheckOnStart(Callback):
    """The values, and that the run (or sweep) folder holds no run and can be written, before Hydra makes it."""

    @staticmethod
    def _check(config: DictConfig, folder: Path, multirun: bool) -> None:
        from snn.conversion_run import check_values

        try:
            check_values(config, sweeping=multirun)  # here without swept values (ckpt=a,b): each job checks its own
            nested = [p for p in folder.iterdir() if p.is_dir()] if multirun and folder.is_dir() else []
            for sweep_or_ann in (folder, *nested):  # a sweep's jobs are <sweep>/<ANN>/<T>: look two levels down
                claim(sweep_or_ann, config.get("overwrite", False), multirun)
        except ConfigError as error:
            sys.exit(f"error: {error}")
        check_writable(folder if multirun else folder.parent)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        note_new(Path(config.hydra.run.dir))  # a failed conversion removes only what this run made
        self._check(config, Path(config.hydra.run.dir), multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, Path(config.hydra.sweep.dir), multirun=True)


@hydra.main(config_path="../conf", config_name="convert", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        from snn.conversion_run import convert  # after Hydra: bad input fails fast

        results = convert(cfg, run_dir)
    except (CheckpointError, ConfigError, DataError) as error:
        clean_up(run_dir, f"error: {error}", resumed=False, writes=True)
        sys.exit(f"error: {error}")
    line = f"test/acc={results['test/acc']:.4f} test/loss={results['test/loss']:.4f} run={run_dir}"
    print(line)
    TRAIN_LOG.info(line)


if __name__ == "__main__":
    sys.argv[1:] = quote_path_overrides(sys.argv[1:], ("ckpt", "data.root", "hydra.run.dir"))
    main()
