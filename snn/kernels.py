"""The C++ CPU kernels in `snn/csrc/`: event-driven products for spike inputs (`snn.sparse_input`), the LIF
recurrences through time (`snn.neurons`) and channels-last max-pooling (`snn.pooling`). Compiled on first use and
cached by torch (~/.cache/torch_extensions); where that is not possible, or with SNN_KERNELS=0 in the environment,
the callers run their plain tensor code. SNN_KERNELS=require turns a failed build into an error (CI, where a silent
fallback would hide broken kernels).

On GPUs the neurons' recurrences (LIF, ALIF, Synaptic) run as Triton kernels (`snn.triton_kernels`,
`snn.triton_temporal`; inside a recurrent layer `snn.triton_recurrent`), where Triton imports; SNN_KERNELS=triton
forces them (also on CPU tensors under TRITON_INTERPRET=1, Triton's interpreter: how CI tests them) and stops with
one line where they cannot run. `backend` decides which code runs the time loops.
"""

import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch

from snn.checks import ConfigError

mode = os.environ.get("SNN_KERNELS", "1")
enabled = mode != "0"
SOURCES = sorted(Path(__file__).with_name("csrc").glob("*.cpp"))  # every kernel file: no list to keep in step
FLOAT_OR_BF16 = (torch.float32, torch.bfloat16)  # what the LIF and pooling kernels take (bf16: under autocast)
TRITON_DTYPES = (*FLOAT_OR_BF16, torch.float16)  # the Triton kernels are generic over the current's type
log = logging.getLogger(__name__)


def _cpu_tag() -> str:
    """Built with -march=native, so one cache entry per CPU type (home folders shared across machines)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _source_tag() -> str:
    """One cache entry per checkout and source version: torch's build file holds the sources' absolute paths, so two
    checkouts sharing one entry rebuild it in turn (minutes, inside whichever process loads it next)."""
    digest = hashlib.sha1()
    for source in sorted(SOURCES[0].parent.iterdir()):  # headers too
        digest.update(str(source.resolve()).encode() + source.read_bytes())
    return digest.hexdigest()[:8]


@functools.cache
def load():
    """The compiled extension, or None (with one warning) where it cannot be built."""
    try:
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU machines
        from torch.utils.cpp_extension import load as build

        log.info("loading the CPU kernels (compiled on first use, about a minute, then cached)")
        # fp-contract=off: no fused multiply-adds, so the LIF spikes match the tensor code bit for bit
        flags = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]
        name = f"snn_kernels_{_cpu_tag()}_{_source_tag()}"
        return build(name, [str(s) for s in SOURCES], extra_cflags=flags, extra_ldflags=["-fopenmp"])
    except Exception as error:  # no compiler, no headers, ...: the tensor code still works
        if mode == "require":
            raise RuntimeError(f"SNN_KERNELS=require: the C++ kernels did not build: {error}") from error
        warnings.warn(f"C++ kernels unavailable, using plain tensor code: {str(error).splitlines()[0]}")
        return None


def usable(*tensors: torch.Tensor, dtypes=(torch.float32,)) -> bool:
    """Whether the CPU kernels apply: tensors of `dtypes` on the CPU, and the extension built. Kernels for float32 only
    also stay out of autocast, whose lower precision they would undo."""
    return (
        enabled
        and all(t.device.type == "cpu" and t.dtype in dtypes for t in tensors)
        and (torch.bfloat16 in dtypes or not torch.is_autocast_enabled("cpu"))
        and load() is not None
    )


@functools.cache
def _import_triton():
    """(snn.triton_temporal, None), or (None, why it cannot be imported) on machines without (a working) Triton."""
    try:
        from snn import triton_temporal  # which imports snn.triton_kernels

        return triton_temporal, None
    except Exception as error:  # ImportError, or a Triton that fails on import
        return None, f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def triton():
    """snn.triton_temporal (every Triton time loop), or None with one warning (the neurons then run their tensor
    code)."""
    module, reason = _import_triton()
    if module is None:
        _warn_no_triton(reason)
    return module


@functools.cache  # once per process
def _warn_no_triton(reason: str) -> None:
    warnings.warn(f"Triton unavailable ({reason}): the neurons run as tensor ops per time step on this GPU")


def _forced_triton(tensor: torch.Tensor) -> str:
    """SNN_KERNELS=triton: "triton", or one line saying why it cannot run on `tensor` (never a fallback)."""
    module, reason = _import_triton()
    if module is None:
        raise ConfigError(f"SNN_KERNELS=triton: Triton cannot be imported here ({reason}); unset SNN_KERNELS")
    device = tensor.device.type
    if device != "cuda" and not (device == "cpu" and module.INTERPRETED):
        needs = " without TRITON_INTERPRET=1 (its interpreter)" if device == "cpu" else ""
        raise ConfigError(f"SNN_KERNELS=triton: Triton cannot run on {device} tensors{needs}; unset SNN_KERNELS")
    if tensor.dtype not in TRITON_DTYPES:
        allowed = "float32, bfloat16 or float16"
        raise ConfigError(f"SNN_KERNELS=triton: the Triton kernels take {allowed} currents, not {tensor.dtype}")
    return "triton"


def backend(tensor: torch.Tensor) -> str:
    """Which code runs the neurons' time loops on `tensor`: "cpp" (csrc/lif.cpp, alif.cpp, synaptic.cpp: CPU),
    "triton" (snn.triton_kernels, snn.triton_temporal: CUDA) or "torch" (tensor ops per step, anywhere). The one
    place that decides, for LIF, ALIF, Synaptic and the recurrent layer alike."""
    if mode == "triton":
        return _forced_triton(tensor)
    if not enabled:
        return "torch"
    if tensor.device.type == "cuda" and tensor.dtype in TRITON_DTYPES:
        return "triton" if triton() is not None else "torch"
    return "cpp" if usable(tensor, dtypes=FLOAT_OR_BF16) else "torch"


def time_loops(name: str):
    """The module with the fused time loops (`lif_`, `alif_` and `synaptic_forward` / `_backward`, the same
    signatures in both) for a backend "cpp" or "triton"."""
    return load() if name == "cpp" else triton()
