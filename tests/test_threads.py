"""How the model uses the cores: evaluation drops to one thread while other processes keep
the machine busy, and gives the same figures either way."""

import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import lstm_lm.softmax
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.model import LanguageModel
from lstm_lm.optim import Adam
from lstm_lm.threads import OtherLoad, Threads
from lstm_lm.train import step_keeps_bits, train_step

SPIN = "import time\nend = time.monotonic() + {}\nwhile time.monotonic() < end: pass"


def blas_threads() -> int:
    return max(d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas")


class Machine:
    """Stands in for /proc/stat and the clock: CPU seconds of the machine and of this
    process, advanced by hand."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0

    def run(self, seconds: float, others: float, ours: float) -> None:
        """`seconds` of wall time, with `others` cores busy elsewhere and `ours` here."""
        self.wall += seconds
        self.busy += seconds * (others + ours)
        self.own += seconds * ours


def test_other_load_counts_other_processes_not_this_one():
    m = Machine()
    load = OtherLoad(every=0.5, read=lambda: (m.busy, m.own), clock=lambda: m.wall)
    m.run(1.0, others=0.0, ours=1.0)
    assert load() == 0.0  # this process busy: not counted
    m.run(1.0, others=1.5, ours=0.5)
    assert load() == pytest.approx(1.5)
    m.run(0.2, others=0.0, ours=0.0)
    assert load() == pytest.approx(1.5)  # measured again only every 0.5 s
    m.run(0.4, others=0.0, ours=0.0)
    assert load() == pytest.approx(0.0)
    m.run(1.0, others=0.0, ours=1.0)
    m.own += 0.05  # os.times and /proc/stat tick apart: never a negative load
    assert load() == 0.0


def test_other_load_is_zero_where_the_machine_cannot_be_read():
    load = OtherLoad(every=0.0, read=lambda: None)
    assert load() == 0.0 and load() == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_other_load_sees_a_real_process_beside_this_one():
    """The real /proc/stat: one spinning child is about one core. A neighbour whose load
    changes meanwhile would blur that, so the test needs a quiet machine and skips otherwise."""
    quiet = 0.25

    def machine_busy(load):
        time.sleep(0.6)
        return load() > quiet

    load = OtherLoad(every=0.0)
    if machine_busy(load):
        pytest.skip(f"other processes keep more than {quiet} of a core busy: cannot tell one more")
    exec(SPIN.format(0.6))  # this process busy: not counted
    own = load()
    child = subprocess.Popen([sys.executable, "-c", SPIN.format(1.5)])
    time.sleep(0.3)
    load()  # from here on, the child spins too
    time.sleep(0.8)
    other = load()
    child.wait()
    load()  # from here on, the child is gone
    if machine_busy(load):
        pytest.skip("another process started meanwhile: cannot tell the child's share")
    assert own <= quiet and 0.6 <= other <= 1.0 + 2 * quiet


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
    with threads.time_loop(macs_per_step=20 * 64 * 256, weight_bytes=4 * 64 * 256):
        assert blas_threads() == 1  # tiny: one thread
    with threads.time_loop(macs_per_step=20 * 200 * 800, weight_bytes=4 * 200 * 800):
        assert blas_threads() == quiet  # the small preset's: two threads are faster
    with threads.time_loop(macs_per_step=1 * 512 * 2048, weight_bytes=4 * 512 * 2048):
        assert blas_threads() == quiet  # batch 1, but 4 MB of weights streamed every step
    with threads.time_loop(macs_per_step=32 * 512 * 2048, weight_bytes=4 * 512 * 2048):
        assert blas_threads() == quiet


def test_same_bits_compares_a_run_on_one_thread_with_the_threaded_one_once_per_key():
    threads, calls = Threads(), []
    if threads.cores == 1 or blas_threads() == 1:
        pytest.skip("BLAS runs on one thread here: nothing to compare")

    def run(differs):
        calls.append(blas_threads())
        return [np.arange(3.0) + (differs and blas_threads() == 1)]

    assert threads.same_bits(("a",), lambda: run(False))
    assert not threads.same_bits(("b",), lambda: run(True))
    assert threads.same_bits(("a",), lambda: run(True))  # asked already: not run again
    assert calls == [blas_threads(), 1] * 2

    def no_room():
        raise MemoryError

    assert not threads.same_bits(("c",), no_room)  # a probe that does not fit answers no


def test_a_training_step_goes_to_one_thread_on_a_busy_machine_only_if_bits_are_kept():
    threads, asked = Threads(), []
    if threads.cores == 1:
        pytest.skip("one core: every step is on one thread already")
    quiet = blas_threads()

    def keeps(answer):
        return lambda: asked.append(answer) or answer

    threads.other_load = lambda: 0.0
    with threads.training_step(keeps(True)):
        assert blas_threads() == quiet and not threads._serial and asked == []
    threads.other_load = lambda: 1.0
    with threads.training_step(keeps(False)):
        assert blas_threads() == quiet and not threads._serial
    with threads.training_step(keeps(True)):
        assert blas_threads() == 1 and threads._serial  # the softmax pool idle too
    assert blas_threads() == quiet and not threads._serial and asked == [False, True]


def test_training_on_a_busy_machine_repeats_the_quiet_run_bit_for_bit():
    """Per-step products of a 1 x 512 layer are threaded; beside busy processes the step goes
    to one thread where that keeps its bits, and the run stays the same."""
    config = ModelConfig(vocab_size=50, hidden=512, layers=1, dropout=0.1)
    tc = TrainConfig(batch_size=4, bptt=5, optimizer="adam", lr=1e-3)
    runs, threads_seen, quiet_threads = [], [], blas_threads()
    for load in (0.0, 1.0):
        rng = np.random.default_rng(0)
        model = LanguageModel.init(config, rng)
        model.threads.other_load = lambda load=load: load
        step_keeps = step_keeps_bits(model, 4, 5)  # checked before the spy goes in

        def spy(forward, threads=model.threads):
            def spied(*args):
                threads_seen.append((blas_threads(), threads._serial))
                return forward(*args)

            return spied

        cell = model.cell  # a char-sized layer 0 takes its tokens inside each step
        model.cell = cell._replace(
            forward=spy(cell.forward), forward_tokens=spy(cell.forward_tokens)
        )
        opt, state = Adam(model.params), model.init_state(4)
        x, y = rng.integers(0, 50, (4, 5)), rng.integers(0, 50, (4, 5))
        for _ in range(3):
            state = train_step(model, opt, tc, x, y, state, tc.lr, rng).state
        runs.append(model.params)
    quiet, busy = runs
    if not step_keeps:  # this BLAS rounds apart on one thread: the busy run stays threaded
        assert threads_seen == [(quiet_threads, False)] * 6
        pytest.skip("one thread rounds this step differently here: no busy run to compare")
    assert threads_seen == [(quiet_threads, False)] * 3 + [(1, True)] * 3
    assert all(np.array_equal(quiet[k], busy[k]) for k in quiet)  # on one thread, same bits


def test_the_step_check_compares_a_step_on_one_thread_with_the_threaded_one(monkeypatch):
    model = LanguageModel.init(ModelConfig(vocab_size=50, hidden=64), np.random.default_rng(0))
    assert step_keeps_bits(model, 2, 3)  # products this small round the same either way
    if blas_threads() == 1:
        pytest.skip("BLAS runs on one thread here: nothing to compare")
    exact = lstm_lm.softmax.dtop

    def rounds_apart_on_one_thread(dlogits, Wy):
        out = exact(dlogits, Wy)
        return np.nextafter(out, np.inf) if blas_threads() == 1 else out

    monkeypatch.setattr(lstm_lm.softmax, "dtop", rounds_apart_on_one_thread)
    assert not step_keeps_bits(model, 4, 3)


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
