"""The full softmax output layer: logits over the whole vocabulary, its loss and gradients.

Dimensions: N target positions (B x T), H hidden units, V vocabulary.
    Wy (H, V), by (V,)    logits = top Wy + by
A step costs O(N H V) in each of its three products (logits, dWy, dtop); `adaptive` is the
output layer whose cost does not grow with V. Both offer the model the same methods
(`loss`, `nll`, `logits`, ...), so the model chooses one and never branches on it.
"""

from __future__ import annotations

import math

import numpy as np

from lstm_lm.config import ModelConfig

# The gradient into the top layer, dlogits Wy^T, sums over the whole vocabulary. OpenBLAS
# 0.3.31 cuts a sum of 10,000 terms differently on one thread and on two, so a training step
# could not go to one thread on a busy machine (Threads.training_step) and keep its bits;
# as a sum of products over 1,920 words at a time, which it cuts the same way on both (as it
# does 640 and 960, not 1,280 or 2,560), it can; the step is checked on every build before it
# goes to one thread. Costs 0.3 ms of a 38 ms step of small (0.6 ms with 640).
VOCAB_CHUNK = 1920


def dtop(dlogits: np.ndarray, Wy: np.ndarray) -> np.ndarray:
    """dlogits (N, V) @ Wy.T (V, H) -> (N, H), summed VOCAB_CHUNK words at a time."""
    out, part = (np.empty((dlogits.shape[0], Wy.shape[0]), Wy.dtype) for _ in range(2))
    np.matmul(dlogits[:, :VOCAB_CHUNK], Wy[:, :VOCAB_CHUNK].T, out=out)
    for s in range(VOCAB_CHUNK, Wy.shape[1], VOCAB_CHUNK):
        out += np.matmul(dlogits[:, s : s + VOCAB_CHUNK], Wy[:, s : s + VOCAB_CHUNK].T, out=part)
    return out


class Scratch:
    """Buffers that only grow, handed out as their first rows: a fresh (N, V) array costs
    page faults on every window whose N differs."""

    def __init__(self):
        self._bufs: dict[str, np.ndarray] = {}

    def __call__(self, name: str, rows: int, cols: int, dtype) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty((max(rows, 1), cols), dtype)
        return buf[:rows]


def low_bias(W: np.ndarray, b: np.ndarray, n: int, dtype) -> float:
    """A bias for n new output columns (zero weights) beside the columns of W (D, V_old), b,
    low enough that the old columns' log-probabilities move less than the dtype's rounding,
    for any input z = h P with |h_i| <= 1 (W here is P W: the weights from h)."""
    # For any such h, logsumexp of the old logits >= their mean + ln V (Jensen)
    # >= mean(b) - |mean_j W_j|_1 + ln V. New logits at that bound less ln(n / eps) + 2 take
    # a share below eps / e^2 of the probability: old log-probabilities move less than that.
    lse = float(b.mean() - np.abs(W.mean(axis=1)).sum() + math.log(W.shape[1]))
    return lse - math.log(n / np.finfo(dtype).eps) - 2


class FullSoftmax:
    """logits = top Wy + by: every position's logits over all V words. `tied.TiedSoftmax` is
    the same layer over the token embedding, Wy = E.T."""

    extra_arrays: tuple[str, ...] = ()  # what `arrays` gives the checkpoint

    def __init__(self, config: ModelConfig, threads, order: np.ndarray | None = None):
        self.config, self.threads = config, threads
        self._scratch = Scratch()

    @staticmethod
    def shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Its parameters' contract names and shapes."""
        return {"Wy": (config.hidden, config.vocab_size), "by": (config.vocab_size,)}

    @staticmethod
    def init(config: ModelConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        s, (H, V) = config.init_scale, (config.hidden, config.vocab_size)
        return {"Wy": rng.uniform(-s, s, (H, V)).astype(dtype), "by": np.zeros(V, dtype)}

    @staticmethod
    def memory(config: ModelConfig, N: int) -> tuple[int, int]:
        """(parameters, elements of the largest per-window buffer) for N positions."""
        return (config.hidden + 1) * config.vocab_size, N * config.vocab_size

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays the checkpoint keeps beside the parameters: none."""
        return {}

    @staticmethod
    def weight(p: dict[str, np.ndarray]) -> np.ndarray:
        """The output weight (H, V): Wy (a view of another array where it is shared)."""
        return p["Wy"]

    @staticmethod
    def weight_grad_(grads: dict[str, np.ndarray], top: np.ndarray, dlogits: np.ndarray) -> None:
        """Write the output weight's gradient, top.T (H, N) @ dlogits (N, V), into grads."""
        np.matmul(top.T, dlogits, out=grads["Wy"])

    def _logits(self, p: dict[str, np.ndarray], top: np.ndarray) -> np.ndarray:
        """top (N, H) -> top Wy + by (N, V), in a scratch buffer."""
        Wy = self.weight(p)
        logits = np.matmul(top, Wy, out=self._scratch("logits", len(top), Wy.shape[1], Wy.dtype))
        logits += p["by"]
        return logits

    def loss(self, p, grads, top, targets, dscale: float, phase) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward: top (N, H), targets (N,) -> NLL (N,) float64 and
        d(dscale * sum NLL)/d(top) (N, H); the gradients of Wy, by written into `grads`."""
        with phase("output GEMMs"):
            logits = self._logits(p, top)  # (N, V)
        with phase("softmax"):
            nll = self.threads.softmax_cross_entropy_(logits, targets, dscale)
            dlogits = logits
            np.sum(dlogits, axis=0, out=grads["by"])
        with phase("output GEMMs"):
            self.weight_grad_(grads, top, dlogits)
            return nll, dtop(dlogits, self.weight(p))

    def nll(self, p, top: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """NLL (N,) float64 of each target given top (N, H)."""
        return self.threads.softmax_cross_entropy_(self._logits(p, top), targets, None)

    def logits(self, p, top: np.ndarray) -> np.ndarray:
        """top (N, H) -> logits (N, V) float64: the distribution is their softmax."""
        return self._logits(p, top).astype(np.float64)

    def flops(self, targets: np.ndarray) -> int:
        """Multiply-adds x 2 of a training step's output products over these targets."""
        return 3 * 2 * len(targets) * self.config.hidden * self.config.vocab_size

    def extended(self, p, n: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Parameters for n more words (ids V .. V + n - 1): zero columns, a bias so low that
        the old words' log-probabilities stay what they were (to the dtype's rounding) until
        training moves them."""
        Wy, by = p["Wy"], p["by"]
        bias = low_bias(Wy, by, n, Wy.dtype)
        return {
            "Wy": np.concatenate([Wy, np.zeros((Wy.shape[0], n), Wy.dtype)], axis=1),
            "by": np.concatenate([by, np.full(n, bias, by.dtype)]),
        }, None
