"""Corpora as integer token streams, and the windows that truncated BPTT walks.

Shapes: N tokens in a split, B parallel streams (batch size), T steps per window (bptt).

Word level: each line split on whitespace, `<eos>` appended; vocabulary from train only.
Char level on PTB: the characters of each word, `_` between words, `<eos>` per line.
Char level on other text: every character is a token, newlines included.
Token ids are positions in a sorted vocabulary, so they never change between runs.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError

EOS = "<eos>"
UNK = "<unk>"
PTB_NAMES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
PLAIN_NAMES = ("train.txt", "valid.txt", "test.txt")


@dataclass(frozen=True)
class Vocab:
    """Token strings by id. `ptb_chars` marks the PTB character convention."""

    itos: tuple[str, ...]
    level: str  # "word" | "char"
    ptb_chars: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stoi", {s: i for i, s in enumerate(self.itos)})

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Text -> (ids (N,) int32, sorted tokens missing from the vocabulary). Missing tokens
        map to <unk> where the vocabulary has it and are dropped otherwise. A line break is
        `<eos>` (word level, PTB chars); no `<eos>` is added after a text's last line."""
        unk = self.stoi.get(UNK, -1)
        if self.level == "word":
            toks = _words(text)
            unknown = sorted(set(toks) - self.stoi.keys())
            lookup = {**self.stoi, **dict.fromkeys(unknown, unk)}
            ids = np.fromiter(map(lookup.__getitem__, toks), np.int32, len(toks))
        else:
            cps = _codepoints(_ptb_chars(text) if self.ptb_chars else text)
            table = np.array(
                [
                    (_char_codepoint(s, self.ptb_chars), i)
                    for i, s in enumerate(self.itos)
                    if s != UNK
                ],
                dtype=np.int64,
            ).reshape(-1, 2)
            table = table[np.argsort(table[:, 0])]  # (V, 2): code point, id
            pos = np.minimum(np.searchsorted(table[:, 0], cps), len(table) - 1)
            hit = table[pos, 0] == cps
            ids = np.where(hit, table[pos, 1], unk).astype(np.int32)
            unknown = [chr(c) for c in np.unique(cps[~hit])]
        return (ids if unk >= 0 else ids[ids >= 0]), unknown

    def decode(self, ids) -> str:
        """Ids -> readable text: `<eos>` becomes a line break, PTB's `_` a space."""
        toks = [self.itos[i] for i in np.asarray(ids).ravel()]
        if self.level == "word":
            lines = " ".join(toks).split(EOS)
            return (
                "\n".join(line.strip() for line in lines[:-1])
                + ("\n" if len(lines) > 1 else "")
                + lines[-1].strip()
            )
        text = "".join("\n" if t == EOS else t for t in toks)
        return text.replace("_", " ") if self.ptb_chars else text

    def to_json(self) -> dict:
        return {"itos": list(self.itos), "level": self.level, "ptb_chars": self.ptb_chars}

    @classmethod
    def from_json(cls, d: dict) -> Vocab:
        return cls(tuple(d["itos"]), d["level"], bool(d.get("ptb_chars", False)))


def _words(text: str) -> list[str]:
    return text.replace("\n", f" {EOS} ").split()


def _ptb_chars(text: str) -> str:
    """PTB character convention: `_` between the words of a line, one line break per line."""
    return "\n".join("_".join(line.split()) for line in text.split("\n"))


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _char_codepoint(token: str, ptb_chars: bool) -> int:
    return ord("\n") if (token == EOS and ptb_chars) else ord(token)


def _train_counts(text: str, level: str, ptb_chars: bool) -> dict[str, int]:
    """Token type -> count in a training text."""
    if level == "word":
        return collections.Counter(_words(text))
    cps, counts = np.unique(
        _codepoints(_ptb_chars(text) if ptb_chars else text), return_counts=True
    )
    chars = (EOS if (c == ord("\n") and ptb_chars) else chr(c) for c in cps.tolist())
    return dict(zip(chars, counts.tolist()))


@dataclass
class Corpus:
    """A vocabulary and the id streams of its splits (each (N,) int32)."""

    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray | None
    name: str
    notes: list[str] = field(default_factory=list)  # what was inferred, for the user


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, or raise LMError naming the file and the fix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LMError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise LMError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise LMError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LMError(
            f"{path}: not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise LMError(f"{path}: file is empty; give a file with some text")
    return text


def _with_final_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def build_vocab(
    counts: dict[str, int],
    level: str,
    ptb_chars: bool = False,
    max_vocab: int | None = None,
    min_count: int = 1,
) -> Vocab:
    """Vocabulary from training counts: the most frequent types (ties alphabetical) with at
    least `min_count` occurrences, at most `max_vocab` of them including <unk>, which is
    added when anything is cut. Ids follow sorted order."""
    kept = [t for t, c in counts.items() if c >= min_count]
    if max_vocab is not None and len(kept) > max_vocab:
        kept.sort(key=lambda t: (-counts[t], t))
        kept = kept[: max_vocab - (UNK not in kept[:max_vocab])]
    if len(kept) < len(counts) and UNK not in kept:
        kept.append(UNK)
    return Vocab(tuple(sorted(kept)), level, ptb_chars)


def _split_from_train(text: str, fraction: float) -> tuple[str, str]:
    """Carve the last `fraction` of a text off as a validation split, at a line break if any."""
    cut = int(len(text) * (1 - fraction))
    nl = text.rfind("\n", 0, cut)
    if nl > len(text) // 2:
        cut = nl + 1
    return text[:cut], text[cut:]


def load_corpus(
    level: str = "word",
    *,
    data_dir: str | Path | None = None,
    train: str | Path | None = None,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    ptb: bool | None = None,
    max_vocab: int | None = None,
    min_count: int = 1,
    valid_fraction: float = 0.1,
) -> Corpus:
    """Load a corpus: a directory holding ptb.{train,valid,test}.txt or {train,valid,test}.txt,
    or explicit files. With only a train file, the validation split is carved from its end.
    `ptb` selects the PTB character convention (default: when the files are PTB's)."""
    if level not in ("word", "char"):
        raise LMError(f"unknown level {level!r}; use 'word' or 'char'")
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise LMError(
                f"{d}: no such directory; give a directory with train.txt, valid.txt, test.txt"
            )
        names = PTB_NAMES if (d / PTB_NAMES[0]).exists() else PLAIN_NAMES
        if not (d / names[0]).exists():
            raise LMError(f"{d}: holds neither train.txt nor ptb.train.txt")
        train, valid, test = (d / n if (d / n).exists() else None for n in names)
        ptb = names is PTB_NAMES if ptb is None else ptb
        name = d.name
    elif train is None:
        raise LMError("no training data: give --data DIR or --train FILE")
    else:
        name = Path(train).stem
    ptb = bool(ptb)

    notes = []
    train_text = _with_final_newline(read_text(train))
    if valid is not None:
        valid_text = _with_final_newline(read_text(valid))
    else:
        train_text, valid_text = _split_from_train(train_text, valid_fraction)
        if not valid_text.strip() or not train_text.strip():
            raise LMError(f"{train}: too short to carve a validation split; give --valid FILE")
        notes.append(
            f"no valid file: using the last {len(valid_text):,} characters "
            f"({valid_fraction:.0%}) of {Path(train).name} for validation"
        )
    test_text = _with_final_newline(read_text(test)) if test is not None else None

    ptb_chars = ptb and level == "char"
    vocab = build_vocab(
        _train_counts(train_text, level, ptb_chars), level, ptb_chars, max_vocab, min_count
    )
    others = [t for t in (valid_text, test_text) if t is not None]
    if UNK not in vocab.stoi and any(vocab.encode(t)[1] for t in others):
        vocab = Vocab(tuple(sorted(vocab.itos + (UNK,))), level, ptb_chars)
    ids = [vocab.encode(t)[0] for t in [train_text, *others]]
    return Corpus(vocab, ids[0], ids[1], ids[2] if test_text is not None else None, name, notes)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a token stream into B parallel streams, dropping the remainder.

    ┌ a g m s ┐   the stream a b c ... x with B = 4: each row is read left to right,
    │ b h n t │   hidden state is carried from one window to the next along the rows,
    │ c i o u │   and the rows are independent of each other.
    │ d j p v │
    │ e k q w │   (drawn transposed: columns are the B streams)
    └ f l r x ┘
    Returns (B, N // B) int32.
    """
    n = len(ids) // batch_size
    return np.ascontiguousarray(ids[: n * batch_size].reshape(batch_size, n))


def num_windows(data: np.ndarray, bptt: int) -> int:
    """Windows of `bptt` steps that cover (B, L) streams; the last may be shorter."""
    return -(-(data.shape[1] - 1) // bptt)


def window(data: np.ndarray, i: int, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th window: inputs x and targets y, both (B, t) with t <= bptt, y one step ahead.

    stream: a b c d e f g h i     bptt = 4
    x:      a b c d | e f g h     window 0 | window 1 (the last window may be shorter)
    y:      b c d e | f g h i
    """
    s = i * bptt
    t = min(bptt, data.shape[1] - 1 - s)
    return data[:, s : s + t], data[:, s + 1 : s + 1 + t]


def windows(data: np.ndarray, bptt: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate the windows of (B, L) streams from window index `start`."""
    for i in range(start, num_windows(data, bptt)):
        yield window(data, i, bptt)


def check_fits(ids: np.ndarray, batch_size: int, bptt: int, what: str) -> None:
    """Raise LMError unless the stream fills at least one whole (B, T) window."""
    if len(ids) // batch_size < bptt + 1:
        raise LMError(
            f"{what} is too small: {len(ids):,} tokens cannot fill one window of "
            f"batch size {batch_size} x bptt {bptt}; use a smaller --batch-size or --bptt"
        )
