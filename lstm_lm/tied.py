"""Tied input and output embeddings (Inan et al. 2017; Press & Wolf 2017): one matrix E is
both the token's input to layer 0 and the output layer's weight.

Dimensions: T steps, B streams, N = T * B positions, H hidden units, V vocabulary.
    E (V, H), by (V,)
    input:   e_t = E[x_t]  (the one-hot row times E)          (T, B, H), layer 0's x
    output:  logits = top E^T + by                             (N, V)
so dE = (the scatter-add of de over the window's tokens) + dlogits^T top: the input side
touches the window's rows, the output side every row. Layer 0's input weights act on e_t,
(2H, G) rows [h; e], as the layers above act on the layer below. Input dropout masks the
entries of e_t and word dropout whole rows of E for a window, as they mask the one-hot
model's token rows of W.
"""

from __future__ import annotations

import numpy as np

from lstm_lm.cells import embed_backward
from lstm_lm.config import ModelConfig
from lstm_lm.softmax import FullSoftmax, low_bias


def embedding_forward(E: np.ndarray, tokens: np.ndarray, mask: np.ndarray | None):
    """tokens (T, B) ids; E (V, H); mask (T or 1, B, H or 1) or None.
    Returns e = E[tokens] * mask (T, B, H) and the cache."""
    e = E[tokens]
    if mask is not None:
        e *= mask
    return e, (tokens, mask)


def embedding_backward(de: np.ndarray, cache) -> tuple[np.ndarray, np.ndarray]:
    """de (T, B, H) -> the rows of E the window used, rows (U,) sorted, and their gradient
    (U, H); every other row's input-side gradient is zero."""
    tokens, mask = cache
    return embed_backward(de if mask is None else de * mask, tokens)


class TiedSoftmax(FullSoftmax):
    """The full softmax over the token embedding: logits = top E^T + by."""

    @staticmethod
    def shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
        return {"E": (config.vocab_size, config.hidden), "by": (config.vocab_size,)}

    @staticmethod
    def init(config: ModelConfig, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        s, (V, H) = config.init_scale, (config.vocab_size, config.hidden)
        return {"E": rng.uniform(-s, s, (V, H)).astype(dtype), "by": np.zeros(V, dtype)}

    @staticmethod
    def weight(p: dict[str, np.ndarray]) -> np.ndarray:
        return p["E"].T  # (H, V), a view

    @staticmethod
    def weight_grad_(grads: dict[str, np.ndarray], top: np.ndarray, dlogits: np.ndarray) -> None:
        """The output side of dE, dlogits.T (V, N) @ top (N, H): written, so the model adds
        the input side's rows after it."""
        np.matmul(dlogits.T, top, out=grads["E"])

    def extended(self, p, n: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """n more words: zero rows of E (no input and no output weight yet) and a bias so
        low that the old words' log-probabilities stay what they were."""
        E, by = p["E"], p["by"]
        bias = low_bias(E.T, by, n, E.dtype)
        return {
            "E": np.concatenate([E, np.zeros((n, E.shape[1]), E.dtype)]),
            "by": np.concatenate([by, np.full(n, bias, by.dtype)]),
        }, None
