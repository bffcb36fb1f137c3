"""Scoring text line by line, as speech and translation systems rescore their candidates.

Each line is a sentence on its own (`score_lines`; with a cache or dynamic evaluation the
lines are one document instead, `score_document`): from a fresh state fed the sentence
boundary (`<eos>`, what precedes every line of PTB; at plain char level the line break),
the targets are the line's tokens and its closing boundary. Lines are sorted by length and
scored in batches of similar lengths, each batch padded at the end (padding after a line's
last target cannot change its scores) with a mask, so that only real targets go through the
output layer; a line longer than a window is carried over windows.

N lines; B lines per batch; L the longest line of a batch plus its boundary; T window steps.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lstm_lm import LMError
from lstm_lm.data import Vocab
from lstm_lm.losses import bits_per_character
from lstm_lm.model import LanguageModel


@dataclass
class LineScore:
    text: str
    logprob: float  # natural log, summed over the targets
    token_logprobs: tuple[float, ...]  # each target's, the closing boundary last
    unknown: list[str]  # words (characters) of the line missing from the vocabulary
    chars: int  # characters of the line and its line break (Vocab.characters)
    unk_nats: float = 0.0  # word level: spelling out its words the vocabulary lacks

    @property
    def tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def ppl(self) -> float:
        return math.exp(-self.logprob / self.tokens)

    @property
    def bpc(self) -> float:
        """Bits per character: what a word and a character model of one text compare by."""
        return bits_per_character(self.unk_nats - self.logprob, self.chars)


def boundary(vocab: Vocab) -> int:
    """Id of the token between lines (Vocab.boundary), or LMError where there is none."""
    token = vocab.boundary()
    if token is None:
        raise LMError("the model's vocabulary has no line break or <eos>; it cannot score lines")
    return token


def split_lines(text: str) -> list[str]:
    """The lines of a text; a final line break does not start another line."""
    lines = text.split("\n")
    return lines[:-1] if text.endswith("\n") else lines


def score_lines(
    model: LanguageModel, vocab: Vocab, lines: list[str], batch_size: int = 64, bptt: int = 35
) -> list[LineScore]:
    """Log-probabilities of each line as a sentence (see the module docstring), in order."""
    eos = boundary(vocab)
    encoded = vocab.encode_lines(lines)
    seqs = [np.concatenate([[eos], ids, [eos]]).astype(np.int32) for ids, _ in encoded]
    order = np.argsort([len(s) for s in seqs], kind="stable")
    logprobs: list[np.ndarray | None] = [None] * len(lines)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        L = max(len(seqs[i]) for i in batch) - 1
        x = np.full((len(batch), L), eos, np.int32)  # (B, L) inputs, padded at the end
        y = np.full((len(batch), L), eos, np.int32)  # (B, L) targets
        for row, i in enumerate(batch):
            x[row, : len(seqs[i]) - 1], y[row, : len(seqs[i]) - 1] = seqs[i][:-1], seqs[i][1:]
        lengths = np.array([len(seqs[i]) - 1 for i in batch])
        mask = np.arange(L) < lengths[:, None]  # (B, L): real targets, not padding
        nll, state = np.empty((len(batch), L)), model.init_state(len(batch))
        for t in range(0, L, bptt):
            w = slice(t, t + bptt)
            nll[:, w], state = model.token_nll(x[:, w], y[:, w], state, mask[:, w])
        for row, i in enumerate(batch):
            logprobs[i] = -nll[row, : len(seqs[i]) - 1]
    return [LineScore(line, float(lp.sum()), tuple(lp.tolist()), unknown,
                      *_spelled(vocab, line, seq[1:]))
            for line, lp, seq, (_, unknown) in zip(lines, logprobs, seqs, encoded)]  # fmt: skip


def score_document(
    vocab: Vocab, lines: list[str], token_nll: Callable[[np.ndarray], np.ndarray]
) -> list[LineScore]:
    """Log-probabilities of each line where the lines form one document, read in order: the
    boundary, line 1, the boundary, line 2, ... as one text (PTB's own layout), scored by
    `token_nll(ids) -> NLL of ids[1:]` (a cache or dynamic evaluation that carries what it
    learns from earlier lines into later ones); each line's targets are its tokens and its
    closing boundary, as for score_lines."""
    eos = boundary(vocab)
    encoded = vocab.encode_lines(lines)
    ids = np.concatenate([[eos], *[np.r_[tok, eos] for tok, _ in encoded]]).astype(np.int64)
    logprobs = -token_nll(ids)
    cuts = np.cumsum([len(tok) + 1 for tok, _ in encoded])[:-1]
    pieces = np.split(logprobs, cuts)
    return [LineScore(line, float(lp.sum()), tuple(lp.tolist()), unknown,
                      *_spelled(vocab, line, np.r_[tok, eos]))
            for line, lp, (tok, unknown) in zip(lines, pieces, encoded)]  # fmt: skip


def _spelled(vocab: Vocab, line: str, targets: np.ndarray) -> tuple[int, float]:
    """A line's characters with its line break, and at word level the nats of spelling out
    its words the vocabulary lacks (Vocab.spelled)."""
    if vocab.level == "word":
        return vocab.spelled(collections.Counter(line.split()))
    return vocab.characters(targets), 0.0
