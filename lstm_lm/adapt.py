"""Evaluation that adapts to the text being scored: a neural cache (`neural_cache`), dynamic
evaluation (`dynamic`), or both, as scorers for `evaluation.evaluate`; the gradient statistics
dynamic evaluation reads, cached beside the checkpoint; and the grids that tune their
settings on a validation text.

Neither changes the checkpoint: dynamic evaluation adapts the loaded parameters in memory
and puts the trained ones back when it is done.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstm_lm import LMError
from lstm_lm.atomic import write_atomic
from lstm_lm.dynamic import DynamicEvaluation, gradient_rms
from lstm_lm.evaluation import evaluate
from lstm_lm.model import LanguageModel
from lstm_lm.neural_cache import NeuralCache

# Defaults: Grave et al.'s and Merity et al.'s cache over 2,000 pairs; Krause et al.'s
# segments of 5 tokens. theta, lambda, lr and decay are the model's to tune (--tune).
CACHE_SIZE, CACHE_THETA, CACHE_LAMBDA = 2000, 0.3, 0.1
DYNAMIC_BPTT, DYNAMIC_LR, DYNAMIC_DECAY = 5, 1e-4, 1e-3
STATS_STREAMS = 100  # streams of training text for the gradient statistics (Krause et al.)
STATS_TOKENS = 2_000_000  # ... and at most this many of its targets
# --tune's grids, around the defaults
CACHE_GRID = {
    "theta": (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0),
    "lambda": (0.05, 0.1, 0.15, 0.2, 0.3),
}
DYNAMIC_GRID = {"lr": (3e-5, 1e-4, 3e-4), "decay": (0.0, 1e-3, 1e-2)}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Cache:
    size: int = CACHE_SIZE
    theta: float = CACHE_THETA
    lam: float = CACHE_LAMBDA

    def json(self) -> dict:
        return {"size": self.size, "theta": self.theta, "lambda": self.lam}


@dataclass(frozen=True)
class Dynamic:
    lr: float = DYNAMIC_LR
    decay: float = DYNAMIC_DECAY
    bptt: int = DYNAMIC_BPTT

    def json(self) -> dict:
        return {"lr": self.lr, "decay": self.decay, "bptt": self.bptt}


def evaluate_adapted(model: LanguageModel, ids: np.ndarray, batch_size: int,
                     cache: Cache | None = None, dynamic: Dynamic | None = None,
                     rms: dict[str, np.ndarray] | None = None, group=None,
                     progress: Progress | None = None) -> tuple[float, int]:  # fmt: skip
    """Summed NLL and targets of `ids` (as evaluation.evaluate) with a cache, dynamic evaluation
    (one stream, in segments of dynamic.bptt; `rms` its gradient statistics, None for plain
    SGD steps), both or neither. The model's parameters are what they were afterwards."""
    if dynamic is not None and batch_size != 1:
        raise LMError(
            "dynamic evaluation adapts one set of weights to the text in order; it scores one "
            "stream (--batch-size 1)"
        )
    kept = None
    if cache is not None:
        B = len(range(batch_size)[group.share(batch_size)]) if group else batch_size
        kept = NeuralCache(B, cache.size, model.config.hidden, cache.theta, cache.lam, model.dtype)
    if dynamic is None:
        scorer = None if kept is None else cached_scorer(model, kept)
        return evaluate(model, ids, batch_size, group=group, scorer=scorer, progress=progress)
    adapting = DynamicEvaluation(model, dynamic.lr, dynamic.decay, rms, kept)
    try:
        return evaluate(model, ids, 1, bptt=dynamic.bptt, scorer=adapting, progress=progress)
    finally:
        adapting.restore()


def document_nll(model: LanguageModel, ids: np.ndarray, cache: Cache | None = None,
                 dynamic: Dynamic | None = None,
                 rms: dict[str, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """NLL of each target of `ids` (len(ids) - 1,) read as one document, in one stream, with
    a cache, dynamic evaluation, both or neither (the parameters come back afterwards)."""
    kept = None if cache is None else NeuralCache(1, cache.size, model.config.hidden,
                                                  cache.theta, cache.lam, model.dtype)  # fmt: skip
    if dynamic is None:
        scorer, bptt = (cached_scorer(model, kept) if kept else plain_scorer(model)), 512
    else:
        scorer, bptt = DynamicEvaluation(model, dynamic.lr, dynamic.decay, rms, kept), dynamic.bptt
    x, y, state, out = ids[None, :-1], ids[None, 1:], model.init_state(1), []
    try:
        for s in range(0, x.shape[1], bptt):
            nll, state = scorer(x[:, s : s + bptt], y[:, s : s + bptt], state, slice(0, 1))
            out.append(nll[0])
    finally:
        if dynamic is not None:
            scorer.restore()
    return np.concatenate(out) if out else np.zeros(0)


def plain_scorer(model: LanguageModel):
    """A evaluation.evaluate scorer: the model's NLL of each target."""
    return lambda x, y, state, rows: model.token_nll(x, y, state)


def cached_scorer(model: LanguageModel, cache: NeuralCache):
    """A evaluation.evaluate scorer: the model's NLL mixed with the cache's."""

    def score(x, y, state, rows):
        nll, top, final = model.token_nll_and_top(x, y, state)
        return cache.nll(top, y, nll, rows), final

    return score


# --- the gradient statistics of dynamic evaluation, cached beside the checkpoint ----------


def rms_path(ckpt: Path, bptt: int) -> Path:
    """Where the statistics of checkpoint `ckpt` for segments of `bptt` are kept."""
    return ckpt.with_name(f"{ckpt.stem}.dynamic-rms-{bptt}.npz")


def rms_key(ckpt: Path, bptt: int, tokens: int) -> dict:
    """What the statistics were computed from: the checkpoint file as it is, the segments."""
    st = ckpt.stat()
    return {"checkpoint": ckpt.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "bptt": bptt, "streams": STATS_STREAMS, "tokens": tokens}  # fmt: skip


def load_or_compute_rms(model: LanguageModel, ckpt: Path, train: np.ndarray, bptt: int,
                        log: Callable[[str], None],
                        progress: Progress | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """The gradient RMS of the model on its training text: from the file beside the
    checkpoint where it matches, else computed (a pass over up to STATS_TOKENS of `train`)
    and saved there (where the directory is writable; nothing else is touched)."""
    tokens = min(len(train) - 1, STATS_TOKENS)
    path, key = rms_path(ckpt, bptt), rms_key(ckpt, bptt, tokens)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if json.loads(str(z["meta"])) == key:
                    return {k: z[k] for k in model.params}
        except (OSError, ValueError, KeyError):
            pass  # unreadable or another model's: computed again
    log(f"gradient statistics for dynamic evaluation: a pass over {tokens:,} training tokens "
        f"(kept in {path})")  # fmt: skip
    rms = gradient_rms(model, train, STATS_STREAMS, bptt, STATS_TOKENS, progress)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(key)), **rms)
    if os.access(path.parent, os.W_OK):
        write_atomic(path, buf.getvalue(), fix="free some space")
    return rms


# --- tuning on a validation text ---------------------------------------------------------


def tune_cache(
    model: LanguageModel,
    ids: np.ndarray,
    batch_size: int,
    size: int,
    grid: dict = CACHE_GRID,
    progress: Progress | None = None,
) -> list[dict]:
    """Perplexity of every (theta, lambda) of the grid with a cache of `size`: the model
    runs once (its NLL and top states kept), the cache over them for each setting."""
    windows = []

    def keep(x, y, state, rows):
        nll, top, final = model.token_nll_and_top(x, y, state)
        windows.append((top, y, nll, rows))
        return nll, final

    base, n = evaluate(model, ids, batch_size, scorer=keep)
    rows = [{"theta": None, "lambda": 0.0, "ppl": float(np.exp(base / n))}]
    settings = list(itertools.product(grid["theta"], grid["lambda"]))
    for i, (theta, lam) in enumerate(settings):
        cache = NeuralCache(batch_size, size, model.config.hidden, theta, lam, model.dtype)
        nll = sum(float(cache.nll(*w[:3], w[3]).sum()) for w in windows)
        rows.append({"theta": theta, "lambda": lam, "ppl": float(np.exp(nll / n))})
        if progress:
            progress(i + 1, len(settings))
    return rows


def tune_dynamic(model: LanguageModel, ids: np.ndarray, rms, bptt: int,
                 cache: Cache | None = None, grid: dict = DYNAMIC_GRID,
                 progress: Progress | None = None) -> list[dict]:  # fmt: skip
    """Perplexity of every (lr, decay) of the grid, a dynamic evaluation each, after the
    static model's (lr 0) over the same stream."""
    nll, n = evaluate_adapted(model, ids, 1, cache)
    rows = [{"lr": 0.0, "decay": 0.0, "ppl": float(np.exp(nll / n))}]
    settings = list(itertools.product(grid["lr"], grid["decay"]))
    for i, (lr, decay) in enumerate(settings):
        nll, n = evaluate_adapted(model, ids, 1, cache, Dynamic(lr, decay, bptt), rms)
        rows.append({"lr": lr, "decay": decay, "ppl": float(np.exp(nll / n))})
        if progress:
            progress(i + 1, len(settings))
    return rows
