"""Keep the memory NumPy frees inside the process, so the next window's arrays reuse it.

glibc serves every allocation above 128 KiB (a window's activations, gate gradients and
logits: megabytes each) with a fresh mmap and returns it to the system on free, so each
window faults all those pages in again, and under a virtual machine a page fault is dear:
the forward pass of the `char` preset's window (1 x 512, B 32, T 50) took 66 ms with 185,000
page faults, 42 ms with 11,000 once freed memory stayed (AMD EPYC under KVM, 2026-12-03).
`keep_freed_memory` raises glibc's mmap and trim thresholds (mallopt) for this process; the
CLI calls it at start. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
THRESHOLD = 1 << 30  # bytes: arrays below it come from the heap, and up to it stays free there


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds so freed memory is kept for reuse; whether it could."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD) and mallopt(M_TRIM_THRESHOLD, THRESHOLD))
