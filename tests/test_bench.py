"""The profile of a training step: parts that add up to the step, the GEMM work of each, and
timing that leaves the step's arithmetic alone."""

import time

import numpy as np
import pytest

from lstm_lm.bench import profile
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.model import LanguageModel
from lstm_lm.optim import SGD
from lstm_lm.timing import Phases
from lstm_lm.train import train_step


def test_phases_sum_the_time_of_each_named_part():
    phases = Phases()
    for _ in range(2):
        with phases("a"):
            time.sleep(0.01)
    with phases("b"):
        pass
    assert list(phases.seconds) == ["a", "b"]
    assert 0.02 <= phases.seconds["a"] < 0.2 and phases.seconds["b"] < 0.01
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
    assert sum(q["ms"] for q in p["parts"]) == pytest.approx(p["step_ms"], rel=0.01, abs=0.01)
    assert all(q["ms"] > 0 for q in p["parts"][:-1])
    N, H, V, G = 4 * 6, 32, 300, 4 * 32
    assert parts["output GEMMs"]["gflop"] == pytest.approx(3 * 2 * N * H * V / 1e9, abs=1e-4)
    assert parts["time loop, forward"]["gflop"] == pytest.approx(2 * 2 * N * H * G / 1e9, abs=1e-4)
    assert parts["input projections"]["gflop"] == pytest.approx(3 * 2 * N * H * G / 1e9, abs=1e-4)
    assert parts["softmax"]["gflop"] == 0 and parts["token rows"]["gflop"] > 0
    assert p["tokens_per_s"] == pytest.approx(N / (p["step_ms"] / 1e3), rel=0.01)
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
