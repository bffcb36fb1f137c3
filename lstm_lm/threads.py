"""How the model uses the CPU's cores, kept apart from the maths.

Two decisions live here: the time loop's per-step products (B x H by H x G) are too small for
threaded BLAS, so they run on one BLAS thread; and the softmax rows, whose float32 `exp` is
scalar NumPy code that releases the GIL, are spread over a small thread pool while the BLAS
threads are idle.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from lstm_lm.losses import softmax_cross_entropy_
from lstm_lm.parallel import cores_per_rank

# Per-step GEMMs of the time loop smaller than this (multiply-adds) run on one BLAS thread:
# threaded BLAS gains nothing on them, and when another process keeps the cores busy its
# threads spin on each other (measured: 80x slower steps for a 1 x 128 model).
SERIAL_BLAS_MACS = 8_000_000


class Threads:
    """The BLAS thread limit of the time loop and the softmax's thread pool."""

    def __init__(self, softmax_threads: int | None = None):
        self._blas = ThreadpoolController()
        self.cores = cores_per_rank()  # all of them, unless MPI ranks share this machine
        if self.cores < (os.cpu_count() or 1):
            self._limit = self._blas.limit(limits=self.cores, user_api="blas")
        self.softmax_threads = softmax_threads or min(4, self.cores)
        self._pool = ThreadPoolExecutor(self.softmax_threads) if self.softmax_threads > 1 else None

    def time_loop(self, macs_per_step: int):
        """Context for a time loop whose per-step GEMM has this many multiply-adds."""
        if macs_per_step < SERIAL_BLAS_MACS:
            return self._blas.limit(limits=1, user_api="blas")
        return contextlib.nullcontext()

    def softmax_cross_entropy_(self, logits: np.ndarray, targets: np.ndarray, dscale):
        """`losses.softmax_cross_entropy_` with the rows spread over the pool."""
        return softmax_cross_entropy_(logits, targets, dscale, self._pool, self.softmax_threads)
