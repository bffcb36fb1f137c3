"""What `lstm-lm bench` measures: training and evaluation tokens/s on synthetic tokens.

A training step is `train.train_step`, the very step `fit` runs (forward and backward with
the configuration's dropout, clipping, the token rows' multiplier, the optimiser update)
over one (B, T) window; evaluation is the forward pass and the loss. Each figure is the
median over `repeats` timed steps after `warmup` untimed ones. The literal per-token,
batch-1, dense one-hot formulation (lstm_lm.literal) can be timed beside it as the baseline.
"""

from __future__ import annotations

import numpy as np

from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.literal import literal_loss_and_grads
from lstm_lm.model import LanguageModel
from lstm_lm.optim import OPTIMIZERS
from lstm_lm.parallel import Group
from lstm_lm.timing import median_rate
from lstm_lm.train import check_memory, train_step


def bench(
    config: ModelConfig, tc: TrainConfig, warmup: int = 3, repeats: int = 10, group=None
) -> dict:
    """Median tokens/s of training steps and of evaluation windows, with the configuration.
    Over a group of ranks each takes its block of the batch, as in training; the figures
    are the whole batch's, with the bytes each rank sends per training step."""
    group = group or Group()
    check_memory(config, tc)
    rng = np.random.default_rng(tc.seed)
    model = LanguageModel.init(config, rng, tc.dtype)
    opt = OPTIMIZERS[tc.optimizer](model.params)
    B, T, V = tc.batch_size, tc.bptt, config.vocab_size
    block = group.block(B)
    x, y = rng.integers(0, V, (B, T))[block], rng.integers(0, V, (B, T))[block]
    state = model.init_state(len(x))

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
        "vocab": V,
        "batch_size": B,
        "bptt": T,
        "dtype": tc.dtype,
        "optimizer": tc.optimizer,
        "dropout": config.dropout,
        "input_dropout": config.input_dropout,
        "params": model.num_params(),
        "procs": group.size,
        "threads": model.threads.cores,  # per process
        "train_tokens_per_s": round(train_rate, 1),
        "eval_tokens_per_s": round(median_rate(eval_step, B * T, warmup, repeats), 1),
        "bytes_per_step": round(sent),
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
