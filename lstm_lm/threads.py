"""How the model uses the CPU's cores, kept apart from the maths.

Three decisions live here: the time loop's per-step products (G x H by H x B) run on one BLAS
thread where they are too small for threads to gain (not those whose weights outgrow a core's
cache); the softmax rows, whose float32 `exp` releases the GIL, are spread over a small thread
pool while the BLAS threads are idle; and while other processes keep the cores busy, evaluation
and sampling run on one thread, and so do training steps where that keeps their bits. There,
idle BLAS threads spinning for their next task take the core from the thread doing the work:
`eval` at batch 1 of a 2 x 200 model beside one busy process took 12.8 s with two threads, 6.6
s with one (5.2 s on a quiet machine). Training changes the thread count only where the bits
stay the same, since OpenBLAS rounds some products differently on one thread and on two, and a
resumed run must repeat an uninterrupted one (`same_bits` checks, once per shape).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from lstm_lm.losses import softmax_cross_entropy_
from lstm_lm.parallel import cores_per_rank

# Per-step GEMMs of the time loop smaller than this (multiply-adds) run on one BLAS thread,
# where a second gains nothing; from about here it does (feature-major products, 2 cores of an
# AMD EPYC, quiet: 0.8M multiply-adds 17 us on one thread and on two, 1.3M 40 vs 27 us,
# `small`'s (800, 200) x (200, 20) 89 vs 55 us; the same bits). On a busy machine
# Threads.evaluation and training_step put everything on one thread ...
SERIAL_BLAS_MACS = 1_000_000
# ... unless their weights are larger than this: each step then streams the weights from
# memory, and two cores' caches hold twice as much of them (batch 1, 1 x 512: the step's
# (1, 512) x (512, 2,048) product 143 us on one thread, 45 us on two; 1 x 650: 232 vs 88 us).
SERIAL_BLAS_WEIGHT_BYTES = 1 << 20


class OtherLoad:
    """How many cores other processes kept busy lately: the machine's busy time (/proc/stat,
    steal included) minus this process's CPU time, over wall time; measured again at most
    every `every` seconds. Linux; elsewhere always 0. `read` (the machine's and this
    process's CPU seconds so far) and `clock` are there for tests to stand in for the
    machine."""

    def __init__(self, every: float = 0.5, read=None, clock=time.monotonic):
        self.every, self.cores = every, 0.0
        self._read, self._clock = read or self.cpu_seconds, clock
        self._last = self._sample()

    @staticmethod
    def cpu_seconds() -> tuple[float, float] | None:
        """(CPU seconds the machine has been busy, CPU seconds of this process), or None."""
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def _sample(self) -> tuple[float, float, float] | None:
        seconds = self._read()
        return None if seconds is None else (self._clock(), *seconds)

    def __call__(self) -> float:
        if self._last is not None and self._clock() - self._last[0] >= self.every:
            now = self._sample()
            if now is not None:
                wall, busy, own = (a - b for a, b in zip(now, self._last))
                self.cores, self._last = max(0.0, (busy - own) / wall), now
        return self.cores


class Threads:
    """The BLAS thread limits (this process's share of the cores, the time loop, evaluation
    and training on a busy machine) and the softmax's thread pool."""

    def __init__(self, softmax_threads: int | None = None):
        self._blas = ThreadpoolController()
        self.cores = cores_per_rank()  # all of them, unless MPI ranks share this machine
        if self.cores < (os.cpu_count() or 1):
            self._limit = self._blas.limit(limits=self.cores, user_api="blas")
        self.softmax_threads = softmax_threads or min(4, self.cores)
        self._pool = ThreadPoolExecutor(self.softmax_threads) if self.softmax_threads > 1 else None
        self.other_load = OtherLoad()
        self._serial = False  # all on one thread for now: the machine is busy
        self._same_bits: dict[tuple, bool] = {}  # same_bits, by key

    def time_loop(self, macs_per_step: int, weight_bytes: int):
        """Context for a time loop whose per-step GEMM has this many multiply-adds, by a
        weight matrix of this many bytes."""
        if macs_per_step < SERIAL_BLAS_MACS and weight_bytes <= SERIAL_BLAS_WEIGHT_BYTES:
            return self.serial()
        return contextlib.nullcontext()

    def serial(self):
        """Context: BLAS on one thread."""
        return self._blas.limit(limits=1, user_api="blas")

    def same_bits(self, key: tuple, run) -> bool:
        """Whether run() returns the same arrays, bit for bit, on one BLAS thread as on this
        process's threads; asked once per key. OpenBLAS orders its sums by the shapes and the
        thread count, never by the numbers, so a run on random numbers answers for every run
        of the same shapes."""
        if key not in self._same_bits:
            try:
                threaded = run()
                with self.serial():
                    serial = run()
                self._same_bits[key] = all(map(np.array_equal, threaded, serial))
            except MemoryError:  # no room for the probe: keep the threads, lose nothing
                self._same_bits[key] = False
        return self._same_bits[key]

    def evaluation(self):
        """Context for an evaluation window: on one thread while other processes keep at
        least half a core busy."""
        return self._one_thread_while_busy(lambda: True)

    def training_step(self, keeps_bits):
        """Context for a training step: all of it on one thread while other processes keep at
        least half a core busy, if `keeps_bits()` says the step gives the same bits that way.
        Between threaded products idle BLAS threads spin, and beside a busy process they take
        the core from the one doing the work (char training beside one busy process:
        7,300-8,500 tokens/s threaded, 13,200-13,300 on one thread, as fast as one thread on a
        quiet machine; beside two, threaded, 426-445 tokens/s in three rounds of eight)."""
        return self._one_thread_while_busy(keeps_bits)

    @contextlib.contextmanager
    def _one_thread_while_busy(self, allowed):
        if self._serial or self.cores == 1 or self.other_load() < 0.5 or not allowed():
            yield
            return
        with self.serial():
            self._serial = True
            try:
                yield
            finally:
                self._serial = False

    def in_pieces(self, work, n: int) -> None:
        """work(piece) for slices that cut range(n) into one piece per pool thread, run on the
        pool (here, in order, where there is none or the machine is busy): for elementwise
        NumPy passes over large arrays, which run without the GIL."""
        pool = None if self._serial or self.other_load() >= 0.5 else self._pool
        if pool is None:
            work(slice(0, n))
            return
        cuts = np.linspace(0, n, self.softmax_threads + 1).astype(int)
        list(pool.map(work, [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]))

    def softmax_cross_entropy_(self, logits: np.ndarray, targets: np.ndarray, dscale):
        """`losses.softmax_cross_entropy_` with the rows spread over the pool."""
        pool = None if self._serial else self._pool
        return softmax_cross_entropy_(logits, targets, dscale, pool, self.softmax_threads)
