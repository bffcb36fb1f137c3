"""Dynamic evaluation (Krause et al. 2018, "Dynamic evaluation of neural sequence models"):
the weights adapt to the text as it is scored.

The text is read in order, one stream, in segments of a few tokens (`bptt`, 5 by default):
each segment is scored with the present weights, then the weights take one step on that
segment's mean NLL g, Krause's RMS-normalised rule with decay towards the trained weights
theta_0:
    theta <- theta - lr g / (rms + eps) + rate (theta_0 - theta)
where rms is the root mean square of each weight's gradient over segments of training text
(`gradient_rms`, a pass the CLI caches beside the checkpoint) and rate = decay rms / mean(rms),
at most 1, so that the weights that move most in training are pulled back hardest. Without
those statistics (no training text at hand) every weight gets rms = 1 - eps: plain SGD steps
of size lr with a uniform decay. A token scored is never one the weights have adapted to:
a segment's update comes after its score, and one stream keeps the text in order (streams
side by side would adapt the weights to later text before earlier text is scored).

The one-hot token rows of layer 0 (an untied model's `l0.W` beyond its first H rows) are
read and moved a few at a time; their decay is applied lazily: a row left alone for k
segments has decayed by (1 - rate)^k, applied just before the row is next read.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lstm_lm.dropout import Masks
from lstm_lm.model import LanguageModel, State
from lstm_lm.neural_cache import NeuralCache

EPS = 1e-3  # Krause et al.'s epsilon, here beside a gradient RMS (theirs: its sum's root)
BLOCK = 1 << 16  # weights a dense step takes through its passes at a time (256 KiB of each)


def gradient_rms(model: LanguageModel, ids: np.ndarray, batch_size: int = 100, bptt: int = 5,
                 max_tokens: int = 2_000_000, progress=None) -> dict[str, np.ndarray]:  # fmt: skip
    """Root mean square of each weight's gradient of a segment's mean NLL (no dropout, no
    AR/TAR), over segments of `bptt` tokens of `ids` in `batch_size` streams, the state
    carried, up to `max_tokens` targets. `progress(done, total)` after each segment."""
    from lstm_lm.data import batchify, num_windows, window

    plain = _plain(model)
    data = batchify(ids[: max_tokens + 1], min(batch_size, max(1, (len(ids) - 1) // bptt)))
    windows = num_windows(data, bptt)
    squares = {k: np.zeros(p.shape, np.float64) for k, p in model.params.items()}
    state, masks = plain.init_state(len(data)), Masks.none(model.config.layers)
    for i in range(windows):
        x, y = window(data, i, bptt)
        r = plain.loss_and_grads(x, y, state, masks=masks)
        for k, g in r.grads.items():
            rows = r.rows.get(k)
            if rows is None:
                squares[k] += np.square(g, dtype=np.float64)
            else:
                squares[k][rows] += np.square(g[rows], dtype=np.float64)
        state = r.state
        if progress:
            progress(i + 1, windows)
    return {k: np.sqrt(s / max(windows, 1)).astype(model.dtype) for k, s in squares.items()}


def _plain(model: LanguageModel) -> LanguageModel:
    """The model over the same parameter arrays, without AR/TAR: what evaluation scores."""
    config = dataclasses.replace(model.config, ar=0.0, tar=0.0)
    return LanguageModel(config, model.params, model.threads, model.output.arrays().get("order"))


class DynamicEvaluation:
    """A scorer for `evaluation.evaluate` that adapts the model's parameters in place (callers keep
    or restore a copy: `restore`); optionally mixing a neural cache into the scores."""

    def __init__(
        self,
        model: LanguageModel,
        lr: float,
        decay: float,
        rms: dict[str, np.ndarray] | None = None,
        cache: NeuralCache | None = None,
    ):
        self.model, self.plain, self.cache = model, _plain(model), cache
        self.lr, self.decay = lr, decay
        self.theta0 = {k: p.copy() for k, p in model.params.items()}
        if rms is None:  # plain SGD: step lr, decay uniform
            rms = {k: np.full(p.shape, 1 - EPS, p.dtype) for k, p in model.params.items()}
        mean = sum(float(a.sum(dtype=np.float64)) for a in rms.values()) / sum(
            a.size for a in rms.values()
        )
        dt = model.dtype.type
        self.step = {k: (dt(lr) / (a + dt(EPS))).astype(model.dtype) for k, a in rms.items()}
        self.rate = {k: np.minimum(dt(decay / max(mean, 1e-30)) * a, dt(1)).astype(model.dtype)
                     for k, a in rms.items()}  # fmt: skip
        # p <- p keep + pull - step g, keep = 1 - rate, pull = rate theta_0: four passes over
        # the weights a segment and no allocation (a 2 x 650 model's 13 M weights, several
        # times a segment's forward and backward)
        self.keep = {k: 1 - r for k, r in self.rate.items()}
        self.pull = {k: r * self.theta0[k] for k, r in self.rate.items()}
        largest = max(model.params.values(), key=lambda p: p.size)
        self._scratch = np.empty(largest.size, largest.dtype)
        self.t = 0  # segments adapted to
        self.since = {k: np.zeros(len(self.theta0[k]), np.int64) for k in model.rows_read(
            np.zeros((1, 1), np.int64))}  # fmt: skip
        self.masks = Masks.none(model.config.layers)

    def restore(self) -> None:
        """The trained parameters back, for another pass."""
        for k, p in self.model.params.items():
            p[...] = self.theta0[k]
        self.t = 0
        for s in self.since.values():
            s[...] = 0

    def __call__(self, x: np.ndarray, y: np.ndarray, state: State, rows: slice):
        """Score the segment x, y (B, T) with the present weights, then adapt them to it:
        (NLL of each target (B, T), final state)."""
        for k, r in self.model.rows_read(x).items():
            self._catch_up(k, r)
        with self.model.threads.evaluation():
            res = self.plain.loss_and_grads(x, y, state, masks=self.masks)
        nll = res.nll.reshape(x.shape[1], x.shape[0]).T  # (B, T)
        if self.cache is not None:
            nll = self.cache.nll(res.top.transpose(1, 0, 2), y, nll, rows)
        if self.lr > 0:  # with lr 0 the weights stay the trained ones, decay or not
            self._update(res.grads, res.rows)
        return nll, [tuple(s.copy() for s in layer) for layer in res.state]

    def _catch_up(self, k: str, r: np.ndarray) -> None:
        """Rows r of key k brought up to the present: the decays they missed."""
        missed = self.t - self.since[k][r]
        if missed.any():
            p, p0, rate = self.model.params[k], self.theta0[k], self.rate[k][r]
            keep = np.power(1 - rate, missed[:, None].astype(rate.dtype))
            p[r] = p0[r] + (p[r] - p0[r]) * keep
        self.since[k][r] = self.t

    def _dense_step(self, k: str, g: np.ndarray):
        """The step of key k over a piece of its flattened weights: p <- p keep + pull - step g
        (memory-bound passes, so the pieces go to both cores)."""
        p, u = self.model.params[k].reshape(-1), self._scratch[: g.size]
        g, step, keep, pull = g.reshape(-1), self.step[k].reshape(-1), *(
            a[k].reshape(-1) for a in (self.keep, self.pull))  # fmt: skip

        def work(piece: slice) -> None:
            for a in range(piece.start, piece.stop, BLOCK):  # each block's passes in cache
                s = slice(a, min(a + BLOCK, piece.stop))
                np.multiply(step[s], g[s], out=u[s])
                if self.decay > 0:
                    p[s] *= keep[s]
                    p[s] += pull[s]
                p[s] -= u[s]

        return work

    def _update(self, grads: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> None:
        """One step: p += rate (p0 - p) - step g, on the rows a sparse key's window touched."""
        for k, p in self.model.params.items():
            g, r = grads[k], rows.get(k)
            if r is None:
                self.model.threads.in_pieces(self._dense_step(k, g), p.size)
            else:
                P = p[r]
                P += self.rate[k][r] * (self.theta0[k][r] - P) - self.step[k][r] * g[r]
                p[r] = P
                self.since[k][r] = self.t + 1
        self.t += 1
