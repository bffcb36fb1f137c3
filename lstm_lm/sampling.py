"""Generating text: prime the state with a seed, then draw one token at a time.

Draws use temperature (logits / T), optional top-k and top-p (nucleus) truncation, or
greedy argmax; the randomness comes from the caller's numpy Generator, so a seed reproduces
a sample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lstm_lm import LMError
from lstm_lm.data import Vocab
from lstm_lm.model import LanguageModel, State

DEFAULT_LENGTH = {"word": 50, "char": 300, "bpe": 100}  # tokens a sample runs to, by level


def encode_seed(vocab: Vocab, text: str | None) -> tuple[np.ndarray, list[str]]:
    """Ids (N,) to prime with and the seed's unknown tokens; without text, the token between
    lines (<eos>, or the line break: what precedes every line), or the first token where
    the vocabulary has neither."""
    if text is None:
        start = vocab.boundary()
        return np.array([0 if start is None else start]), []
    ids, unknown = vocab.encode(text)
    if len(ids) == 0:
        raise LMError("no token of the seed text is in the model's vocabulary; give other text")
    return ids, unknown


def prime(model: LanguageModel, seed_ids: np.ndarray,
          state: State | None = None) -> tuple[np.ndarray, State]:  # fmt: skip
    """Run the seed (N,) through the model (batch 1) in one window, from `state` (default:
    fresh). Returns the logits (V,) for the token after the seed and the state."""
    if len(seed_ids) == 0:
        raise LMError("the seed is empty after tokenisation; give some text the model knows")
    state = model.init_state(1) if state is None else state
    if len(seed_ids) > 1:
        state = model.advance(seed_ids[None, :-1], state)
    logits, state = model.step(seed_ids[-1:], state)
    return logits[0], state


def draw(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
) -> int:
    """One token id from logits (V,): logits / temperature, then only the top_k most likely
    tokens, then only the smallest set of most likely tokens whose probability reaches top_p
    (nucleus sampling, Holtzman et al. 2020); or the most likely token."""
    if greedy:
        return int(np.argmax(logits))
    z = logits / temperature
    if top_k is not None and top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    if top_p is not None and top_p < 1:
        order = np.argsort(-z, kind="stable")
        p = np.exp(z[order] - z[order[0]])
        keep = np.searchsorted(np.cumsum(p), top_p * p.sum()) + 1  # the nucleus: order[:keep]
        z = z.copy()
        z[order[keep:]] = -np.inf
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(z) - 1))


def check_options(temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> None:  # fmt: skip
    """LMError for a drawing option out of range."""
    if temperature <= 0:
        raise LMError("temperature must be positive")
    if top_k is not None and top_k < 1:
        raise LMError("top-k must be at least 1")
    if top_p is not None and not 0 < top_p <= 1:
        raise LMError("top-p must be in (0, 1]")


class Sampler:
    """Draws tokens one at a time and keeps the model's state between calls: `feed` text's
    ids, `draw` a continuation, feed more (a conversation), draw again."""

    def __init__(self, model: LanguageModel, rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 greedy: bool = False):  # fmt: skip
        check_options(temperature, top_k, top_p)
        self.model, self.rng = model, rng
        self.options = (temperature, top_k, top_p, greedy)
        self.logits: np.ndarray | None = None  # (V,) for the next token, once fed
        self.state: State | None = None

    def feed(self, ids: np.ndarray) -> None:
        """Read ids (N,) after what was read and drawn so far."""
        self.logits, self.state = prime(self.model, np.asarray(ids), self.state)

    def draw(self, length: int) -> Iterator[int]:
        """Yield `length` token ids, each read before the next is drawn."""
        if self.logits is None:
            raise LMError("nothing to continue: feed the sampler some text first")
        for _ in range(length):
            tok = draw(self.logits, self.rng, *self.options)
            yield tok
            logits, self.state = self.model.step(np.array([tok]), self.state)
            self.logits = logits[0]


def generate(
    model: LanguageModel,
    seed_ids: np.ndarray,
    length: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    top_p: float | None = None,
) -> Iterator[int]:
    """Yield `length` token ids following the seed (drawn as `draw` says)."""
    sampler = Sampler(model, rng, temperature, top_k, top_p, greedy)
    sampler.feed(seed_ids)
    yield from sampler.draw(length)


def sample_text(model: LanguageModel, vocab: Vocab, rng: np.random.Generator,
                length: int | None = None) -> str:  # fmt: skip
    """An unprimed sample (after `<eos>`, as a line starts) of the level's default length, as
    text: what training shows at each epoch end."""
    seed, _ = encode_seed(vocab, None)
    ids = generate(model, seed, length or DEFAULT_LENGTH[vocab.level], rng)
    return vocab.decode(list(ids)).strip()
