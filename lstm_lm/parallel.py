"""Synchronous data parallelism over MPI ranks (mpi4py), as Horovod does it: P processes
train the same model as one process.

The global batch of B streams is cut into P contiguous blocks, one per rank; each rank runs
forward and backward on its block and carries its streams' hidden state; the gradients are
summed over the ranks, so every rank makes the update that one process makes with the
whole batch, and the parameters stay identical everywhere. Per step the ranks exchange a
few scalars, one Allreduce of one flat buffer holding every dense gradient (tensor fusion),
and, for the sparse token rows of layer 0, the union of the rows some rank touched (ids
first, then only those rows).

Run under `mpiexec -n P` (MPICH, Open MPI, ...) a process finds its rank in the launcher's
environment; alone, `Group()` is the single process and mpi4py is never imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from lstm_lm import LMError

R = TypeVar("R")

# What launchers tell their processes: MPICH's Hydra and Slurm's PMI, Open MPI, MVAPICH.
SIZE_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
LOCAL_SIZE_ENV = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")
INSTALL = "pip install 'lstm-lm[mpi]' (in a checkout: pip install '.[mpi]')"
STALL_TIMEOUT = 300.0  # seconds a rank waits for the others in a collective before it gives up
LOST_GRACE = 5.0  # seconds a rank whose exchange failed leaves mpiexec to end the job (see _lost)
# An abort reaches mpiexec by another way than the aborting rank's stderr, and mpiexec ends
# the job without passing on output still on its way: a rank's error line written just
# before its abort was lost in a third of the runs of a stalled job with both cores busy.
LINE_GRACE = 0.5  # seconds between a rank's error line and its abort


def _env_int(names: tuple[str, ...]) -> int:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def launched_size() -> int:
    """Processes the MPI launcher started (1 without one)."""
    return _env_int(SIZE_ENV)


def cores_per_rank() -> int:
    """This process's share of the cores it may run on, when the launcher put several ranks
    on this machine: their BLAS and softmax threads must not oversubscribe the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // _env_int(LOCAL_SIZE_ENV))


class RanksError(LMError):
    """An error every rank raises together (so rank 0 alone reports it)."""


class Group:
    """The ranks that train together; alone (the default) every operation is the identity.
    Every method is collective: all ranks call it, in the same order."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.bytes_sent = 0  # by this rank's reductions, for `bench`
        self.error_fd = 2  # where `fail` writes: stderr, or a copy of it once it is quieted
        self._waiting_on: tuple[str, float] | None = None  # the collective under way, since
        self._hosts: list[str] = []  # of every rank, for the stall check

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints and writes."""
        return self.rank == 0

    # --- splitting the batch -------------------------------------------------------------
    def block(self, batch_size: int) -> slice:
        """This rank's contiguous block of the B streams of training (equal blocks)."""
        if batch_size % self.size:
            raise RanksError(
                f"--batch-size {batch_size} does not split evenly over {self.size} processes; "
                f"use a batch size that is a multiple of {self.size}, or another process count"
            )
        n = batch_size // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n streams for evaluation (sizes differ by at most
        one; a rank may get none)."""
        cuts = np.linspace(0, n, self.size + 1).round().astype(int)
        return slice(int(cuts[self.rank]), int(cuts[self.rank + 1]))

    # --- reductions ----------------------------------------------------------------------
    def sum_(self, a: np.ndarray) -> np.ndarray:
        """Sum a contiguous array over the ranks, in place."""
        if self.comm is not None:
            from mpi4py import MPI

            with self.waiting(f"an Allreduce of {a.size:,} numbers"):
                self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
            self.bytes_sent += a.nbytes
        return a

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over the ranks (float64, one message)."""
        return self.sum_(np.array(values, np.float64)).tolist()

    def any(self, *flags: bool) -> list[bool]:
        """Whether any rank raised each flag (one message)."""
        return [v > 0 for v in self.sum(*map(float, flags))]

    def union(self, ids: np.ndarray) -> np.ndarray:
        """The sorted union of every rank's sorted distinct ids."""
        if self.comm is None:
            return ids
        with self.waiting("an Allgather of token ids"):
            counts = self.comm.allgather(len(ids))
            everything = np.empty(sum(counts), ids.dtype)
            self.comm.Allgatherv(np.ascontiguousarray(ids), (everything, counts))
        self.bytes_sent += ids.nbytes
        return np.unique(everything)

    def gather(self, block: np.ndarray) -> np.ndarray:
        """The ranks' equal blocks of rows, concatenated in rank order: (P * b, ...)."""
        if self.comm is None:
            return block
        out = np.empty((self.size * block.shape[0], *block.shape[1:]), block.dtype)
        with self.waiting("an Allgather of the hidden state"):
            self.comm.Allgather(np.ascontiguousarray(block), out)
        return out

    def broadcast_(self, arrays: dict[str, np.ndarray]) -> None:
        """Rank 0's arrays into every rank's, in place."""
        if self.comm is not None:
            with self.waiting("a Bcast of the parameters"):
                for k in sorted(arrays):
                    self.comm.Bcast(arrays[k], root=0)

    # --- agreeing ------------------------------------------------------------------------
    def check_same(self, what: str, parts: Iterable, fix: str) -> None:
        """Raise on every rank unless the bytes of `parts` (bytes or contiguous arrays) are
        the same on all of them."""
        if self.comm is None:
            return
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        with self.waiting(f"the check that {what} agree"):
            digests = self.comm.allgather(digest.hexdigest())
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise RanksError(
                f"{what} differ between processes (rank {differ[0]} and rank 0); {fix}"
            )

    def together(self, fn: Callable[[], R], main_first: bool = False) -> R:
        """fn() on every rank; if it fails on any, every rank raises that rank's error, so
        none waits forever for one that gave up (a missing file on one host, a full disk).
        With `main_first`, rank 0 runs it before the others, which then find what it fetched
        or wrote where the disk is shared."""
        if self.comm is None:
            return fn()
        result, error = None, ""
        if main_first:
            if self.main:
                result, error = _attempt(fn)
            with self.waiting("a Bcast from rank 0"):
                error = self.comm.bcast(error)
            if error:
                raise RanksError(error)
        if not (main_first and self.main):
            result, error = _attempt(fn)
        with self.waiting("an Allgather of the ranks' outcomes"):
            errors = self.comm.allgather((error, socket.gethostname()))
        failed = [r for r, (e, _) in enumerate(errors) if e]
        if failed:
            r = failed[0]
            e, host = errors[r]
            raise RanksError(e if r == 0 else f"rank {r} on {host}: {e}")
        return result

    def on_main(self, fn: Callable[[], object]) -> None:
        """fn() on rank 0 alone (the one that writes); if it fails, every rank raises."""
        self.together(fn if self.main else lambda: None)

    # --- stalls ------------------------------------------------------------------------------
    def watch(self, timeout: float) -> None:
        """The stall check (Horovod's, made an end): when a collective of this rank has waited
        `timeout` seconds (0: never) for the others (a host that died, a link that went
        down), name in one line the exchange and the ranks that no longer answer, and end
        the job with exit 1; what was saved before stays as it was (saves are atomic).
        Collective: every rank calls it, at the start."""
        if self.comm is None or timeout <= 0:
            return
        from mpi4py import MPI

        self._hosts = self.comm.allgather(socket.gethostname())
        # a communicator of its own, for the watchers' pings beside the training's exchanges
        probe = self.comm.Dup() if MPI.Query_thread() == MPI.THREAD_MULTIPLE else None
        if probe is not None:
            probe.Set_errhandler(MPI.ERRORS_RETURN)  # a dead peer: an exception, not an abort
        threading.Thread(target=self._watch, args=(timeout, probe), daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, what: str):
        """Mark a collective under way, for the stall check; one that MPI reports failed ends
        the job (`_lost`)."""
        from mpi4py import MPI

        self._waiting_on = (what, time.monotonic())
        try:
            yield
        except MPI.Exception as e:
            self._lost(what, e)
            raise  # should the abort return
        finally:
            self._waiting_on = None

    def _lost(self, what: str, error: Exception) -> None:
        """A collective failed: a peer died or its connection broke. This rank often learns
        of it first (its shared-memory or TCP transfer fails at once), mpiexec a moment later,
        when it ends the job and names the process that died; so wait for that, and say it
        here only if mpiexec does not (a traceback from here would blame this rank)."""
        time.sleep(LOST_GRACE)
        cause = str(error).strip().partition("\n")[0] or type(error).__name__
        self.fail(
            f"{what} failed ({cause}): another process died or lost its network; the job "
            "ends, the checkpoints saved before are kept (resume from them)"
        )

    def _watch(self, timeout: float, probe) -> None:
        """The watcher thread: answers the other watchers' pings, and ends the job once a
        collective has waited `timeout` seconds, naming the ranks that do not answer."""
        while True:
            time.sleep(min(1.0, timeout / 10))
            self._answer(probe)
            on = self._waiting_on
            if on is not None and time.monotonic() - on[1] >= timeout:
                self.fail(
                    f"{on[0]} has waited {time.monotonic() - on[1]:.0f} s for the other "
                    f"{self.size - 1} process{'es' * (self.size > 2)} (--stall-timeout "
                    f"{timeout:g}); {self._who(probe)}; the job ends, the checkpoints saved "
                    "before are kept (resume from them)"
                )

    def _who(self, probe) -> str:
        """Which ranks a stalled collective waits for, as far as MPI can tell."""
        silent = self._silent(probe)
        if silent is None:
            return "one may have died or lost its network"
        if not silent:
            return "every other process still answers (a step slower than the timeout?)"
        names = ", ".join(f"rank {r} on {self._hosts[r]}" for r in silent)
        return f"no answer from {names}: died or lost its network"

    def _answer(self, probe) -> None:
        """Answer every ping waiting on the watchers' communicator."""
        from mpi4py import MPI

        try:
            while probe is not None and probe.Iprobe(tag=PING):
                status = _status()
                probe.recv(tag=PING, status=status)
                probe.isend(None, dest=status.Get_source(), tag=PONG)
        except MPI.Exception:  # the asker died meanwhile: nobody to answer
            pass

    def _silent(self, probe, seconds: float = 3.0) -> list[int] | None:
        """The other ranks whose watcher does not answer a ping within `seconds` (None where
        MPI gives no second channel to ask on)."""
        if probe is None:
            return None
        from mpi4py import MPI

        others = [r for r in range(self.size) if r != self.rank]
        for r in others:
            try:
                probe.isend(None, dest=r, tag=PING)
            except MPI.Exception:  # a connection already known dead: no answer
                pass
        answered, until = set(), time.monotonic() + seconds
        while time.monotonic() < until and len(answered) < len(others):
            self._answer(probe)
            while probe.Iprobe(tag=PONG):
                status = _status()
                probe.recv(tag=PONG, status=status)
                answered.add(status.Get_source())
            time.sleep(0.05)
        return [r for r in others if r not in answered]

    # --- failure -------------------------------------------------------------------------
    def fail(self, message: str, code: int = 1):
        """End every rank after an error only this one met: its line, then MPI_Abort (the
        others may be waiting in a collective and would never learn of it); this process
        ends within seconds even where the abort cannot reach the launcher."""
        line = f"Error: rank {self.rank} on {socket.gethostname()}: {message}\n"
        os.write(self.error_fd, line.encode())
        threading.Timer(5.0, os._exit, (code,)).start()
        time.sleep(LINE_GRACE)
        self.comm.Abort(code)


PING, PONG = 1, 2  # tags of the stall check's messages


def _status():
    from mpi4py import MPI

    return MPI.Status()


def _attempt(fn: Callable[[], R]) -> tuple[R | None, str]:
    """(fn(), "") or (None, the message of an error a user can cause)."""
    try:
        return fn(), ""
    except (LMError, OSError, MemoryError) as e:
        return None, str(e) or type(e).__name__


@functools.cache
def world() -> Group:
    """The ranks this process was launched with: all of MPI_COMM_WORLD under mpiexec, or
    the process alone."""
    size = launched_size()
    if size <= 1:
        return Group()
    try:
        from mpi4py import MPI
    except ImportError:
        raise LMError(
            f"started by an MPI launcher with {size} processes, but mpi4py is not installed: "
            f"{INSTALL}"
        ) from None
    return Group(MPI.COMM_WORLD)
