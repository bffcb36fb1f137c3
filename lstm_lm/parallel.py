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
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
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
        self._error_fd: int | None = None
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

    # --- output and failure --------------------------------------------------------------
    def tell_launcher(self) -> None:
        """Under the --procs launcher (`run_mpiexec`), one line on stderr that it keeps to
        itself: this rank's pid and host, so that it can name a rank mpiexec reports dead."""
        if self.comm is not None and os.environ.get(MARK_ENV):
            os.write(2, f"{MARK} {self.rank} {os.getpid()} {socket.gethostname()}\n".encode())

    def quiet_other_ranks(self) -> None:
        """Rank 0 alone prints: the others' stdout and stderr go to the null device; an error
        that only one of them meets still reaches the terminal (see `fail`)."""
        if self.main or self.comm is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self._error_fd = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def fail(self, message: str, code: int = 1):
        """End every rank after an error only this one met: its line, then MPI_Abort (the
        others may be waiting in a collective and would never learn of it); this process
        ends within seconds even where the abort cannot reach the launcher."""
        line = f"Error: rank {self.rank} on {socket.gethostname()}: {message}\n"
        os.write(self._error_fd if self._error_fd is not None else 2, line.encode())
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


def mpiexec_command(procs: int, argv: list[str], hosts: list[str] | None = None,
                    hostfile: str | Path | None = None) -> list[str]:  # fmt: skip
    """The command that runs `lstm-lm ARGV` on `procs` ranks of this machine, or of `hosts`
    (in turn) or those of `hostfile`."""
    mpiexec = launcher()
    where = []
    if hosts or hostfile:
        open_mpi = "Open MPI" in _version(mpiexec)
        if hosts:
            where = ["--host" if open_mpi else "-hosts", ",".join(hosts)]
        else:
            where = ["--hostfile" if open_mpi else "-f", str(hostfile)]
    return [mpiexec, "-n", str(procs), *where, sys.executable, "-m", "lstm_lm", *argv]


def launcher() -> str:
    """The mpiexec installed beside this Python (the mpich wheel's) or on PATH, MPICH's or
    Open MPI's."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise LMError(f"--procs needs MPI: {INSTALL}") from None
    beside = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        raise LMError(f"--procs needs an mpiexec on PATH: {INSTALL}")
    return mpiexec


MARK, MARK_ENV = "lstm-lm-rank", "LSTM_LM_MARK_RANKS"  # see Group.tell_launcher
# MPICH's single-copy transfers between the ranks of one machine (CMA) make a rank whose peer
# died abort at once with an error stack, before mpiexec can say which rank died; without
# them the survivors wait until mpiexec ends them. An 11 MB Allreduce of two ranks takes
# 5-6 ms instead of 3-4 (AMD EPYC, 2026-12-02): about 1% of a `laptop` step.
# Between hosts, libfabric (ofi) rather than MPICH's default UCX: over UCX a rank whose peer
# was killed mid-Allreduce sometimes dies of a segmentation fault in the library (5 of 114
# runs of the test, beside a busy process), and mpiexec may then name that rank as the one
# that died; over libfabric's TCP it waits to be ended (0 of 120), at the same speed (two
# hosts at 1 Gb/s, `small`: 2,875-2,949 training tokens/s against 2,808-2,846; Xeon,
# 2026-12-07).
LAUNCH_ENV = {"MPIR_CVAR_CH4_CMA_ENABLE": "0", "MPIR_CVAR_CH4_NETMOD": "ofi"}


def run_mpiexec(command: list[str]) -> int:
    """Run `command` (mpiexec's, for --procs) and pass its output on, but where MPICH's
    mpiexec reports a process that died (a rank killed, its host gone: eleven lines of banner
    and its proxies' complaints) say it in one line naming the rank and its host. Returns
    the exit status: mpiexec's, or 1 after such a line."""
    report = _Report()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**LAUNCH_ENV, **os.environ, MARK_ENV: "1"})  # fmt: skip
    pipes = ((proc.stdout, sys.stdout, report.out), (proc.stderr, sys.stderr, report.err))
    readers = [threading.Thread(target=_pass_on, args=pipe) for pipe in pipes]
    for reader in readers:
        reader.start()
    with _forwarding_signals(proc):
        code = proc.wait()
    for reader in readers:
        reader.join()
    sys.stdout.write("\n" * report.blank)
    sys.stdout.flush()
    lost = report.lost()
    if lost is None:
        sys.stderr.writelines(report.held)
        return code if code >= 0 else 128 - code
    sys.stderr.write(f"Error: {lost}; mpiexec ended the other processes (a training run "
                     "resumes from its last save)\n")  # fmt: skip
    return 1


def _pass_on(pipe, to, edit: Callable[[str], str]) -> None:
    """Copy `pipe` to the stream `to` a line at a time, as `edit` has it."""
    for raw in pipe:
        if text := edit(raw.decode(errors="replace")):
            to.write(text)
            to.flush()


class _Report:
    """What mpiexec (MPICH's Hydra) says of the job, a line at a time: the ranks' pid lines
    (stderr), its banner for a process that died (stdout), its traces of internal errors
    (stderr: held back, they may only echo a loss), and what to hide."""

    FIELD = re.compile(r"=   (PID (?P<pid>\d+) RUNNING AT (?P<where>\S+)|EXIT CODE: (?P<code>\d+))")
    TRAILER = ("YOUR APPLICATION TERMINATED WITH THE EXIT STRING: ",
               "This typically refers to a problem with your application.",
               "Please see the FAQ page for debugging suggestions")  # fmt: skip
    ABORT = re.compile(r"Abort\(\d+\) on node \d+ \(rank \d+ in comm \d+\)")  # after our line
    TRACE = re.compile(r"\[(proxy|mpiexec)[:@][^]]*\] \w+ \(\S+:\d+\): ")

    def __init__(self):
        self.ranks: dict[int, tuple[int, str]] = {}  # pid: (rank, host)
        self.dead: dict[str, str] | None = None  # the banner's pid, where, code and how
        self.held: list[str] = []  # Hydra's traces: shown unless they only echo a loss
        self.blank = False  # an empty line held back: the banner starts with one

    def out(self, line: str) -> str:
        """What to pass on of a line of mpiexec's stdout."""
        text = line.rstrip("\n")
        in_banner = self.dead is not None and text.startswith(("=   ", *self.TRAILER))
        if text.startswith("=" * 20) or in_banner:
            self.dead = self.dead or {}
            if field := self.FIELD.match(text):
                self.dead.update({k: v for k, v in field.groupdict().items() if v})
            if text.startswith(self.TRAILER[0]):
                self.dead["how"] = text[len(self.TRAILER[0]) :]
            self.blank = False
            return ""
        held, self.blank = "\n" * self.blank, text == ""
        return held if self.blank else held + line

    def err(self, line: str) -> str:
        """What to pass on of a line of mpiexec's stderr."""
        words = line.split()
        if len(words) == 4 and words[0] == MARK and words[1].isdigit() and words[2].isdigit():
            self.ranks[int(words[2])] = (int(words[1]), words[3])
            return ""
        if self.TRACE.match(line):
            self.held.append(line)
            return ""
        return "" if self.ABORT.match(line) else line

    def lost(self) -> str | None:
        """The process mpiexec reported dead, and how it ended; or the host it lost touch
        with (killed with its proxy: no banner, a trace); None if neither."""
        if self.dead is None:
            if any("control_cb" in t and "assert (!closed)" in t for t in self.held):
                return "mpiexec lost a host (it went down, or all its processes were killed)"
            return None
        dead = self.dead
        code = dead.get("code", "?")
        how = dead.get("how") or f"exit code {code}"
        how = "signal 9: killed, or its host went down" if code == "9" else how
        pid = int(dead.get("pid", -1))
        if pid in self.ranks:
            rank, host = self.ranks[pid]
            return f"rank {rank} on {host} died ({how})"
        where = f" (pid {pid} on {dead['where']})" if "where" in dead else ""
        return f"a process{where} died ({how})"


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen):
    """Pass SIGTERM and SIGHUP on to mpiexec (which passes them to the ranks), and SIGINT
    unless the terminal sent it to mpiexec as well (a second one would abort the job)."""

    def forward(signum, _frame):
        if signum != signal.SIGINT or not _in_foreground():
            proc.send_signal(signum)

    names = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    before = {s: signal.signal(s, forward) for s in names}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _in_foreground() -> bool:
    """Whether this process's group is its terminal's foreground group (the one a Ctrl-C
    reaches, mpiexec included)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _version(mpiexec: str) -> str:
    try:
        run = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return run.stdout + run.stderr
