"""The `--procs N` launcher: this very command run again under `mpiexec -n N` (on --hosts or
--hostfile), its output passed on, and what mpiexec says of a process that died said in one
line; and, in each rank, what the launcher needs of it (its pid line) and the quieting of
every rank's output but rank 0's. lstm_lm.parallel holds the collectives the ranks train
with."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from lstm_lm import LMError, parallel
from lstm_lm.cli.options import refuse_together
from lstm_lm.parallel import INSTALL, Group

MARK, MARK_ENV = "lstm-lm-rank", "LSTM_LM_MARK_RANKS"  # see tell_launcher


def launch(procs: int | None, hosts: str | None = None, hostfile: Path | None = None):
    """The ranks to run on (a parallel.Group): with --procs N from a single process, this
    very command is run again under `mpiexec -n N` (on --hosts or --hostfile), and this
    process passes on what it prints, then exits with its status."""
    refuse_together("hosts", "hostfile", "give the hosts one way")
    if procs is None and (hosts or hostfile):
        raise click.UsageError("--hosts and --hostfile go with --procs N")
    world = parallel.world()
    if procs is None or procs == world.size:
        return world
    if world.size > 1:
        raise click.UsageError(f"--procs {procs} does not match the {world.size} processes "
                               "mpiexec started; give one or the other")  # fmt: skip
    names = None
    if hosts is not None:
        names = [h.strip() for h in hosts.split(",")]
        if not all(names):
            raise click.BadParameter(f"{hosts!r} names an empty host", param_hint="--hosts")
    if hostfile is not None and not hostfile.is_file():
        raise LMError(f"{hostfile}: no such host file; give a file of host names, one a line")
    launcher = ("--procs", "--hosts", "--hostfile")  # this process's, not the ranks'
    argv, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg in launcher:
            next(args, None)  # its value
        elif not arg.startswith(tuple(f"{o}=" for o in launcher)):
            argv.append(arg)
    sys.exit(run_mpiexec(mpiexec_command(procs, argv, names, hostfile)))


def tell_launcher(world: Group) -> None:
    """Under the --procs launcher (`run_mpiexec`), one line on stderr that it keeps to
    itself: this rank's pid and host, so that it can name a rank mpiexec reports dead."""
    if world.size > 1 and os.environ.get(MARK_ENV):
        os.write(2, f"{MARK} {world.rank} {os.getpid()} {socket.gethostname()}\n".encode())


def quiet_other_ranks(world: Group) -> None:
    """Rank 0 alone prints: the others' stdout and stderr go to the null device; an error
    that only one of them meets still reaches the terminal (Group.fail writes to the
    stderr kept here)."""
    if world.main or world.size == 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    world.error_fd = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


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
