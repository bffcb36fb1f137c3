"""Exact evaluation: the summed NLL of a whole token stream, read in B streams that give one
stream's figure at B streams' speed (each stream after the first primed with the text before
it), the state carried across windows; over MPI ranks, each a share of the streams. Training
validates with it; `eval`, `score`'s cache and dynamic evaluation (`lstm_lm.adapt`) score
through it with a scorer of their own. `eval_data` chooses what `eval` scores.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError, cache, rundir
from lstm_lm.checkpoint import Checkpoint
from lstm_lm.config import TrainConfig
from lstm_lm.data import Vocab, as_index, eval_streams, num_windows, read_text, window
from lstm_lm.download import Log, Progress
from lstm_lm.losses import bits_per_character
from lstm_lm.model import LanguageModel, State
from lstm_lm.parallel import Group
from lstm_lm.tokenise import tokens

# Evaluation carries the state from window to window, so the window length changes no
# result; windows of about this many tokens (B x T) give the output layer products large
# enough to use the cores (PTB valid at batch 1, 2 x 200: 6.3 s in windows of 20 tokens,
# 4.0 s in windows of 400 or 1,000, the same NLL to 10 digits).
EVAL_WINDOW_TOKENS = 512
# Each evaluation stream after the first reads this many tokens of the text before it, not
# scored, before its first target, so B streams give one stream's figure at B streams' speed:
# after 2,000 steps of `small` (B 20) PTB valid / test NLL were 7e-7 / 4e-8 from batch 1's,
# after 1,500 of `char` (B 32) 1e-6 / 5e-8 (streams from a fresh state: 3e-5 / 1e-4 and
# 2e-4 / 3e-4; 64 tokens of context: 1e-5 / 8e-8 and 1e-7 / 1e-6).
EVAL_CONTEXT = 256


# scorer(x, y, state, rows) -> (NLL of each target (B, T), final state): how evaluate scores a
# window in the model's place; rows, a slice, are its streams among this rank's (the
# remainder: the last).
Scorer = Callable[[np.ndarray, np.ndarray, State, slice], tuple[np.ndarray, State]]


def evaluate(
    model: LanguageModel,
    ids: np.ndarray,
    batch_size: int = 1,
    bptt: int | None = None,
    group: Group | None = None,
    scorer: Scorer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """Summed NLL (nats) and number of targets over a whole stream: every token but the first,
    in B streams (`eval_streams`), each after the first primed with up to EVAL_CONTEXT tokens
    of the text before it, the state carried across windows of `bptt` steps (default: about
    EVAL_WINDOW_TOKENS tokens a window). Over a group of ranks each takes a contiguous share of
    the B streams, the one holding the last also the remainder, and the sums are the whole
    stream's. `scorer` scores each window in the model's place (a neural cache, dynamic
    evaluation); `progress(targets done, targets)` is called after each window."""
    group = group or Group()
    scorer = scorer or (lambda x, y, state, rows: model.nll(x, y, state))
    bptt = bptt or -(-EVAL_WINDOW_TOKENS // batch_size)
    data, rest = eval_streams(ids, batch_size)
    windows = num_windows(data, bptt)
    share = group.share(batch_size)
    state = primed_state(model, ids, data.shape[1] - 1, range(share.start, share.stop), bptt)
    data = data[share]
    total, count, streams = 0.0, 0, slice(0, len(data))
    expected = data.shape[0] * (data.shape[1] - 1)
    expected += max(len(rest) - 1, 0) * (share.stop == batch_size)
    for i in range(windows if len(data) else 0):
        x, y = window(data, i, bptt)
        nll, state = scorer(x, y, state, streams)
        total += float(np.sum(nll))
        count += y.size
        if progress:
            progress(count, expected)
    if len(data) and share.stop == batch_size and len(rest) > 1:  # the last row goes on
        last = [tuple(s[-1:] for s in layer) for layer in state]
        x, y = as_index(rest[None, :-1]), as_index(rest[None, 1:])
        for s in range(0, x.shape[1], bptt):  # in windows, as the rows were
            nll, last = scorer(x[:, s : s + bptt], y[:, s : s + bptt], last,
                               slice(len(data) - 1, len(data)))  # fmt: skip
            total += float(np.sum(nll))
            count += y[:, s : s + bptt].size
        if progress:
            progress(count, expected)
    total, count = group.sum(total, count)
    return total, int(count)


def primed_state(model: LanguageModel, ids: np.ndarray, L: int, rows: range, bptt: int) -> State:
    """The initial state of evaluation rows (of L steps each, `eval_streams`): fresh for row
    0, which starts the text; for the others, the state after the (at most EVAL_CONTEXT)
    tokens before the row's first token."""
    state = model.init_state(len(rows))
    W = min(EVAL_CONTEXT, L)
    later = np.array([b for b in rows if b > 0], dtype=np.int64)  # rows with text before them
    if not len(later) or not W:
        return state
    context = as_index(ids[later[:, None] * L - W + np.arange(W)])  # (R, W)
    primed = model.init_state(len(later))
    for i in range(0, W, bptt):
        primed = model.advance(context[:, i : i + bptt], primed)
    at = len(rows) - len(later)  # rows 1, 2, ... follow row 0 where this share has it
    return [tuple(np.concatenate([s[:at], p]) for s, p in zip(fresh, warm))
            for fresh, warm in zip(state, primed)]  # fmt: skip


def validation_batch(tc: TrainConfig, tokens: int) -> int:
    """The streams a run validates with, and `eval`'s default, so that their figures agree:
    the training batch, fewer for a split too short to give each stream a window."""
    return min(tc.batch_size, max(1, tokens // (tc.bptt + 1)))


@dataclass
class EvalData:
    """What `eval` scores: token ids, their name, the streams to read them in."""

    ids: np.ndarray
    name: str  # "valid", "test" or the file's path
    batch_size: int
    unknown: list[str] = field(default_factory=list)  # a file's types the vocabulary lacks
    notes: list[str] = field(default_factory=list)
    spelled: tuple[int, float] | None = None  # word level: Vocab.spelled of the text

    def bits_per_character(self, vocab: Vocab, nll: float) -> float:
        """Bits per character of the targets (every token but the first) scored at `nll`
        nats: at word level over the text's own characters, the words the vocabulary lacks
        spelt out (Vocab.spelled); else over the characters the tokens stand for."""
        first = vocab.characters(self.ids[:1])
        if self.spelled is None:
            return bits_per_character(nll, vocab.characters(self.ids) - first)
        characters, nats = self.spelled
        return bits_per_character(nll + nats, characters - first)


def eval_data(ckpt: Checkpoint, path: Path, split: str | None = None,
              text_file: str | Path | None = None, batch_size: int | None = None,
              verify: bool = False, log: Log | None = None,
              progress: Progress | None = None) -> EvalData:  # fmt: skip
    """The text to evaluate the checkpoint at `path` on: `text_file` (-: stdin), or a split
    of its training data (default: test, valid where there is none; from its run
    directory's token cache where it lies in one), read in the streams it validated with
    unless `batch_size` is given."""
    unknown, notes = [], []
    spelled = None
    if text_file is not None:
        text = read_text(text_file)
        ids, unknown = ckpt.vocab.encode(text)
        name = str(text_file)
        if ckpt.vocab.level == "word":
            spelled = ckpt.vocab.spelled(collections.Counter(tokens(text, "word", False)))
    else:
        corpus = cache.trained_on(ckpt, rundir.run_of(path), log, progress, verify=verify)
        if split is None and corpus.test is None:
            notes.append("the run's data has no test split: evaluating on valid")
        name = split or ("test" if corpus.test is not None else "valid")
        ids = getattr(corpus, name)
        if corpus.spelled is not None and ids is not None:
            spelled = corpus.spelled[("train", "valid", "test").index(name)]
        if ids is None:
            raise LMError(f"the run's data has no {name} split; use --split valid or --file FILE")
    batch_size = batch_size or validation_batch(ckpt.train_config, len(ids))
    if len(ids) - 1 < batch_size:
        raise LMError(f"{name}: too few tokens ({len(ids)}) for batch size {batch_size}")
    return EvalData(ids, name, batch_size, unknown, notes, spelled)
