"""Data-parallel training on MPI ranks: P processes make the updates of one.

Every test launches its ranks with mpiexec (the mpich wheel of the test extra) from a
subprocess, on a word corpus of 300 types so the ranks' windows touch different token rows.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import missing, require_module, wait_for

from lstm_lm.archive import read_meta
from lstm_lm.cli import launcher
from lstm_lm.cli.launcher import mpiexec_command
from lstm_lm.parallel import STALL_TIMEOUT

require_module("mpi4py", "mpi")

RUN = (
    "train --layers 2 --hidden 16 --batch-size 8 --bptt 10 --dtype float64 --dropout 0.3 "
    "--eval-every 15 --quiet"
).split()


def lm(*args, procs=1, timeout=60):
    """`lstm-lm ARGS` on `procs` ranks (one: a plain process, no MPI)."""
    args = [str(a) for a in args]
    cmd = mpiexec_command(procs, args) if procs > 1 else [sys.executable, "-m", "lstm_lm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def assert_same_run(a, b, rel=1e-10):
    """Two run directories hold the same last.npz (every parameter, optimiser moment and
    hidden state within `rel` of the largest entry) and the same validation losses."""
    A, B = arrays(a / "last.npz"), arrays(b / "last.npz")
    assert A.keys() == B.keys()
    for k in A:
        assert A[k].shape == B[k].shape, k
        scale = max(float(np.abs(A[k]).max()), 1e-300)
        assert np.abs(A[k] - B[k]).max() <= rel * scale, k
    va, vb = valid_losses(a), valid_losses(b)
    assert max(va) == max(vb)  # the last evaluation, and those at the same steps
    for step in va.keys() & vb.keys():
        assert va[step] == pytest.approx(vb[step], rel=rel)


def valid_losses(run) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m["valid_loss"] for m in lines}


def fields(obj):
    """The nested keys of a JSON object."""
    if isinstance(obj, dict):
        return {k: fields(v) for k, v in obj.items()}
    return [fields(v) for v in obj] if isinstance(obj, list) else None


@pytest.mark.parametrize(
    "optimizer",
    [
        ["--optimizer", "sgd", "--input-dropout", "0.2"],
        ["--optimizer", "adam", "--lr", "0.01"],
        ["--softmax", "adaptive", "--cutoffs", "20,100"],  # tails' gradients summed too
        ["--tied", "--input-dropout", "0.2", "--word-dropout", "0.2"],  # every gradient dense
        [
            "--variational",
            "--input-dropout",
            "0.2",
            "--word-dropout",
            "0.2",
            "--weight-drop",
            "0.3",
            "--ar",
            "2",
            "--tar",
            "1",
            "--asgd",
            "--asgd-patience",
            "1",
            "--eval-every",
            "5",
        ],
    ],
)
def test_two_processes_make_the_updates_of_one(words, tmp_path, optimizer):
    args = [*RUN, "--data", words, "--max-steps", 30, *optimizer]
    one = lm(*args, "--out", tmp_path / "p1")
    two = lm(*args, "--out", tmp_path / "p2", procs=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert_same_run(tmp_path / "p1", tmp_path / "p2")
    # not trivially: training moved the model between its two evaluations
    valid = valid_losses(tmp_path / "p2")
    assert abs(valid[15] - valid[30]) > 1e-3
    # the checkpoint does not say how many processes wrote it: the same fields, the same
    # configuration
    m1, m2 = read_meta(tmp_path / "p1" / "last.npz"), read_meta(tmp_path / "p2" / "last.npz")
    assert fields(m1) == fields(m2)
    assert m1["train_config"] == m2["train_config"] and m1["config"] == m2["config"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_run_resumes_on_another_number_of_processes(words, tmp_path, optimizer):
    lr = {"sgd": "1", "adam": "0.01"}[optimizer]
    args = [*RUN, "--data", words, "--input-dropout", "0.2", "--optimizer", optimizer, "--lr", lr]
    assert lm(*args, "--max-steps", 30, "--out", tmp_path / "whole").returncode == 0
    for first, then in ((2, 1), (1, 2)):
        out = tmp_path / f"{first}to{then}"
        r = lm(*args, "--max-steps", 17, "--out", out, procs=first)
        assert r.returncode == 0, r.stderr
        r = lm("train", "--resume", out, "--max-steps", 30, "--quiet", procs=then)
        assert r.returncode == 0, r.stderr
        assert_same_run(tmp_path / "whole", out)


def test_eval_over_processes_reports_what_one_does(words, tmp_path):
    out = tmp_path / "run"
    assert lm(*RUN, "--data", words, "--max-steps", 15, "--out", out).returncode == 0
    for batch, cache in ((4, []), (3, []), (3, ["--cache", 40])):  # 3 streams: ranks of 2 and 1
        args = ["eval", out, "--split", "valid", "--batch-size", batch, "--json", *cache]
        one, two = lm(*args), lm(*args, procs=2)
        assert one.returncode == 0 and two.returncode == 0, two.stderr
        a, b = json.loads(one.stdout), json.loads(two.stdout)
        assert a["tokens"] == b["tokens"] and a["split"] == b["split"] == "valid"
        assert b["nll"] == pytest.approx(a["nll"], rel=1e-12)
        assert two.stdout.count("\n") == 1  # rank 0 alone prints


def test_an_error_on_one_rank_ends_every_rank(words, tmp_path):
    """A training file missing on one host: rank 1 runs where it is not."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "train.txt").write_text((words / "train.txt").read_text())
    mpiexec, python = launcher.launcher(), sys.executable
    rank = [python, "-m", "lstm_lm", *RUN, "--train", "train.txt", "--out", tmp_path / "r"]
    cmd = [mpiexec, "-n", "1", "-wdir", tmp_path / "here", *rank, ":",
           "-n", "1", "-wdir", tmp_path / "elsewhere", *rank]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=240)
    # rank 0 would wait in its first collective until the stall timeout (300 s): ending well
    # before it, however busy the machine, is rank 1's abort reaching it
    assert time.monotonic() - t0 < STALL_TIMEOUT / 2
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    missing = tmp_path / "elsewhere" / "train.txt"
    assert len(errors) == 1 and errors[0].startswith("Error: rank 1 on ")
    assert errors[0].endswith(f": {missing}: no such file; check the path")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "/proc/none"], "cannot write to run directory /proc/none"),
        # every rank sees the whole batch's loss become nan
        (["--dtype", "float32", "--lr", "1e38", "--clip", "0", "--out", "OUT"], "loss became nan"),
        (["--batch-size", "9", "--out", "OUT"], "--batch-size 9 does not split evenly over 2"),
    ],
)
def test_run_errors_end_every_rank_with_one_line(words, tmp_path, args, message):
    args = [str(tmp_path / "r") if a == "OUT" else a for a in args]
    r = lm(*RUN, "--data", words, "--max-steps", 5, *args, procs=2)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_ranks_must_agree_on_the_command(words, tmp_path):
    r = lm(*RUN, "--data", words, "--procs", 3, procs=2)
    assert r.returncode == 2 and "--procs 3 does not match the 2 processes" in r.stderr
    mpiexec, python = launcher.launcher(), sys.executable
    base = [python, "-m", "lstm_lm", *RUN, "--data", words, "--out", tmp_path / "r"]
    cmd = [mpiexec, "-n", "1", *base, "--lr", "1", ":", "-n", "1", *base, "--lr", "2"]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "the command lines differ between processes" in r.stderr
    assert not (tmp_path / "r").exists()


def test_procs_launches_mpiexec(words, tmp_path):
    args = [*RUN, "--data", words, "--max-steps", 15]
    r = lm(*args, "--procs", 2, "--out", tmp_path / "p2")
    assert r.returncode == 0, r.stderr
    assert "2 processes" not in r.stderr  # --quiet; the run says it in its description:
    r2 = lm(*[a for a in args if a != "--quiet"], "--procs", 2, "--out", tmp_path / "again")
    assert "; 2 processes ->" in r2.stderr
    assert lm(*args, "--out", tmp_path / "p1").returncode == 0
    assert_same_run(tmp_path / "p1", tmp_path / "p2")


def test_sigterm_to_mpiexec_saves_last_once_and_stops(words, tmp_path):
    out = tmp_path / "r"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 100, "--out", out]
    proc = subprocess.Popen(
        [str(a) for a in mpiexec_command(2, [str(a) for a in args if a != "--quiet"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (out / "last.npz").exists(), "the run's first save")
    first = read_meta(out / "last.npz")["train_state"]["step"]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = read_meta(out / "last.npz")["train_state"]["step"]
    assert step > first and f"stopped: step {step:,}" in err
    assert err.count("stopping after this step and saving") == 1


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_procs_names_a_rank_that_was_killed(words, tmp_path):
    """Under --procs, mpiexec's banner for a process that died becomes one line naming its
    rank and host; SIGTERM to the launcher reaches the ranks (they save and stop)."""
    out, tag = tmp_path / "r", f"procs-{time.monotonic_ns()}"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 20, "--out", out]
    cmd = [sys.executable, "-m", "lstm_lm", *map(str, args), "--procs", "2"]
    env = {**os.environ, "LSTM_LM_TEST_TAG": tag}
    for stop in (signal.SIGKILL, signal.SIGTERM):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        wait_for(lambda: (out / "last.npz").exists(), "the run's first save")
        if stop == signal.SIGKILL:
            os.kill(ranks_of(tag)[1], stop)
        else:
            proc.send_signal(stop)
        t0 = time.monotonic()
        stdout, err = proc.communicate(timeout=240)
        # the survivor would otherwise wait out the stall timeout (300 s) in a collective:
        # mpiexec ends it, and the job, well before that however busy the machine
        assert time.monotonic() - t0 < STALL_TIMEOUT / 2
        assert gone(lambda: ranks_of(tag), time.monotonic() + 60)
        errors = [line for line in err.splitlines() if line.startswith("Error")]
        if stop == signal.SIGKILL:
            assert proc.returncode == 1 and len(errors) == 1, err
            assert errors[0].startswith(f"Error: rank 1 on {socket.gethostname()} died (signal 9")
            assert "=====" not in stdout and "lstm-lm-rank" not in err
        else:
            assert proc.returncode == 130 and not errors, err
            step = read_meta(out / "last.npz")["train_state"]["step"]
            assert f"stopped: step {step:,}" in err


def test_an_exchange_that_fails_ends_the_rank_with_one_line():
    """A collective that MPI reports failed (a peer died: a rank's TCP or shared-memory
    transfer may learn it before mpiexec does) ends the rank with one line, not a traceback,
    once mpiexec has had its moment to end the job itself."""
    script = (
        "from mpi4py import MPI\n"
        "from lstm_lm import parallel\n"
        "parallel.LOST_GRACE = 0.1\n"
        "with parallel.Group(MPI.COMM_SELF).waiting('an Allreduce of 3 numbers'):\n"
        "    raise MPI.Exception(MPI.ERR_OTHER)\n"
        "print('went on')\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    assert r.returncode == 1 and "Traceback" not in r.stderr and "went on" not in r.stdout
    assert errors == [
        f"Error: rank 0 on {socket.gethostname()}: an Allreduce of 3 numbers failed (Other MPI "
        "error): another process died or lost its network; the job ends, the checkpoints saved "
        "before are kept (resume from them)"
    ], r.stderr


def test_what_the_launcher_passes_on():
    """Hydra's banner (as MPICH 5 prints it) is held back and read; the ranks' pid lines
    are kept; other lines, empty ones too, pass as they are."""
    report = launcher._Report()
    err = [
        "lstm-lm-rank 0 101 hostA\n",
        "lstm-lm-rank 1 202 hostB\n",
        "a line\n",
        "[proxy:0@hostA] main (/src/pm/hydra/proxy/pmip.c:123): demux engine error\n",
    ]
    assert [report.err(line) for line in err] == ["", "", "a line\n", ""]
    out = ["table\n", "\n", "\n", "end\n", "\n", "=" * 83 + "\n",
           "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n",
           "=   PID 202 RUNNING AT 192.0.2.2\n", "=   EXIT CODE: 9\n",
           "=   CLEANING UP REMAINING PROCESSES\n",
           "=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES\n", "=" * 83 + "\n",
           "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n",
           "This typically refers to a problem with your application.\n",
           "Please see the FAQ page for debugging suggestions\n"]  # fmt: skip
    assert "".join(report.out(line) for line in out) == "table\n\n\nend\n"
    assert report.lost() == "rank 1 on hostB died (signal 9: killed, or its host went down)"
    report = launcher._Report()
    assert report.out("done\n") == "done\n" and report.lost() is None


def gone(find, by: float) -> bool:
    """Whether the processes `find()` lists are all gone by the time.monotonic() `by` (mpiexec
    may exit a moment before its proxies' SIGKILL has reached every rank)."""
    while find() and time.monotonic() < by:
        time.sleep(0.05)
    return not find()


def ranks_of(tag: str) -> dict[int, int]:
    """The pids of the ranks whose environment holds LSTM_LM_TEST_TAG=tag, by rank."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            env = dict(
                kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv
            )
        except OSError:
            continue
        if env.get("LSTM_LM_TEST_TAG") == tag and "PMI_RANK" in env:
            found[int(env["PMI_RANK"])] = int(proc.name)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_rank_that_stops_answering_ends_the_job_after_the_stall_timeout(words, tmp_path):
    """Rank 1 frozen (SIGSTOP) mid-run, as a host whose link went down: rank 0 waits in the
    gradients' Allreduce, says so once the stall timeout has passed, and the job ends."""
    out, tag = tmp_path / "r", f"stall-{time.monotonic_ns()}"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 20, "--out", out]
    cmd = mpiexec_command(2, [str(a) for a in [*args, "--stall-timeout", 3]])
    env = {**os.environ, "LSTM_LM_TEST_TAG": tag}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    wait_for(lambda: (out / "last.npz").exists(), "the run's first save")
    pids = ranks_of(tag)
    assert sorted(pids) == [0, 1]
    os.kill(pids[1], signal.SIGSTOP)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=240)
    # the deadline is the behaviour: nothing but the 3 s stall timeout ends a job whose rank
    # is frozen (the watcher looks every 0.3 s, then writes its line and aborts); 3 s, and a
    # margin that a busy machine's slow abort stays well within
    assert time.monotonic() - t0 < 3 + 30 and proc.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith("Error: rank 0 on "), err
    assert (
        "has waited 3 s for the other 1 process (--stall-timeout 3); no answer from rank 1 on "
        in errors[0]
    )
    for name in ("last.npz", "best.npz"):  # what was saved before is whole
        assert read_meta(out / name)["train_state"]["step"] >= 20
    assert gone(lambda: ranks_of(tag), t0 + 3 + 10)  # no rank left behind


def test_bench_reports_bytes_exchanged(tmp_path):
    args = ["bench", "--layers", 1, "--hidden", 16, "--vocab", 10_000, "--repeats", 3]
    r = lm(*args, "--profile", "--json", procs=2)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["procs"] == 2 and b["train_tokens_per_s"] > 0
    parts = {p["part"]: p for p in b["profile"]["parts"]}
    assert parts["sum over ranks"]["ms"] > 0
    # each rank's token rows: the distinct tokens of its 10 x 20 block
    assert 0 < parts["token rows"]["gflop"] <= 2 * 200 * 200 * 64 / 1e9
    H, G, V = 16, 64, 10_000
    dense = 4 * (H * G + G + H * V + V)  # l0.W's h rows, l0.b, Wy, by (float32)
    # more than the dense gradients, less than with the whole V x 4H block of token rows
    assert dense < b["bytes_per_step"] < dense + 4 * V * G


# --- across network hosts ------------------------------------------------------------------
# Two test hosts: network namespaces joined by a veth link (192.0.2.1 and 192.0.2.2, from the
# documentation block, assigned inside the namespaces only), each with its own host name, so
# MPICH takes them for two machines and talks TCP over the link. mpiexec runs inside the
# first; hydra starts each host's rank through LAUNCHER, in place of ssh (no server needed).

LAUNCHER = """#!/bin/sh
# hydra's ssh launcher runs: SCRIPT [OPTIONS] HOST COMMAND...
while [ "${1#-}" != "$1" ]; do shift; done
case $1 in 192.0.2.1) ns=%s ;; 192.0.2.2) ns=%s ;; *) echo "no test host $1" >&2; exit 1 ;; esac
shift
# a host's own files: "SOURCE TARGET" lines in $0.$ns, bind-mounted in its mount namespace
binds=$(sed 's/^/mount --bind /; s/$/;/' "$0.$ns" 2>/dev/null)
exec ip netns exec "$ns" unshare --uts --mount sh -c "hostname $ns; $binds $*"
"""


@dataclass
class Hosts:
    a: str  # namespace, host name and veth end of the first host (192.0.2.1)
    b: str  # ... of the second (192.0.2.2)
    launcher: Path

    def command(self, *args) -> list[str]:
        """`lstm-lm ARGS` with one rank on each host, mpiexec started on the first. On one
        kernel MPICH's transports (UCX, libfabric) would reach the other host's process
        through shared memory, as real hosts cannot: TCP only."""
        mpiexec, python = launcher.launcher(), sys.executable
        hydra = ["-hosts", "192.0.2.1,192.0.2.2", "-ppn", "1", "-launcher", "ssh"]
        inner = [mpiexec, *hydra, "-launcher-exec", self.launcher, "-n", "2", python, "-m",
                 "lstm_lm", *args]  # fmt: skip
        inner = shlex.join(str(a) for a in inner)
        tcp = "export UCX_TLS=tcp FI_PROVIDER=tcp"
        return ["ip", "netns", "exec", self.a, "unshare", "--uts", "sh", "-c",
                f"hostname {self.a}; {tcp}; exec {inner}"]  # fmt: skip

    def procs(self, *args) -> list[str]:
        """`lstm-lm ARGS --procs 2` started on the first host, the --procs launcher given the
        hosts by ARGS; hydra's ssh launcher told by its environment to use LAUNCHER."""
        python = shlex.join([sys.executable, "-m", "lstm_lm", *map(str, args), "--procs", "2"])
        env = f"HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC={self.launcher} UCX_TLS=tcp FI_PROVIDER=tcp"
        return ["ip", "netns", "exec", self.a, "unshare", "--uts", "sh", "-c",
                f"hostname {self.a}; export {env}; exec {python}"]  # fmt: skip

    def received(self) -> int:
        """Bytes the second host has received over the link."""
        out = subprocess.run(["ip", "-n", self.b, "-s", "-j", "link", "show", self.b],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return json.loads(out)[0]["stats64"]["rx"]["bytes"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    if os.geteuid() != 0:
        missing("netns", "making test hosts (network namespaces) needs root")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            missing("netns", f"making test hosts needs {tool} (Debian: iproute2, util-linux)")
    a, b = f"lm{os.getpid()}a"[-12:], f"lm{os.getpid()}b"[-12:]
    steps = [["netns", "add", a], ["netns", "add", b],
             ["link", "add", a, "type", "veth", "peer", "name", b],
             ["link", "set", a, "netns", a], ["link", "set", b, "netns", b],
             ["-n", a, "addr", "add", "192.0.2.1/24", "dev", a],
             ["-n", b, "addr", "add", "192.0.2.2/24", "dev", b]]  # fmt: skip
    steps += [["-n", n, "link", "set", dev, "up"] for n in (a, b) for dev in (n, "lo")]
    try:
        for step in steps:
            subprocess.run(["ip", *step], check=True, capture_output=True, text=True)
        launcher = tmp_path_factory.mktemp("hosts") / "launch.sh"
        launcher.write_text(LAUNCHER % (a, b))
        launcher.chmod(0o755)
        yield Hosts(a, b, launcher)
    except subprocess.CalledProcessError as e:
        missing("netns", f"cannot make test hosts: ip {' '.join(e.cmd[1:])}: {e.stderr.strip()}")
    finally:
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.mark.parametrize(
    "optimizer", [["--optimizer", "sgd"], ["--optimizer", "adam", "--lr", "0.01"]]
)
def test_two_hosts_make_the_updates_of_one(words, tmp_path, hosts, optimizer):
    args = [*RUN, "--data", words, "--max-steps", 30, *optimizer]
    assert lm(*args, "--out", tmp_path / "one").returncode == 0
    before = hosts.received()
    r = subprocess.run(hosts.command(*args, "--out", tmp_path / "two"), capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    crossed = hosts.received() - before  # every step's gradients (float64) crossed the link
    assert crossed > 30 * 8 * (16 * 64 + 32 * 64 + 16 * 300)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    ev = ["eval", tmp_path / "two", "--split", "valid", "--batch-size", 4, "--json"]
    one = json.loads(lm(*ev).stdout)
    two = subprocess.run(hosts.command(*ev), capture_output=True, text=True, timeout=60)
    assert json.loads(two.stdout)["nll"] == pytest.approx(one["nll"], rel=1e-12)


def test_other_data_on_the_second_host_is_refused_at_the_start(words, tmp_path, hosts):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train", "valid", "test"):  # the same files, one word changed
        text = (words / f"{name}.txt").read_text()
        (other / f"{name}.txt").write_text(
            text.replace("w1 ", "w2 ", 1) if name == "train" else text
        )
    bind = Path(f"{hosts.launcher}.{hosts.b}")
    bind.write_text(f"{other} {words}\n")  # host b sees other's files at words' path
    try:
        r = subprocess.run(hosts.command(*RUN, "--data", words, "--out", tmp_path / "r"),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        bind.unlink()
    assert r.returncode == 1 and "the data differ between processes" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["--hosts", "--hostfile"])
def test_procs_runs_on_the_hosts_given(words, tmp_path, hosts, where):
    """`--procs 2 --hosts A,B` (or a host file) from the first host: mpiexec's ssh launcher
    told by hydra's environment to use the test hosts' script."""
    args = [*RUN, "--data", words, "--max-steps", 15]
    value = "192.0.2.1,192.0.2.2"
    if where == "--hostfile":
        value = tmp_path / "hosts"
        value.write_text("192.0.2.1\n192.0.2.2\n")
    before = hosts.received()
    r = subprocess.run(hosts.procs(*args, where, value, "--out", tmp_path / "two"),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert hosts.received() - before > 15 * 8 * (16 * 64 + 32 * 64 + 16 * 300)
    assert lm(*args, "--out", tmp_path / "one").returncode == 0
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_hosts_options_errors(words, tmp_path):
    r = lm(*RUN, "--data", words, "--hosts", "a,b")
    assert r.returncode == 2 and "--hosts and --hostfile go with --procs N" in r.stderr
    r = lm(*RUN, "--data", words, "--procs", 2, "--hosts", "a,,b")
    assert r.returncode == 2 and "names an empty host" in r.stderr
    r = lm(*RUN, "--data", words, "--procs", 2, "--hostfile", tmp_path / "none")
    assert r.returncode == 1 and "no such host file" in r.stderr
    r = lm(*RUN, "--data", words, "--procs", 2, "--hostfile", tmp_path / "h", "--hosts", "a")
    assert r.returncode == 2 and "give the hosts one way" in r.stderr


@pytest.mark.parametrize("how", ["mpiexec", "--procs"])
def test_a_host_whose_link_goes_down_ends_the_job(words, tmp_path, hosts, how):
    out = tmp_path / "r"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 20, "--out", out,
            "--stall-timeout", 5]  # fmt: skip
    cmd = (
        hosts.command(*args)
        if how == "mpiexec"
        else hosts.procs(*args, "--hosts", "192.0.2.1,192.0.2.2")
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "last.npz").exists(), "the run's first save")
    subprocess.run(["ip", "-n", hosts.b, "link", "set", hosts.b, "down"], check=True)
    t0 = time.monotonic()
    try:
        while ranks_running(out) and time.monotonic() - t0 < 120:
            time.sleep(0.2)
        gone = time.monotonic() - t0
    finally:
        subprocess.run(["ip", "-n", hosts.b, "link", "set", hosts.b, "up"], check=True)
    _, err = proc.communicate(timeout=120)
    # the deadline is the behaviour: with the link down nothing but the 5 s stall timeout
    # ends the job (TCP would wait minutes); 5 s and a busy machine's slow abort within 60
    assert gone < 5 + 55 and proc.returncode != 0, err
    errors = [line for line in err.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and f"Error: rank 0 on {hosts.a}: " in errors[0], err
    assert f"(--stall-timeout 5); no answer from rank 1 on {hosts.b}: " in errors[0]
    if how == "--procs":  # the line alone, without MPICH's after MPI_Abort
        assert err.strip() == errors[0], err
    for name in ("last.npz", "best.npz"):
        assert read_meta(out / name)["train_state"]["step"] >= 20


def ranks_running(out: Path) -> list[int]:
    """The pids of the lstm-lm processes training into `out`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lstm_lm" in argv and str(out).encode() in argv:
            pids.append(int(proc.name))
    return pids


def test_a_host_that_dies_ends_the_job(words, tmp_path, hosts):
    """Rank 1's process on the second host killed (SIGKILL) mid-run, under the --procs
    launcher: the job ends at once (mpiexec ends the others) with one line naming the rank
    and its host, the checkpoints load and a run resumes from them alone."""
    out, tag = tmp_path / "r", f"kill-{time.monotonic_ns()}"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 20, "--out", out]
    env = {**os.environ, "LSTM_LM_TEST_TAG": tag}
    cmd = hosts.procs(*args, "--hosts", "192.0.2.1,192.0.2.2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "last.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(ranks_of(tag)[1], signal.SIGKILL)
    t0 = time.monotonic()
    stdout, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10 and proc.returncode == 1, err
    assert gone(lambda: ranks_of(tag), t0 + 10)
    assert err.splitlines()[-1] == (
        f"Error: rank 1 on {hosts.b} died (signal 9: killed, or its host went down); mpiexec "
        "ended the other processes (a training run resumes from its last save)"
    ), err + stdout
    assert sum(line.startswith("Error") for line in err.splitlines()) == 1
    assert "=====" not in stdout + err and "[proxy:" not in err  # mpiexec's own report
    step = read_meta(out / "last.npz")["train_state"]["step"]
    assert step >= 20 and read_meta(out / "best.npz")["train_state"]["step"] >= 20
    # what it saved is what an undisturbed run holds at that step, to the bit ...
    calm = tmp_path / "calm"
    r = subprocess.run(hosts.command(*args[:-1], calm, "--max-steps", step), capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_same_run(out, calm, rel=0.0)
    # ... and one process goes on from either the same way
    for run in (out, calm):
        r = lm("train", "--resume", run, "--max-steps", step + 10, "--quiet")
        assert r.returncode == 0, r.stderr
    assert_same_run(out, calm, rel=0.0)


def test_a_host_lost_with_its_proxy_ends_the_job(words, tmp_path, hosts):
    """Every process of the second host killed, mpiexec's proxy too (as when the host goes
    down and its connections close): the job ends at once, with one line."""
    out = tmp_path / "r"
    args = [*RUN, "--data", words, "--epochs", 50, "--eval-every", 20, "--out", out]
    proc = subprocess.Popen(hosts.procs(*args, "--hosts", "192.0.2.1,192.0.2.2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "last.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = subprocess.run(["ip", "netns", "pids", hosts.b], capture_output=True, text=True)
    for pid in pids.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10 and proc.returncode == 1, err
    assert gone(lambda: ranks_running(out), t0 + 10)
    errors = [line for line in err.splitlines() if line.startswith(("Error", "[mpiexec@"))]
    assert errors == [
        "Error: mpiexec lost a host (it went down, or all its processes were killed); mpiexec "
        "ended the other processes (a training run resumes from its last save)"
    ], err
    assert read_meta(out / "last.npz")["train_state"]["step"] >= 20
