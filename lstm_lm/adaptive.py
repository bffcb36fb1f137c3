"""The adaptive softmax (Grave et al. 2017): an output layer whose cost per token hardly
grows with the vocabulary, as a forward/backward pair and the layer the model calls.

Dimensions: N positions, H hidden units, V vocabulary, C the first cutoff, K tail clusters,
d_i and V_i the projection and the size of tail i.

The words are ranked by training frequency (ties by id, so the ranks are deterministic:
`frequency_order`). The cutoffs C < c_1 < ... < c_{K-1} < V split the ranks into the head,
[0, C), and K tail clusters, [C, c_1), ..., [c_{K-1}, V). The head is a softmax over the
C frequent words and one logit per cluster; a word of cluster i has
    p(w | h) = p_head(cluster i | h) * p_i(w | h),   p_i = softmax((h P_i) W_i + b_i)
where P_i (H, d_i) projects to d_i = H / 4^(i+1) (at least 1), so a rare word costs a
fraction of a frequent one. Training computes a tail only for the positions whose target
falls in it; the full distribution (`log_probs`) computes them all and sums to 1.

Parameters (contract names; PyTorch's `nn.AdaptiveLogSoftmaxWithLoss` names beside, whose
weights are these transposed):
    head.W (H, C + K), head.b (C + K,)    head.weight, head.bias
    tail.{i}.P (H, d_i)                   tail.{i}.0.weight
    tail.{i}.W (d_i, V_i), tail.{i}.b     tail.{i}.1.weight, tail.{i}.1.bias
and, not trained, `order` (V,): the vocabulary ids by rank (PyTorch's targets are ranks).
The tail biases (PyTorch's tails have none) let new words join the last cluster with no
effect on the old ones (`--extend-vocab`).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from lstm_lm import LMError
from lstm_lm.config import ModelConfig, check_cutoffs, default_cutoffs
from lstm_lm.losses import softmax_cross_entropy_
from lstm_lm.softmax import Scratch, low_bias

DIV = 4  # tail i projects to H / DIV^(i + 1) dimensions (Grave et al.; PyTorch's div_value)
COUNT_CHUNK = 1 << 24  # ids counted at a time: bincount makes an int64 copy of what it counts


def tail_dims(hidden: int, clusters: int) -> list[int]:
    """d_i of each tail cluster: H / 4, then / 4 again, ..., at least 1."""
    return [max(1, hidden // DIV ** (i + 1)) for i in range(clusters)]


def frequency_order(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """The ids (V,) int64 from the most frequent in `ids` to the least, ties by id."""
    counts = np.zeros(vocab_size, np.int64)
    for s in range(0, len(ids), COUNT_CHUNK):
        counts += np.bincount(ids[s : s + COUNT_CHUNK], minlength=vocab_size)
    return np.argsort(-counts, kind="stable")


# --- the forward/backward pair ------------------------------------------------------------


class Tail(NamedTuple):
    rows: np.ndarray  # (n,) the positions whose target is in this cluster
    x: np.ndarray  # (n, H) their input
    z: np.ndarray  # (n, d_i) its projection
    dlogits: np.ndarray  # (n, V_i) dscale * d(NLL)/d(logits) (forward with dscale)


class AdaptiveCache(NamedTuple):
    top: np.ndarray  # (N, H)
    dhead: np.ndarray  # (N, C + K) dscale * d(NLL)/d(head logits)
    tails: list[Tail | None]  # per cluster; None where no target falls in it


def clusters_of(ranks: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ranks (N,) -> each one's cluster (0 the head, i + 1 tail i) and its class in the head
    (the word itself, or the logit of its cluster). bounds: (K + 1,) C, c_1, ..., V."""
    cluster = np.searchsorted(bounds, ranks, side="right")
    return cluster, np.where(cluster == 0, ranks, bounds[0] + cluster - 1)


def adaptive_forward(top, ranks, p, bounds, dscale=None, softmax=softmax_cross_entropy_,
                     scratch=None, serial=contextlib.nullcontext):  # fmt: skip
    """NLL of each target under the adaptive softmax.

    top: (N, H); ranks: (N,) the targets' frequency ranks; p: the parameters by contract name;
    bounds: (K + 1,) C, c_1, ..., c_{K-1}, V; softmax(logits, targets, dscale): the in-place
    softmax cross-entropy (losses.softmax_cross_entropy_); scratch: buffers (softmax.Scratch).
    serial(): the context the tails' products run in.
    Returns nll (N,) float64 and the cache, which with `dscale` holds what adaptive_backward
    needs for d(dscale * sum NLL).
    """
    scratch = scratch or Scratch()
    C, K = int(bounds[0]), len(bounds) - 1
    cluster, head_class = clusters_of(ranks, bounds)
    Wh = p["head.W"]
    head = np.matmul(top, Wh, out=scratch("head", len(top), C + K, Wh.dtype))  # (N, C + K)
    head += p["head.b"]
    nll = softmax(head, head_class, dscale)
    tails = []
    for i in range(K):
        rows = np.flatnonzero(cluster == i + 1)
        if not len(rows):
            tails.append(None)
            continue
        P, W = p[f"tail.{i}.P"], p[f"tail.{i}.W"]
        x = top[rows]  # (n, H)
        with serial():
            z = x @ P  # (n, d_i)
            logits = np.matmul(z, W, out=scratch(f"tail.{i}", len(rows), W.shape[1], W.dtype))
        logits += p[f"tail.{i}.b"]  # (n, V_i)
        nll[rows] += softmax(logits, ranks[rows] - bounds[i], dscale)
        tails.append(Tail(rows, x, z, logits))
    return nll, AdaptiveCache(top, head, tails)


def adaptive_backward(cache: AdaptiveCache, p, grads, serial=contextlib.nullcontext):
    """The gradients of a forward run with `dscale`: every parameter's into `grads` (same
    keys as p; a cluster no target fell in gets zeros), and d/d(top) (N, H) returned.
    `serial()`: the context the tails' products run in."""
    top, dhead = cache.top, cache.dhead
    np.matmul(top.T, dhead, out=grads["head.W"])
    np.sum(dhead, axis=0, out=grads["head.b"])
    dtop = dhead @ p["head.W"].T  # (N, H)
    for i, t in enumerate(cache.tails):
        gP, gW, gb = (grads[f"tail.{i}.{n}"] for n in "PWb")
        if t is None:
            gP[...], gW[...], gb[...] = 0, 0, 0
            continue
        P, W = p[f"tail.{i}.P"], p[f"tail.{i}.W"]
        np.sum(t.dlogits, axis=0, out=gb)
        with serial():
            np.matmul(t.z.T, t.dlogits, out=gW)
            dz = t.dlogits @ W.T  # (n, d_i)
            np.matmul(t.x.T, dz, out=gP)
            dtop[t.rows] += dz @ P.T
    return dtop


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(N, M) -> log softmax over each row, float64."""
    out = logits.astype(np.float64)
    out -= out.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def adaptive_log_probs(top: np.ndarray, p, bounds: np.ndarray) -> np.ndarray:
    """top (N, H) -> log p(w | h) (N, V) float64 of every word, by rank; each row sums to 1."""
    C, K = int(bounds[0]), len(bounds) - 1
    head = log_softmax(top @ p["head.W"] + p["head.b"])  # (N, C + K)
    out = np.empty((len(top), int(bounds[-1])))
    out[:, :C] = head[:, :C]
    for i in range(K):
        tail = log_softmax((top @ p[f"tail.{i}.P"]) @ p[f"tail.{i}.W"] + p[f"tail.{i}.b"])
        out[:, bounds[i] : bounds[i + 1]] = head[:, C + i, None] + tail
    return out


# --- the layer the model calls ------------------------------------------------------------


class AdaptiveSoftmax:
    """The adaptive softmax as the model's output layer (the methods of softmax.FullSoftmax).
    `order`: the vocabulary ids by training frequency (default: the ids' own order)."""

    extra_arrays = ("order",)  # what `arrays` gives the checkpoint

    def __init__(self, config: ModelConfig, threads, order: np.ndarray | None = None):
        V = config.vocab_size
        self.config, self.threads = config, threads
        self.bounds = np.array([*self.cutoffs(config), V])
        self.order = np.arange(V) if order is None else np.asarray(order, np.int64)
        if self.order.shape != (V,) or not np.array_equal(np.sort(self.order), np.arange(V)):
            raise LMError(f"the adaptive softmax's order is not an ordering of the {V:,} ids")
        self.rank = np.empty(V, np.int64)  # (V,) each id's rank
        self.rank[self.order] = np.arange(V)
        self._scratch = Scratch()

    @staticmethod
    def cutoffs(config: ModelConfig) -> tuple[int, ...]:
        cutoffs = config.cutoffs or default_cutoffs(config.vocab_size)
        check_cutoffs(cutoffs, config.vocab_size)
        return cutoffs

    @classmethod
    def shapes(cls, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Its parameters' contract names and shapes."""
        H, cut = config.hidden, [*cls.cutoffs(config), config.vocab_size]
        out = {"head.W": (H, cut[0] + len(cut) - 1), "head.b": (cut[0] + len(cut) - 1,)}
        for i, d in enumerate(tail_dims(H, len(cut) - 1)):
            n = cut[i + 1] - cut[i]
            out.update({f"tail.{i}.P": (H, d), f"tail.{i}.W": (d, n), f"tail.{i}.b": (n,)})
        return out

    @classmethod
    def init(cls, config: ModelConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        """Weights uniform in +-init_scale, biases zero."""
        s = config.init_scale
        return {k: (np.zeros(shape, dtype) if k.endswith(".b") else
                    rng.uniform(-s, s, shape).astype(dtype))
                for k, shape in cls.shapes(config).items()}  # fmt: skip

    @classmethod
    def memory(cls, config: ModelConfig, N: int) -> tuple[int, int]:
        """(parameters, elements of the largest per-window buffers) for N positions."""
        shapes = cls.shapes(config)
        tails = [s[1] for k, s in shapes.items() if k.endswith(".W") and k != "head.W"]
        return sum(int(np.prod(s)) for s in shapes.values()), N * (shapes["head.b"][0] + max(tails))

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays the checkpoint keeps beside the parameters: the ids by rank."""
        return {"order": self.order}

    def loss(self, p, grads, top, targets, dscale: float, phase) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward: top (N, H), targets (N,) ids -> NLL (N,) float64 and
        d(dscale * sum NLL)/d(top) (N, H); the parameters' gradients written into `grads`."""
        with phase("output GEMMs"):
            nll, cache = self._forward(p, top, targets, dscale)
            return nll, adaptive_backward(cache, p, grads, self.threads.serial)

    def _forward(self, p, top, targets, dscale):
        # The tails' products run on one BLAS thread: their shapes change with the window's
        # targets, so Threads.same_bits could not vouch for them, and a step must give the
        # same bits whether the machine is busy (one thread) or not.
        softmax, ranks = self.threads.softmax_cross_entropy_, self.rank[targets]
        return adaptive_forward(top, ranks, p, self.bounds, dscale, softmax, self._scratch,
                                self.threads.serial)  # fmt: skip

    def nll(self, p, top: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """NLL (N,) float64 of each target given top (N, H)."""
        return self._forward(p, top, targets, None)[0]

    def logits(self, p, top: np.ndarray) -> np.ndarray:
        """top (N, H) -> log-probabilities (N, V) float64 by id: a distribution's logits."""
        return adaptive_log_probs(top, p, self.bounds)[:, self.rank]

    def flops(self, targets: np.ndarray) -> int:
        """Multiply-adds x 2 of a training step's output products over these targets."""
        H, C = self.config.hidden, int(self.bounds[0])
        cluster, _ = clusters_of(self.rank[targets], self.bounds)
        total = len(targets) * H * (C + len(self.bounds) - 1)
        for i, d in enumerate(tail_dims(H, len(self.bounds) - 1)):
            total += (
                np.count_nonzero(cluster == i + 1) * d * (H + self.bounds[i + 1] - self.bounds[i])
            )
        return 3 * 2 * int(total)

    def extended(self, p, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Parameters and order for n more words (ids V .. V + n - 1), which join the last
        cluster: zero columns with a bias so low that the old words' log-probabilities stay
        what they were (to the dtype's rounding) until training moves them."""
        V, k = self.config.vocab_size, len(self.bounds) - 2  # the last cluster
        P, W, b = p[f"tail.{k}.P"], p[f"tail.{k}.W"], p[f"tail.{k}.b"]
        bias = low_bias(P @ W, b, n, W.dtype)
        new = {
            f"tail.{k}.W": np.concatenate([W, np.zeros((W.shape[0], n), W.dtype)], axis=1),
            f"tail.{k}.b": np.concatenate([b, np.full(n, bias, b.dtype)]),
        }
        return new, np.concatenate([self.order, np.arange(V, V + n)])
