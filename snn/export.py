"""Export a trained spiking model to NIR:

    python -m snn.export ckpt=outputs/<run>/checkpoints/best.ckpt [out=<file>.nir] [overwrite=true]
        [hydra.searchpath=[file://<dir>]]   (a run of your own component: its config folder, as when training)

writes `outputs/<run>/export/best.nir` (by default) and prints its path. See docs/nir.md.
"""

import os
import sys
from pathlib import Path

import nir

from snn.checkpoints import searchpath_folders
from snn.nir_graph import NIRError, to_nir

KEYS = ("ckpt", "out", "overwrite", "hydra.searchpath")
USAGE = (
    "python -m snn.export ckpt=outputs/<run>/checkpoints/best.ckpt [out=<file>.nir] [overwrite=true] "
    "[hydra.searchpath=[file://<dir>]]"
)


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments; a value may itself contain `=` and `,` (run folders are named like T=25,encoder=rate)."""
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise NIRError(f"unknown argument {arg!r}; usage: {USAGE}")
        args[key] = value.strip("'\"")
    if not args.get("ckpt"):
        raise NIRError(f"ckpt is required; usage: {USAGE}")
    if args.setdefault("overwrite", "false").lower() not in ("true", "false"):
        raise NIRError(f"overwrite={args['overwrite']!r} is not allowed: true or false")
    return args


def default_out(ckpt: Path) -> Path:
    """outputs/<run>/checkpoints/best.ckpt -> outputs/<run>/export/best.nir; any other file: <its folder>/export/."""
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "export" / f"{ckpt.stem}.nir"


def run_metadata(cfg, choices: dict, ckpt: Path) -> dict:
    """What a reader of the graph needs to feed it and read it as trained: T, the encoder, the data, its origin."""
    from snn.build import data_class

    encoder = {k: v for k, v in cfg.encoder.items() if k not in ("_target_", "T") and v is not None}
    data = choices.get("data") or "mnist"  # runs from before the data group trained on MNIST
    shape = list(data_class(cfg).input_shape)  # the image; the graph's input is one step of the encoder's output
    return {
        "T": int(cfg.T),
        "encoder": {"name": choices.get("encoder") or cfg.encoder._target_.rsplit(".", 1)[-1], **encoder},
        "data": data,
        "input": f"{data} image {shape}, grey levels in [0, 1], encoded over T steps by the encoder",
        "model": str(choices.get("model", cfg.model._target_.rsplit(".", 1)[-1])),
        "neuron": str(choices.get("neuron", cfg.neuron._target_.rsplit(".", 1)[-1])),
        "checkpoint": str(ckpt),
    }


def export(ckpt: Path, out: Path, overwrite: bool = False, config_folders=()) -> Path:
    from snn.build import model_input_shape
    from snn.evaluation import load_classifier  # the project's checkpoint reader (heavy imports: only here)

    if out.exists() and not overwrite:
        raise NIRError(f"{out} exists; not overwritten (pass overwrite=true, or out=<another file>)")
    module, cfg = load_classifier(ckpt, config_folders=config_folders)
    try:
        metadata = run_metadata(cfg, (module.run_config or {}).get("choices", {}), ckpt)
        graph = to_nir(module.net, model_input_shape(cfg), metadata)  # one step of the encoder's output
    except NIRError as error:
        raise NIRError(f"{ckpt}: {error}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:  # written aside, then renamed: an interrupted export leaves no half-written .nir
        nir.write(scratch, graph)
        os.replace(scratch, out)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return out


def main(argv: list[str]) -> None:
    args = {}
    try:
        args = parse_args(argv)
        ckpt = Path(args["ckpt"])
        out = Path(args["out"]) if args.get("out") else default_out(ckpt)
        folders = searchpath_folders(args["hydra.searchpath"]) if "hydra.searchpath" in args else ()
        print(export(ckpt, out, overwrite=args["overwrite"].lower() == "true", config_folders=folders))
    except ValueError as error:  # NIRError, and the one-line errors of the checkpoint reader and the config checks
        sys.exit(f"error: {error}")
    except OSError as error:
        sys.exit(f"error: cannot write {error.filename or args.get('out') or 'the export'}: {error.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
