"""A trained model from Python, in two lines (docs/library.md):

    model = lstm_lm.load("runs/small")           # a run directory, a .npz or a .safetensors
    model.generate("the company said", length=50, temperature=0.8, seed=0)   # -> str

and `score` (lines as sentences), `perplexity` (a text), `next_tokens` (the k most likely
with their probabilities), `encode` / `decode`, `stream` (the continuation piece by piece)
and `conversation` (lines in, continuations out, the state kept). Text in, Python types
out; nothing is printed; bad input raises LMError. The CLI's `sample`, `score` and `eval
--file` call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lstm_lm import LMError, checkpoint, rundir
from lstm_lm.adapt import Cache, Dynamic, evaluate_adapted
from lstm_lm.data import Vocab
from lstm_lm.losses import perplexity
from lstm_lm.sampling import DEFAULT_LENGTH, Sampler, check_options, encode_seed, prime
from lstm_lm.score import LineScore, boundary, score_lines


def load(path: str | Path) -> Model:
    """The model of a run directory (its best.npz, or last.npz where there is none), of a
    checkpoint file, or of a .safetensors file written by `lstm-lm export`."""
    path = rundir.resolve(path)
    return Model(checkpoint.load(path), path)


class Model:
    """A trained language model and its vocabulary (see the module docstring)."""

    def __init__(self, ckpt: checkpoint.Checkpoint, path: Path | None = None):
        self.checkpoint, self.path = ckpt, path
        self.network, self.vocab = ckpt.model, ckpt.vocab

    @property
    def level(self) -> str:
        """ "word" or "char"."""
        return self.vocab.level

    def __repr__(self) -> str:
        c = self.network.config
        return (f"Model({str(self.path)!r}: {c.cell} {c.layers} x {c.hidden}, {self.level} "
                f"level, {len(self.vocab):,} types)")  # fmt: skip

    # --- tokens -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """The token ids of a text (a line break is <eos> at word level); tokens the
        vocabulary lacks are <unk> where it has one, else left out (`unknown` lists them)."""
        return self.vocab.encode(text)[0].tolist()

    def unknown(self, text: str) -> list[str]:
        """The tokens of a text that the vocabulary lacks, sorted."""
        return self.vocab.encode(text)[1]

    def decode(self, ids: Iterable[int]) -> str:
        """Readable text of token ids (words one space apart, <eos> a line break; bpe tokens'
        bytes as text)."""
        ids = list(ids)
        if any(not 0 <= i < len(self.vocab) for i in ids):
            raise LMError(f"token ids must be in 0 .. {len(self.vocab) - 1}")
        return self.vocab.decode(ids)

    # --- generating ---------------------------------------------------------------------
    def stream(self, prime: str = "", length: int | None = None, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               seed: int | np.random.Generator | None = None) -> Iterator[str]:  # fmt: skip
        """The continuation of the text `prime` (empty: from the start of a line), a piece as
        each token is drawn: `length` tokens (default: 50 words, 300 characters or 100 bpe
        tokens), logits / `temperature`, cut to the `top_k` most likely or the nucleus
        `top_p`, or the most likely (`greedy`); `seed` (or a numpy Generator, drawn from in
        turn) makes it reproducible."""
        sampler = self._sampler(temperature, top_k, top_p, greedy, seed)
        sampler.feed(encode_seed(self.vocab, prime or None)[0])
        ids = sampler.draw(self._length(length))
        return self.vocab.pieces(ids, line_start=not prime or prime.endswith("\n"))

    def generate(self, prime: str = "", length: int | None = None, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
                 seed: int | np.random.Generator | None = None) -> str:  # fmt: skip
        """The continuation of `prime` as one string (see `stream`), the prime left out."""
        return "".join(self.stream(prime, length, temperature=temperature, top_k=top_k,
                                   top_p=top_p, greedy=greedy, seed=seed))  # fmt: skip

    def conversation(self, keep_state: bool = True, length: int | None = None, *,
                     temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, greedy: bool = False,
                     seed: int | np.random.Generator | None = None) -> Conversation:  # fmt: skip
        """Lines in, continuations out (`Conversation.reply`); with `keep_state` each line
        follows the text so far, as a new line of it, else each starts afresh."""
        sampler = self._sampler(temperature, top_k, top_p, greedy, seed)
        return Conversation(self, sampler, self._length(length), keep_state)

    def _sampler(self, temperature, top_k, top_p, greedy, seed) -> Sampler:
        check_options(temperature, top_k, top_p)
        rng = np.random.default_rng(seed)
        return Sampler(self.network, rng, temperature, top_k, top_p, greedy)

    def _length(self, length: int | None) -> int:
        if length is not None and length < 1:
            raise LMError("length must be at least 1 token")
        return length or DEFAULT_LENGTH[self.level]

    # --- scoring ------------------------------------------------------------------------
    def score(self, lines: Iterable[str], batch_size: int = 64) -> list[LineScore]:
        """Each line as a sentence, in order: its log-probability (natural log) over its
        tokens and closing <eos> (`tokens` of them), its perplexity, its unknown tokens."""
        if isinstance(lines, str):
            raise LMError("score takes a list of lines; for one text, use perplexity")
        lines = list(lines)
        if batch_size < 1:
            raise LMError("batch_size must be at least 1")
        return score_lines(self.network, self.vocab, lines, batch_size,
                           self.checkpoint.train_config.bptt)  # fmt: skip

    def perplexity(self, text: str, batch_size: int = 1, cache: Cache | None = None,
                   dynamic: Dynamic | None = None) -> float:  # fmt: skip
        """The perplexity of a text read as one document: every token but the first scored,
        in `batch_size` streams (1, the published convention, is exact; more are faster);
        as `lstm-lm eval --file F --batch-size N` gives it. With a neural cache or dynamic
        evaluation (adapt.Cache, adapt.Dynamic: plain SGD steps, no training statistics)."""
        ids = self.vocab.encode(text)[0]
        if len(ids) < 2 or len(ids) - 1 < batch_size:
            raise LMError(f"the text has {len(ids)} tokens: too few to score in "
                          f"{batch_size} stream{'s' * (batch_size > 1)}")  # fmt: skip
        nll, n = evaluate_adapted(self.network, ids, batch_size, cache, dynamic)
        return perplexity(nll / n)

    def next_tokens(self, text: str = "", k: int = 10) -> list[tuple[str, float]]:
        """The k most likely tokens after `text` (empty: at the start of a line), most likely
        first, with their probabilities."""
        if k < 1:
            raise LMError("k must be at least 1")
        logits, _ = prime(self.network, encode_seed(self.vocab, text or None)[0])
        z = logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[:k]
        return [(self.vocab.itos[i], float(p[i])) for i in top]


class Conversation:
    """A model replying line by line (`Model.conversation`)."""

    def __init__(self, model: Model, sampler: Sampler, length: int, keep_state: bool):
        self.model, self.sampler, self.length, self.keep_state = model, sampler, length, keep_state

    def reply(self, line: str) -> Iterator[str]:
        """The continuation of `line`, piece by piece as it is drawn."""
        vocab: Vocab = self.model.vocab
        ids = encode_seed(vocab, line or None)[0]
        if self.keep_state and self.sampler.state is not None:
            ids = np.concatenate([_separator(vocab), ids]) if line else ids
        else:
            self.sampler.state = None  # afresh
        self.sampler.feed(ids)
        return vocab.pieces(self.sampler.draw(self.length), line_start=not line)


def _separator(vocab: Vocab) -> list[int]:
    """What goes between the lines of a conversation: the token between lines (<eos>, or the
    line break at plain char level), or nothing in a vocabulary without one."""
    try:
        return [boundary(vocab)]
    except LMError:
        return []
