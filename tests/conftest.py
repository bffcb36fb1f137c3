"""Shared fixtures: the PTB mirror, a Markov-chain corpus with a known entropy, a small run."""

import os
import platform
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import cells
from lstm_lm.cli import main

REPO = Path(__file__).resolve().parents[1]
# The shared token cache (lstm_lm.cache) of the whole session away from the user's, and each
# test's its own (`own_token_cache`): what one test tokenised is not another's cache hit.
os.environ["LSTM_LM_CACHE"] = tempfile.mkdtemp(prefix="lstm-lm-test-cache-")
# What the run must test rather than skip (.ci/run sets it): ptb, torch, mpi, plot, export,
# bpe, chromium, netns. A test whose feature is missing fails there, naming what is missing.
REQUIRED = set(os.environ.get("LSTM_LM_REQUIRE", "").split())


def missing(feature: str, reason: str):
    """Skip a test whose feature this machine lacks, or fail it where it is REQUIRED."""
    if feature in REQUIRED:
        pytest.fail(f"{reason} (required here: LSTM_LM_REQUIRE has {feature})", pytrace=False)
    pytest.skip(reason)


def wait_for(condition, what: str, timeout: float = 120.0, every: float = 0.05) -> None:
    """Poll `condition()` until it holds; fail naming `what` after `timeout` seconds, which
    only ends a test that hangs (nothing here is a measure of speed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(every)


READ = {"x86_64": 0, "aarch64": 63}  # the read system call's number, by machine


def reading_stdin(pid: int) -> bool:
    """Whether the process is blocked in read(0, ...) (Linux's /proc/PID/syscall)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == [str(READ.get(platform.machine(), -1)), "0x0"]


def require_module(name: str, feature: str):
    """The module, else `missing`."""
    try:
        return __import__(name)
    except ImportError as e:
        missing(feature, f"could not import {name!r}: {e}")


def ptb_location() -> Path | None:
    """LSTM_LM_PTB_MIRROR if it is a directory, else an existing dataset/ptb."""
    mirror = os.environ.get("LSTM_LM_PTB_MIRROR")
    for cand in ([Path(mirror)] if mirror else []) + [REPO / "dataset" / "ptb"]:
        if (cand / "ptb.train.txt").is_file():
            return cand
    return None


@pytest.fixture(autouse=True)
def own_token_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LSTM_LM_CACHE", str(tmp_path_factory.mktemp("token-cache")))


@pytest.fixture
def as_from_a_terminal():
    """A preexec_fn for subprocess.Popen: Ctrl-C's default action, as a command started from
    a terminal has it, even when the tests run in a background job (whose shell ignores SIGINT,
    which children inherit and Python then never turns into KeyboardInterrupt)."""
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def broken_lstm_backward(monkeypatch):
    """The LSTM's backward with one term wrong by 0.1%: what a gradient check must catch."""
    real = cells.lstm_backward

    def broken(dhs, dstate, cache):
        dx, dWh, ds = real(dhs, dstate, cache)
        return dx, dWh * 1.001, ds

    monkeypatch.setitem(
        cells.CELL_TYPES, "lstm", cells.CELL_TYPES["lstm"]._replace(backward=broken)
    )


@pytest.fixture(scope="session")
def ptb_dir() -> Path:
    where = ptb_location()
    if where is None:
        missing("ptb", "PTB not available: set LSTM_LM_PTB_MIRROR (CI sets it to ../shared/ptb) "
                "or run lstm-lm download")  # fmt: skip
    return where


def markov_chain(V: int, seed: int, concentration: float = 0.3):
    """A random order-1 chain: transition matrix P (V, V), stationary distribution pi and
    entropy rate H = -sum_i pi_i sum_j P_ij ln P_ij (nats per token)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, concentration), size=V)
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    H = float(-(pi[:, None] * P * np.log(P)).sum())
    return P, pi, H


def draw_chain(P, n: int, rng) -> np.ndarray:
    cdf = np.cumsum(P, axis=1)
    out = np.empty(n, np.int64)
    s = 0
    u = rng.random(n)
    for t in range(n):  # test data generation only
        s = min(int(np.searchsorted(cdf[s], u[t])), len(P) - 1)
        out[t] = s
    return out


@pytest.fixture(scope="session")
def markov_corpus(tmp_path_factory):
    """train.txt / valid.txt / test.txt of single-letter words drawn from a Markov chain,
    written as one long line each (so <eos> occurs once per split), and the chain's true
    perplexity exp(H)."""
    V = 6
    P, pi, H = markov_chain(V, seed=3)
    rng = np.random.default_rng(7)
    d = tmp_path_factory.mktemp("markov")
    letters = np.array(list("abcdefghij"[:V]))
    for name, n in (("train", 40_000), ("valid", 4_000), ("test", 20_000)):
        seq = draw_chain(P, n, rng)
        (d / f"{name}.txt").write_text(" ".join(letters[seq]) + "\n")
    return d, float(np.exp(H))


def entropy_rate(P) -> float:
    """Nats per token of an order-1 chain with transition matrix P."""
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    return float(-(pi[:, None] * P * np.log(P)).sum())


@pytest.fixture(scope="session")
def related_chain_corpus(tmp_path_factory):
    """train.txt / valid.txt of a second chain, 70% the Markov corpus's chain and 30% another
    (a related domain), and its true perplexity."""
    P = 0.7 * markov_chain(6, seed=3)[0] + 0.3 * markov_chain(6, seed=5)[0]
    rng = np.random.default_rng(11)
    d = tmp_path_factory.mktemp("related")
    letters = np.array(list("abcdef"))
    for name, n in (("train", 40_000), ("valid", 4_000)):
        (d / f"{name}.txt").write_text(" ".join(letters[draw_chain(P, n, rng)]) + "\n")
    return d, float(np.exp(entropy_rate(P)))


@pytest.fixture(scope="session")
def markov_chain_run(tmp_path_factory, markov_corpus):
    """A model trained on the Markov corpus until it knows the chain (a few seconds): the
    known-answer model, and the chain's transition matrix P (rows and columns: a, b, ...)."""
    data, _ = markov_corpus
    out = tmp_path_factory.mktemp("run") / "markov"
    opts = "--layers 1 --hidden 32 --batch-size 16 --bptt 20 --epochs 2 --decay-after 1 --quiet"
    r = CliRunner().invoke(main, ["train", "--data", str(data), *opts.split(), "--optimizer",
                                  "adam", "--lr", "0.01", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, markov_chain(6, seed=3)[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, markov_corpus):
    """A small word-level run on the Markov corpus (a few seconds)."""
    data, _ = markov_corpus
    out = tmp_path_factory.mktemp("run") / "tiny"
    opts = "--layers 1 --hidden 16 --batch-size 8 --bptt 10 --epochs 1 --max-steps 60 --quiet"
    args = ["train", "--data", str(data), *opts.split(), "--optimizer", "adam", "--lr", "0.01"]
    r = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="session")
def words(tmp_path_factory):
    """train/valid/test of Zipf-distributed words over 300 types, 20 words a line."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("words")
    p = 1 / np.arange(1, 301)
    for name, n in (("train", 30_000), ("valid", 3_000), ("test", 3_000)):
        ids = rng.choice(300, n, p=p / p.sum())
        lines = [" ".join(f"w{i}" for i in ids[s : s + 20]) for s in range(0, n, 20)]
        (d / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="session")
def zipf_words(tmp_path_factory):
    """Zipf-distributed words over 60 types: 27 windows of B 4 x T 5 an epoch."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("zipf")
    p = 1 / np.arange(1, 61)
    for name, n in (("train", 480), ("valid", 200)):
        ids = rng.choice(60, n, p=p / p.sum())
        lines = [" ".join(f"w{i}" for i in ids[s : s + 10]) for s in range(0, n, 10)]
        (d / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return d
