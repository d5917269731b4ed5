"""Evaluate a checkpoint on the test set, or classify images: see conf/evaluate.yaml."""

import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from snn.checks import ConfigError
from snn.data import DataError
from snn.digits import ImageError
from snn.evaluation import (
    CheckpointError,
    classify_files,
    classify_test_sample,
    default_repeats,
    evaluate_test_set,
    load_model,
    prediction_line,
    test_set_summary,
    write_json,
)
from snn.nir_graph import NIRError
from snn.run_setup import quote_path_overrides, user_config_folders


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.ckpt is None:
            raise ConfigError("ckpt is required: ckpt=outputs/<run>/checkpoints/best.ckpt")
        torch.manual_seed(cfg.seed)
        single = cfg.image is not None or cfg.sample is not None  # images are classified one at a time
        batch = 1 if single else cfg.data.batch_size
        module, info = load_model(cfg.ckpt, cfg.T, cfg.get("encoder"), batch, user_config_folders())
        if cfg.image is not None or cfg.sample is not None:
            results = (
                classify_files(module, Path(cfg.image), out_dir)
                if cfg.image is not None
                else classify_test_sample(module, cfg.data.root, cfg.sample, out_dir, cfg.seed, cfg.data.download)
            )
            write_json(out_dir / "predictions.json", {**info, "predictions": results})
            print("\n".join(map(prediction_line, results)))
        else:
            repeats = cfg.repeats or default_repeats(module)
            info["precision"] = cfg.precision or info["precision"]
            data = cfg.data
            tested = evaluate_test_set(
                module, data.root, data.batch_size, out_dir, repeats, cfg.seed, info["precision"], data.download
            )
            write_json(out_dir / "metrics.json", {**info, **tested})
            print(test_set_summary({**info, **tested}))
    except (CheckpointError, ConfigError, DataError, ImageError, NIRError) as error:
        sys.exit(f"error: {error}")
    print(f"written to {Path(out_dir).relative_to(Path.cwd()) if out_dir.is_relative_to(Path.cwd()) else out_dir}")


if __name__ == "__main__":
    sys.argv[1:] = quote_path_overrides(sys.argv[1:], ("ckpt", "image"))
    main()
