import os
import platform
import subprocess
import sys

import pytest

# Frees a 64 MiB tensor and prints how much of it the process still holds (MiB of resident memory dropped).
PROBE = """
import os, snn, torch
def rss(): return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
x = torch.ones(16 * 2**20)
held = rss()
del x
print(round(held - rss()))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.parametrize("setting", [None, "default"])
def test_freed_activations_stay_with_the_process(setting):
    """`import snn` keeps freed large blocks (the next training step reuses their pages instead of faulting fresh
    zeroed ones in); SNN_MALLOC=default leaves glibc returning them to the kernel."""
    env = {k: v for k, v in os.environ.items() if k != "SNN_MALLOC"} | ({"SNN_MALLOC": setting} if setting else {})
    dropped = int(
        subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    assert (dropped < 8) if setting is None else (dropped > 56)
