"""The profile of a training step: parts that add up to the step, the GEMM work of each, and
timing that leaves the step's arithmetic alone."""

import numpy as np
import pytest

from lstm_lm.bench import profile
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.model import LanguageModel
from lstm_lm.optim import SGD
from lstm_lm.timing import Phases
from lstm_lm.train import train_step


def test_phases_sum_the_time_of_each_named_part():
    ticks = iter([0.0, 0.25, 1.0, 1.5, 2.0, 2.0])  # a clock that reads 0, 0.25, 1, ...
    phases = Phases(clock=lambda: next(ticks))
    for _ in range(2):
        with phases("a"):
            pass
    with phases("b"):
        pass
    assert phases.seconds == {"a": 0.75, "b": 0.0}
    off = Phases(on=False)
    with off("a"):
        pass
    assert off.seconds == {}


def test_profile_parts_add_up_to_the_step_with_their_gemm_work():
    config = ModelConfig(vocab_size=300, hidden=32, layers=2, dropout=0.2, input_dropout=0.1)
    tc = TrainConfig(batch_size=4, bptt=6, lr=0.5)
    p = profile(config, tc, warmup=1, repeats=3)
    parts = {q["part"]: q for q in p["parts"]}
    assert list(parts) == [
        "dropout masks", "input projections", "time loop, forward", "output GEMMs", "softmax",
        "time loop, backward", "token rows", "clipping", "optimiser", "other",
    ]  # fmt: skip
    # each named part is timed inside the step, once: together they cannot exceed it ("other",
    # the rest, is what they leave)
    assert sum(q["ms"] for q in p["parts"][:-1]) <= p["step_ms"] * 1.01 + 0.01
    assert all(q["ms"] > 0 for q in p["parts"][:-1]) and parts["other"]["ms"] >= 0
    N, H, V, G = 4 * 6, 32, 300, 4 * 32
    assert parts["output GEMMs"]["gflop"] == pytest.approx(3 * 2 * N * H * V / 1e9, abs=1e-4)
    assert parts["time loop, forward"]["gflop"] == pytest.approx(2 * 2 * N * H * G / 1e9, abs=1e-4)
    assert parts["input projections"]["gflop"] == pytest.approx(3 * 2 * N * H * G / 1e9, abs=1e-4)
    assert parts["softmax"]["gflop"] == 0 and parts["token rows"]["gflop"] > 0
    assert p["gemm_gflops"] > 1


def test_timing_the_parts_leaves_the_step_unchanged():
    config = ModelConfig(vocab_size=50, hidden=16, layers=2, dropout=0.3)
    tc = TrainConfig(batch_size=3, bptt=5, lr=1.0, clip=0.1)
    runs = []
    for on in (False, True):
        rng = np.random.default_rng(0)
        model = LanguageModel.init(config, rng)
        model.phases = Phases(on=on)
        opt, state = SGD(model.params), model.init_state(3)
        x, y = rng.integers(0, 50, (3, 5)), rng.integers(0, 50, (3, 5))
        for _ in range(3):
            state = train_step(model, opt, tc, x, y, state, tc.lr, rng).state
        runs.append((model, len(model.phases.seconds)))
    (off, n_off), (on, n_on) = runs
    assert n_off == 0 and n_on == 10  # the profile's parts and "sum over ranks"
    assert all(np.array_equal(off.params[k], on.params[k]) for k in off.params)


def test_zipf_tokens_follow_one_over_rank():
    """bench --zipf: p(id) ~ 1 / (id + 1), so id 0 is drawn twice as often as id 1 and about
    ten times as often as id 9; uniform tokens cover the vocabulary evenly."""
    from lstm_lm.bench import tokens

    ids = tokens(np.random.default_rng(0), 1000, (400_000,), zipf=True)
    counts = np.bincount(ids, minlength=1000)
    assert ids.min() >= 0 and ids.max() <= 999
    assert counts[0] / counts[1] == pytest.approx(2, rel=0.03)
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.05)
    assert counts[0] / len(ids) == pytest.approx(1 / np.sum(1 / np.arange(1, 1001)), rel=0.02)
    uniform = np.bincount(tokens(np.random.default_rng(0), 10, (100_000,), zipf=False))
    assert uniform.min() > 9_500


def test_the_profile_counts_an_adaptive_softmaxs_output_work():
    config = ModelConfig(vocab_size=3000, hidden=16, layers=1, softmax="adaptive", cutoffs=(100,))
    p = profile(config, TrainConfig(batch_size=4, bptt=5), warmup=1, repeats=2, zipf=True)
    out = next(x for x in p["parts"] if x["part"] == "output GEMMs")
    full = 3 * 2 * 20 * 16 * 3000 / 1e9  # what the full softmax's three products would be
    assert 0 < out["gflop"] < full
