"""Dropout masks for one training window, and DropConnect on the recurrent weights as a
forward/backward pair.

Dimensions: T steps, B streams, H hidden units, G = gates * H, V vocabulary, L layers.

Every mask is inverted (kept entries scaled by 1 / (1 - p)), so evaluation needs none:
- `dropout`: the input of every layer above the first and of the softmax (Zaremba et al.
  2014), (T, B, H) each;
- `input_dropout`: the token's rows W[H + token] of layer 0, what an embedding would feed the
  gates (the one-hot input itself has nothing to drop), (T, B, G); with --tied, the token's
  embedding E[token], (T, B, H);
- `variational`: both of those drawn once per window and stream, (1, B, ...), and shared by
  its T steps (Gal & Ghahramani 2016, "locked dropout");
- `word_dropout`: a token type dropped for the whole window, (V,): all its occurrences lose
  their token rows' input (Gal & Ghahramani's embedding dropout, on the one-hot rows);
- `weight_drop`: DropConnect on the recurrent rows W[:H] of every layer, (H, G), one mask per
  window (Merity et al. 2017): the only one that changes what the time loop multiplies by.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Masks(NamedTuple):
    tokens: np.ndarray | None  # (T or 1, B, G or H if tied): layer 0's token input (input dropout)
    layers: list  # L masks (T or 1, B, H) or None: the input of layers 1 .. L-1, then the softmax
    words: np.ndarray | None  # (V,): per token type (word dropout)
    recurrent: list  # L masks (H, G) or None: each layer's W[:H] (weight drop)

    @classmethod
    def none(cls, layers: int) -> Masks:
        return cls(None, [None] * layers, None, [None] * layers)

    def streams(self, block: slice) -> Masks:
        """The masks of some of the B streams (a rank's block): the per-type and per-weight
        masks are the whole batch's."""
        cut = lambda m: None if m is None else m[:, block]  # noqa: E731
        return self._replace(tokens=cut(self.tokens), layers=[cut(m) for m in self.layers])

    def token_rows(self, tokens: np.ndarray) -> np.ndarray | None:
        """What multiplies the token rows' input at each position of tokens (T, B): the input
        dropout mask and the word dropout of each position's type, (T or 1, B, G or 1)."""
        if self.words is None:
            return self.tokens
        words = self.words[tokens][..., None]  # (T, B, 1)
        return words if self.tokens is None else words * self.tokens


def drawn(config, T: int, B: int, rng: np.random.Generator, dtype) -> Masks:
    """The masks of one (B, T) window for the model config's probabilities (Masks.none's
    entries where they are 0). The draws come in a fixed order, the options added later
    last, so a configuration without them draws what it always drew."""
    dtype = np.dtype(dtype)
    H, L, V = config.hidden, config.layers, config.vocab_size
    G = config.gate_columns
    steps = 1 if config.variational else T

    def mask(p, shape):
        keep = dtype.type(1 / (1 - p))
        return (rng.random(shape, dtype=dtype) >= p) * keep if p > 0 else None

    tokens = mask(config.input_dropout, (steps, B, config.token_columns))
    layers = [mask(config.dropout, (steps, B, H)) for _ in range(L)]
    words = mask(config.word_dropout, (V,))
    recurrent = [mask(config.weight_drop, (H, G)) for _ in range(L)]
    return Masks(tokens, layers, words, recurrent)


def any_drawn(config) -> bool:
    """Whether a training window of this model config needs masks (and so random numbers)."""
    return any(p > 0 for p in (config.dropout, config.input_dropout, config.word_dropout,
                               config.weight_drop))  # fmt: skip


def weight_drop_forward(Wh: np.ndarray, mask: np.ndarray | None):
    """Wh: (H, G) recurrent rows; mask: (H, G) or None.
    Returns the weights the time loop uses, Wh * mask, and the cache (the mask)."""
    return (Wh if mask is None else Wh * mask), mask


def weight_drop_backward(dWh: np.ndarray, cache: np.ndarray | None) -> np.ndarray:
    """dWh: (H, G) gradient with respect to the dropped weights -> with respect to Wh."""
    return dWh if cache is None else dWh * cache
