"""Freed memory stays in the process: a window's fresh arrays no longer fault their pages in."""

import subprocess
import sys

import pytest

FAULTS = """
import resource, sys
import numpy as np
from lstm_lm.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a window's arrays: five of 16 MiB (4,096 pages each), then all freed
    window = [np.ones(1 << 21) for _ in range(5)]
    del window
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return int(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_freed_arrays_are_reused_without_page_faults():
    default = faults("default")  # here 21,535: glibc trims the freed windows, the next faults
    if default < 4 * 4096:
        pytest.skip(f"this allocator keeps freed memory already ({default} page faults)")
    assert faults("keep") < default / 4  # here 2,582
