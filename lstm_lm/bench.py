"""What `lstm-lm bench` measures: training and evaluation tokens/s on synthetic tokens.

A training step is `train.train_step`, the very step `fit` runs (forward and backward with
the configuration's dropout, clipping, the token rows' multiplier, the optimiser update)
over one (B, T) window; evaluation is the forward pass and the loss. Each figure is the
median over `repeats` timed steps after `warmup` untimed ones. The tokens are uniform over
the vocabulary, or with `zipf` drawn as words are, p(id) ~ 1 / (id + 1) (Zipf's law, ids
ranked by frequency): what an adaptive softmax's cost depends on, since a window's targets
then fall in its head mostly. The literal per-token,
batch-1, dense one-hot formulation (lstm_lm.literal) can be timed beside it as the baseline.
"""

from __future__ import annotations

import time

import numpy as np

from lstm_lm.cells import ONE_HOT_ROWS
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.literal import literal_loss_and_grads
from lstm_lm.memory import check_memory
from lstm_lm.model import LanguageModel
from lstm_lm.parallel import Group
from lstm_lm.timing import Phases, median_rate
from lstm_lm.train import optimizer_for, train_step

VOCAB = {"word": 10_000, "char": 50, "bpe": 8_192}  # the synthetic vocabulary, by level


def tokens(rng: np.random.Generator, V: int, shape: tuple[int, ...], zipf: bool) -> np.ndarray:
    """Random ids: uniform over V, or Zipf-distributed, p(id) ~ 1 / (id + 1)."""
    if not zipf:
        return rng.integers(0, V, shape)
    cdf = np.cumsum(1.0 / np.arange(1, V + 1))
    return np.minimum(np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right"), V - 1)


def _setup(config: ModelConfig, tc: TrainConfig, group: Group, zipf: bool = False):
    """A model, its optimiser and this rank's block of a random (B, T) window."""
    check_memory(config, tc)
    rng = np.random.default_rng(tc.seed)
    model = LanguageModel.init(config, rng, tc.dtype)
    opt = optimizer_for(tc, model.params)
    if tc.asgd:
        opt.start_averaging()  # what a step costs once averaging runs
    B, T, V = tc.batch_size, tc.bptt, config.vocab_size
    block = group.block(B)
    x, y = (tokens(rng, V, (B, T), zipf)[block] for _ in range(2))
    return model, opt, x, y, rng


def bench(config: ModelConfig, tc: TrainConfig, warmup: int = 3, repeats: int = 10, group=None,
          zipf: bool = False) -> dict:  # fmt: skip
    """Median tokens/s of training steps and of evaluation windows, with the configuration.
    Over a group of ranks each takes its block of the batch, as in training; the figures
    are the whole batch's, with the bytes each rank sends per training step."""
    group = group or Group()
    model, opt, x, y, rng = _setup(config, tc, group, zipf)
    state = model.init_state(len(x))
    B, T = tc.batch_size, tc.bptt

    def train():
        nonlocal state
        state = train_step(model, opt, tc, x, y, state, tc.lr, rng, group).state

    def eval_step():
        group.sum(model.nll(x, y, state)[0])

    sent = group.bytes_sent
    train_rate = median_rate(train, B * T, warmup, repeats)
    sent = (group.bytes_sent - sent) / (warmup + repeats)
    return {
        "cell": config.cell,
        "layers": config.layers,
        "hidden": config.hidden,
        "vocab": config.vocab_size,
        "softmax": config.softmax,
        "cutoffs": list(config.cutoffs) if config.softmax == "adaptive" else None,
        "tokens": "zipf" if zipf else "uniform",
        "batch_size": B,
        "bptt": T,
        "dtype": tc.dtype,
        "optimizer": tc.optimizer,
        "asgd": tc.asgd,
        "dropout": config.dropout,
        "input_dropout": config.input_dropout,
        "variational": config.variational,
        "word_dropout": config.word_dropout,
        "weight_drop": config.weight_drop,
        "ar": config.ar,
        "tar": config.tar,
        "params": model.num_params(),
        "procs": group.size,
        "threads": model.threads.cores,  # per process
        "train_tokens_per_s": round(train_rate, 1),
        "eval_tokens_per_s": round(median_rate(eval_step, B * T, warmup, repeats), 1),
        "bytes_per_step": round(sent),
    }


def gemm_ceiling(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n by n x n product on this process's BLAS threads (median): about
    the fastest this CPU multiplies matrices, the floor under every GEMM of a step."""
    a = np.random.default_rng(0).random((n, n), dtype=np.dtype(dtype))
    out = np.empty_like(a)
    return median_rate(lambda: np.matmul(a, a, out=out), 2 * n**3, 1, repeats) / 1e9


def profile(config: ModelConfig, tc: TrainConfig, warmup: int = 3, repeats: int = 10,
            group=None, zipf: bool = False) -> dict:  # fmt: skip
    """Where a training step's time goes: milliseconds per step in each part of it (mean
    over `repeats` steps after `warmup`; "other" is the rest of the step), each part's matrix
    products in GFLOP, and this CPU's GEMM ceiling in GFLOP/s, so a part's time can be set
    beside the least its products could take."""
    group = group or Group()
    model, opt, x, y, rng = _setup(config, tc, group, zipf)
    state = model.init_state(len(x))
    for _ in range(warmup):
        state = train_step(model, opt, tc, x, y, state, tc.lr, rng, group).state
    model.phases = phases = Phases()
    t0 = time.perf_counter()
    for _ in range(repeats):
        state = train_step(model, opt, tc, x, y, state, tc.lr, rng, group).state
    step = (time.perf_counter() - t0) / repeats
    ms = {k: 1e3 * v / repeats for k, v in phases.seconds.items()}
    if group.size == 1:
        del ms["sum over ranks"]  # nothing to sum: a function call, counted in "other"
    ms["other"] = max(0.0, 1e3 * step - sum(ms.values()))

    # Every cell does N x H x G multiply-adds in its forward time loop and twice that backward.
    B, T, L, H = x.shape[0], x.shape[1], config.layers, config.hidden
    N, G, U = B * T, len(model.cell.gates) * H, len(np.unique(x))  # U: the window's tokens
    flops = {
        "output GEMMs": model.output.flops(y.ravel()),
        "time loop, forward": L * 2 * N * H * G,
        "time loop, backward": L * 2 * 2 * N * H * G,
        "input projections": (L - 1) * 3 * 2 * N * H * G,
        "token rows": 2 * U * N * G if U <= ONE_HOT_ROWS else 0,
    }
    return {
        "step_ms": round(1e3 * step, 3),
        "tokens_per_s": round(tc.batch_size * T / step, 1),
        "gemm_gflops": round(gemm_ceiling(tc.dtype), 1),
        "parts": [
            {"part": k, "ms": round(v, 3), "gflop": round(flops.get(k, 0) / 1e9, 4)}
            for k, v in ms.items()
        ],
    }


def bench_literal(config: ModelConfig, bptt: int = 20, repeats: int = 3, seed: int = 0) -> dict:
    """Tokens/s of the literal formulation: batch 1, float64, one token at a time, SGD."""
    rng = np.random.default_rng(seed)
    model = LanguageModel.init(config, rng, "float64")
    P = {k: v.copy() for k, v in model.named_arrays().items()}
    V, T = config.vocab_size, bptt
    x, y = rng.integers(0, V, (1, T)), rng.integers(0, V, (1, T))
    state = model.init_state(1)

    def train():
        _, G, _, _ = literal_loss_and_grads(P, config.layers, x, y, state, scale=float(T))
        for k in P:
            P[k] -= 0.01 * G[k]

    return {
        "cell": "lstm (literal)",
        "layers": config.layers,
        "hidden": config.hidden,
        "vocab": V,
        "batch_size": 1,
        "bptt": T,
        "dtype": "float64",
        "optimizer": "sgd",
        "params": model.num_params(),
        "train_tokens_per_s": round(median_rate(train, T, 1, repeats), 1),
        "eval_tokens_per_s": None,
    }
