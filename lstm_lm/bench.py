"""What `lstm-lm bench` measures: training and evaluation tokens/s on synthetic tokens.

A training step is forward + backward + clipping + the optimiser update over one (B, T)
window; evaluation is the forward pass and the loss. Each figure is the median over
`repeats` timed steps after `warmup` untimed ones. The literal per-token, batch-1, dense
one-hot formulation (lstm_lm.literal) can be timed beside it as the baseline.
"""

from __future__ import annotations

import numpy as np

from lstm_lm.config import ModelConfig
from lstm_lm.literal import literal_loss_and_grads
from lstm_lm.model import LanguageModel
from lstm_lm.optim import OPTIMIZERS, clip_global_norm_
from lstm_lm.timing import median_rate


def bench(
    config: ModelConfig,
    batch_size: int = 20,
    bptt: int = 20,
    dtype: str = "float32",
    optimizer: str = "sgd",
    warmup: int = 3,
    repeats: int = 10,
    seed: int = 0,
) -> dict:
    """Median tokens/s of training steps and of evaluation windows."""
    rng = np.random.default_rng(seed)
    model = LanguageModel.init(config, rng, dtype)
    opt = OPTIMIZERS[optimizer](model.params)
    B, T, V = batch_size, bptt, config.vocab_size
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state = model.init_state(B)

    def train_step():
        nonlocal state
        r = model.loss_and_grads(x, y, state, rng=rng, scale=float(T))
        clip_global_norm_(r.grads, 5.0, r.rows)
        opt.step(model.params, r.grads, 0.01, r.rows)
        state = r.state

    def eval_step():
        model.nll(x, y, state)

    return {
        "cell": config.cell,
        "layers": config.layers,
        "hidden": config.hidden,
        "vocab": V,
        "batch_size": B,
        "bptt": T,
        "dtype": dtype,
        "optimizer": optimizer,
        "params": model.num_params(),
        "train_tokens_per_s": round(median_rate(train_step, B * T, warmup, repeats), 1),
        "eval_tokens_per_s": round(median_rate(eval_step, B * T, warmup, repeats), 1),
    }


def bench_literal(config: ModelConfig, bptt: int = 20, repeats: int = 3, seed: int = 0) -> dict:
    """Tokens/s of the literal formulation: batch 1, float64, one token at a time, SGD."""
    rng = np.random.default_rng(seed)
    model = LanguageModel.init(config, rng, "float64")
    P = {k: v.copy() for k, v in model.named_arrays().items()}
    V, T = config.vocab_size, bptt
    x, y = rng.integers(0, V, (1, T)), rng.integers(0, V, (1, T))
    state = [tuple(s for s in layer) for layer in model.init_state(1)]

    def train_step():
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
        "train_tokens_per_s": round(median_rate(train_step, T, 1, repeats), 1),
        "eval_tokens_per_s": None,
    }
