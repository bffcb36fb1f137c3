"""How the model uses the cores: evaluation drops to one thread while other processes keep
the machine busy, and gives the same figures either way."""

import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from lstm_lm.config import ModelConfig
from lstm_lm.model import LanguageModel
from lstm_lm.threads import OtherLoad, Threads

SPIN = "import time\nend = time.monotonic() + {}\nwhile time.monotonic() < end: pass"


def blas_threads() -> int:
    return max(d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_other_load_counts_other_processes_not_this_one():
    load = OtherLoad(every=0.0)
    exec(SPIN.format(0.6))  # this process busy: not counted
    own = load()
    child = subprocess.Popen([sys.executable, "-c", SPIN.format(1.5)])
    time.sleep(0.3)
    load()  # from here on, the child alone spins
    time.sleep(0.8)
    other = load()
    child.wait()
    assert 0.6 <= other <= 1.3
    assert own <= other - 0.5


def test_evaluation_runs_on_one_thread_when_the_machine_is_busy():
    threads = Threads()
    quiet = blas_threads()
    threads.other_load = lambda: 1.0  # another process keeps a core busy
    with threads.evaluation():
        assert blas_threads() == 1 and threads._serial
    assert blas_threads() == quiet and not threads._serial
    threads.other_load = lambda: 0.0
    with threads.evaluation():
        assert blas_threads() == quiet


def test_time_loop_threads_only_large_products_or_large_weights():
    threads = Threads()
    quiet = blas_threads()
    with threads.time_loop(macs_per_step=20 * 200 * 800, weight_bytes=4 * 200 * 800):
        assert blas_threads() == 1  # small: one thread
    with threads.time_loop(macs_per_step=1 * 512 * 2048, weight_bytes=4 * 512 * 2048):
        assert blas_threads() == quiet  # batch 1, but 4 MB of weights streamed every step
    with threads.time_loop(macs_per_step=32 * 512 * 2048, weight_bytes=4 * 512 * 2048):
        assert blas_threads() == quiet


def test_sampling_runs_on_one_thread_when_the_machine_is_busy(monkeypatch):
    config = ModelConfig(vocab_size=50, hidden=512, layers=1)
    model = LanguageModel.init(config, np.random.default_rng(0))
    seen = []
    forward = model._forward
    monkeypatch.setattr(model, "_forward", lambda *a: seen.append(blas_threads()) or forward(*a))
    quiet = blas_threads()
    model.threads.other_load = lambda: 1.0
    state = model.advance(np.array([[1, 2, 3]]), model.init_state(1))
    logits, _ = model.step(np.array([4]), state)
    model.threads.other_load = lambda: 0.0
    model.step(np.array([4]), state)
    assert seen == [1, 1, quiet] and logits.shape == (1, 50)


def test_evaluation_gives_the_same_figures_busy_or_quiet():
    config = ModelConfig(vocab_size=300, hidden=64, layers=2)
    rng = np.random.default_rng(0)
    model = LanguageModel.init(config, rng)
    x, y = rng.integers(0, 300, (8, 35)), rng.integers(0, 300, (8, 35))
    model.threads.other_load = lambda: 0.0
    quiet, _ = model.nll(x, y, model.init_state(8))
    model.threads.other_load = lambda: 2.0
    busy, _ = model.nll(x, y, model.init_state(8))
    assert busy == pytest.approx(quiet, rel=1e-6)
