"""Numerical gradient check of the whole model: centered differences in float64.

For every parameter array (by contract name) and the initial state, compares analytic
gradients with the fourth-order centered difference
    (8 (L(p + e) - L(p - e)) - (L(p + 2e) - L(p - 2e))) / 12e
on a sample of entries (a larger step than the two-point formula needs, so float64
round-off in L stays far below the tolerance), and reports the
largest relative error |a - n| / max(|a| + |n|, floor) per array. Large arrays are sampled;
for the token rows of layer 0, rows of tokens in the window and rows of absent tokens
(whose gradient must be exactly zero) are both included, and so for a tied embedding E
(whose absent rows have the output side's gradient alone).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lstm_lm import LMError, OptionError
from lstm_lm.config import ModelConfig, TrainConfig, check_cutoffs
from lstm_lm.memory import check_memory
from lstm_lm.model import LanguageModel, named_views

EPS = 1e-3
TOLERANCE = 1e-6  # largest relative error accepted
# Round-off in a float64 loss of order 10 leaves ~5e-12 of noise in a numeric derivative
# with this step; the floor keeps entries whose true gradient is ~0 from turning that noise
# into a large relative error (any analytic error above ~1e-11 still shows).
FLOOR = 1e-5


def config_for(vocab_size: int, **model) -> ModelConfig:
    """The model to check: a vocabulary small enough to check every row; an adaptive
    softmax's default cutoffs a third and two thirds of it (a head and two tails)."""
    if model.get("softmax") == "adaptive" and model.get("cutoffs") is None:
        model["cutoffs"] = tuple(sorted({max(1, vocab_size // 3), max(1, 2 * vocab_size // 3)}))
    elif model.get("cutoffs") is not None and model.get("softmax") != "adaptive":
        raise OptionError("--cutoffs goes with --softmax adaptive")
    try:
        if model.get("cutoffs") is not None:
            check_cutoffs(model["cutoffs"], vocab_size)
        return ModelConfig(vocab_size, **model)
    except LMError as e:
        raise OptionError(str(e)) from None


def max_relative_error(
    loss: Callable[[], float], array: np.ndarray, grad: np.ndarray, entries
) -> float:
    """Largest relative error between `grad` and the numerical derivative of `loss()` with
    respect to `array` (perturbed in place and restored) over the given index tuples."""
    err = 0.0
    for ix in entries:
        old = array[ix]
        at = []
        for step in (2, 1, -1, -2):
            array[ix] = old + step * EPS
            at.append(loss())
        array[ix] = old
        num, ana = (8 * (at[1] - at[2]) - (at[0] - at[3])) / (12 * EPS), grad[ix]
        err = max(err, abs(ana - num) / max(abs(ana) + abs(num), FLOOR))
    return err


def entries(shape, rng, n: int, rows=None) -> list[tuple]:
    """Up to n random index tuples of an array (all of a small one), optionally within some rows."""
    size = int(np.prod(shape))
    if rows is None and size <= n:
        return list(np.ndindex(*shape))
    rows = np.arange(shape[0]) if rows is None else np.asarray(rows)
    r = rng.choice(rows, n)
    rest = [rng.integers(0, s, n) for s in shape[1:]]
    return list(zip(r, *rest))


def check_gradients(
    config: ModelConfig, batch_size: int = 2, bptt: int = 4, seed: int = 0, samples: int = 30
) -> dict[str, float]:
    """Largest relative error per array name (and `state.l{k}.{j}` for initial states)."""
    check_memory(config, TrainConfig(batch_size=batch_size, bptt=bptt, dtype="float64"))
    rng = np.random.default_rng(seed)
    model = LanguageModel.init(config, rng, "float64")
    for p in model.params.values():  # biases too, so no gradient is trivially symmetric
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    V, B, T = config.vocab_size, batch_size, bptt
    # Tokens from the lower half of the vocabulary only, so the upper rows are absent.
    x = rng.integers(0, max(1, V // 2), (B, T))
    y = rng.integers(0, V, (B, T))
    state = [tuple(rng.normal(0, 0.5, (B, config.hidden)) for _ in s) for s in model.init_state(B)]
    masks = model.draw_masks(T, B, rng)
    scale = float(B * T)  # the summed loss: gradients of order one

    def loss() -> float:
        r = model.loss_and_grads(x, y, state, masks=masks, scale=scale)
        return (r.loss + r.penalty) * scale

    r = model.loss_and_grads(x, y, state, masks=masks, scale=scale)
    analytic = {k: v.copy() for k, v in named_views(config, r.grads).items()}
    dstate = {f"state.l{k}.{j}": d.copy() for k, s in enumerate(r.dstate0) for j, d in enumerate(s)}
    H = config.hidden
    present, absent = np.unique(x), np.setdiff1d(np.arange(V), x)
    absent = absent if len(absent) else present

    errors = {}
    for name, array in model.named_arrays().items():
        if name.startswith("l0.W") and not config.tied:  # one-hot token rows W[H + token]
            idx = (
                entries(array.shape, rng, samples, np.arange(H))
                + entries(array.shape, rng, samples, H + present)
                + entries(array.shape, rng, max(1, samples // 3), H + absent)
            )
        elif name == "E":  # rows of tokens in the window (input and output side), others
            idx = entries(array.shape, rng, samples, present) + entries(
                array.shape, rng, max(1, samples // 3), absent
            )
        else:
            idx = entries(array.shape, rng, samples)
        errors[name] = max_relative_error(loss, array, analytic[name], idx)
    for k, s in enumerate(state):
        for j, arr in enumerate(s):
            name = f"state.l{k}.{j}"
            errors[name] = max_relative_error(
                loss, arr, dstate[name], entries(arr.shape, rng, samples)
            )
    return errors
