import ctypes
import os
import platform
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"  # the project's own config folder (conf/<group>/<option>.yaml)

# Before torch is imported: torch then backs large tensors with transparent huge pages, which makes the first touch
# of each fresh activation (the conv SNN allocates ~50 MB ones every step) about 3x cheaper on Linux.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _keep_freed_memory() -> None:
    """glibc hands large blocks back to the kernel on free, so every training step faults its activations in again
    (the kernel zeroing each page): half the LIF kernel's time for the MLP. Serving them from the heap and keeping
    freed memory there makes the next step reuse the same pages; the process keeps its peak working set.
    SNN_MALLOC=default leaves glibc's settings alone."""
    if os.environ.get("SNN_MALLOC") == "default" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks under 1 GiB come from the heap
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: free memory at the heap's top stays (up to 2 GiB)
    except (OSError, AttributeError):  # not glibc after all: its defaults stay
        pass


_keep_freed_memory()
