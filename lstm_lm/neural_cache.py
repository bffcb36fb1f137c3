"""The continuous cache (Grave et al. 2017, "Improving neural language models with a
continuous cache"): the model's distribution mixed with one over the words that followed
the past hidden states most like the present one.

Dimensions: B streams, T steps of a window, H the top layer's units, N the cache size.

For the text scored so far in a stream, the cache holds the last N pairs (h_i, y_i): the top
layer's output at position i and the token that followed it (i's target). At position t,
with the pairs before t (at most N of them),
    p_cache(w) = sum_{i: y_i = w} exp(theta h_t . h_i) / sum_i exp(theta h_t . h_i)
    p(w)       = (1 - lambda) p_model(w) + lambda p_cache(w)
and where the cache is still empty (a stream's first position), p = p_model. Only past
tokens enter: a position sees the pairs of earlier windows (kept in a ring buffer per
stream) and the earlier positions of its own window. Each stream has its own cache; an
evaluation whose B streams cut one text into B pieces gives each piece a cache of its own
(batch 1 is the published convention). Nothing is learned, so there is no backward pass:
perplexity needs p(y_t) alone, the cache's share of the target, never the (V,) distribution.
"""

from __future__ import annotations

import numpy as np


class NeuralCache:
    """Per-stream caches of the last `size` (h, next token) pairs, and the mixture."""

    def __init__(self, streams: int, size: int, hidden: int, theta: float, lam: float,
                 dtype=np.float32):  # fmt: skip
        if size < 1:
            raise ValueError("the cache holds at least one pair")
        self.size, self.theta, self.lam = size, theta, lam
        self.keys = np.zeros((streams, size, hidden), dtype)  # h_i, slot i % size
        self.next = np.zeros((streams, size), np.int64)  # y_i
        self.seen = np.zeros(streams, np.int64)  # pairs each stream has stored so far

    def nll(self, top: np.ndarray, targets: np.ndarray, nll: np.ndarray,
            rows: slice | None = None) -> np.ndarray:  # fmt: skip
        """Mix one window in, then store its pairs.

        top: (B, T, H) the top layer's output at each position; targets: (B, T) ids; nll:
        (B, T) the model's NLL of each target (nats); rows: which streams of the cache these
        B are, a slice (default: all, in order). Returns the mixture's NLL (B, T) float64."""
        rows = slice(0, len(self.seen)) if rows is None else rows
        B, T, _ = top.shape
        N, seen = self.size, self.seen[rows]  # (B,)
        # pairs before position t: slots of the ring (index j_s < seen) and window positions
        # s < t, each only if at most N positions back
        t = np.arange(T)
        slot = np.arange(N)
        j = seen[:, None] - 1 - (seen[:, None] - 1 - slot) % N  # (B, N) index held by slot
        oldest = seen[:, None] + t - N  # (B, T): first index still in the cache at t
        ring_ok = (j[:, None, :] >= oldest[:, :, None]) & (j[:, None, :] >= 0)  # (B, T, N)
        win_ok = (t[None, :] < t[:, None]) & (t[:, None] - t[None, :] <= N)  # (T, T): s < t
        keys = self.keys[rows]  # (B, N, H), a view
        ring = np.matmul(top, keys.transpose(0, 2, 1)).astype(np.float64)  # (B, T, N)
        win = np.matmul(top, top.transpose(0, 2, 1)).astype(np.float64)  # (B, T, T)
        ring *= self.theta
        win *= self.theta
        ring[~ring_ok] = -np.inf
        win[:, ~win_ok] = -np.inf
        top_score = np.maximum(ring.max(axis=2), win.max(axis=2))  # (B, T)
        empty = np.isneginf(top_score)
        top_score[empty] = 0.0
        ring = np.exp(ring - top_score[:, :, None])
        win = np.exp(win - top_score[:, :, None])
        y = targets[:, :, None]
        hits = (ring * (self.next[rows][:, None, :] == y)).sum(2)
        hits += (win * (targets[:, None, :] == y)).sum(2)
        total = ring.sum(2) + win.sum(2)
        p_cache = np.divide(hits, total, out=np.zeros_like(hits), where=~empty)
        p = (1 - self.lam) * np.exp(-nll) + self.lam * p_cache
        p[empty] = np.exp(-nll[empty])
        self._store(top, targets, rows)
        with np.errstate(divide="ignore"):  # p = 0 only where the model gave 0 and lambda 0
            return -np.log(p)

    def _store(self, top: np.ndarray, targets: np.ndarray, rows: slice) -> None:
        """The window's pairs into each stream's ring (the last `size` of them)."""
        T, N = top.shape[1], self.size
        keep = np.arange(max(0, T - N), T)
        for b, r in enumerate(range(len(self.seen))[rows]):  # the slots differ by stream
            at = (self.seen[r] + keep) % N
            self.keys[r, at] = top[b, keep]
            self.next[r, at] = targets[b, keep]
            self.seen[r] += T
