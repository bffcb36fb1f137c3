"""Corpora as integer token streams, and the windows that truncated BPTT walks.

Shapes: N tokens in a split, B parallel streams (batch size), T steps per window (bptt).

Word level: each line split on whitespace, `<eos>` appended; vocabulary from train only.
Char level on PTB: the characters of each word, `_` between words, `<eos>` per line.
Char level on other text: every character is a token, newlines included.
Token ids are positions in a sorted vocabulary, so they never change between runs.

A `DataSource` describes where a corpus comes from and how it is tokenised; it is saved in
every checkpoint, so a resumed run or `eval` loads the same data again.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError, bpe
from lstm_lm.download import Log, Progress, fetch_ptb
from lstm_lm.parallel import cores_per_rank
from lstm_lm.tokenise import (
    EOS,
    STDIN,
    UNK,
    Splits,
    Text,
    _decode,
    _read_stdin,
    carve,
    code_point,
    count,
    encode,
    id_dtype,
    ptb_convention,
    tokens,
)

PTB_NAMES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
PLAIN_NAMES = ("train.txt", "valid.txt", "test.txt")
VALID_FRACTION = 0.1  # of a lone train file, carved off its end for validation


@dataclass(frozen=True)
class Vocab:
    """Token strings by id. `ptb_chars` marks the PTB character convention; `tokenizer` is a
    bpe vocabulary's tokenizer, as JSON text (lstm_lm.bpe)."""

    itos: tuple[str, ...]
    level: str  # "word" | "char" | "bpe"
    ptb_chars: bool = False
    tokenizer: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "stoi", {s: i for i, s in enumerate(self.itos)})

    @property
    def codec(self) -> bpe.Codec:
        """The bpe tokenizer at work (built once)."""
        if "_codec" not in self.__dict__:
            object.__setattr__(self, "_codec", bpe.Codec(self.itos))
        return self.__dict__["_codec"]

    def boundary(self) -> int | None:
        """The id of the token between lines: <eos>, or the line break at plain char level and
        in bpe; None where the vocabulary has none."""
        if self.level == "bpe":
            return self.codec.line_break
        token = "\n" if self.level == "char" and not self.ptb_chars else EOS
        return self.stoi.get(token)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> tuple[np.ndarray, list[str]]:
        """Text -> (ids (N,) int32, sorted tokens missing from the vocabulary). Missing tokens
        map to <unk> where the vocabulary has it and are dropped otherwise. A line break is
        `<eos>` (word level, PTB chars); no `<eos>` is added after a text's last line."""
        if self.level == "bpe":  # bytes: nothing is unknown
            return self.codec.encode(text), []
        raw, token = self._lookup(text)
        missing = raw < 0
        return self._known(raw, missing), sorted(set(token(np.flatnonzero(missing))))

    def encode_lines(self, lines: list[str]) -> list[tuple[np.ndarray, list[str]]]:
        """`encode` of each line (without its line break), in one pass over all of them."""
        if self.level == "bpe":
            return [(self.codec.encode(line), []) for line in lines]
        raw, token = self._lookup("\n".join(lines) + "\n")
        if self.level == "word":
            counts = [len(line.split()) + 1 for line in lines]  # each line's words and <eos>
        else:
            counts = [len(ptb_convention(line) if self.ptb_chars else line) + 1 for line in lines]
        ends = np.cumsum(counts)
        out = []
        for start, end in zip(ends - counts, ends):
            line, missing = raw[start : end - 1], raw[start : end - 1] < 0
            unknown = sorted(set(token(start + np.flatnonzero(missing)))) if missing.any() else []
            out.append((self._known(line, missing), unknown))
        return out

    def unknown(self, text: str) -> dict[str, int]:
        """Tokens of a text missing from the vocabulary, with their counts (most first)."""
        if self.level == "bpe":
            return {}
        raw, token = self._lookup(text)
        missing = token(np.flatnonzero(raw < 0))
        return dict(collections.Counter(missing).most_common())

    def extended(self, tokens: Iterable[str]) -> Vocab:
        """This vocabulary with new tokens appended (sorted among themselves): every old id
        stays what it was, so a model's rows and columns keep their meaning."""
        new = sorted(set(tokens) - self.stoi.keys())
        return Vocab(self.itos + tuple(new), self.level, self.ptb_chars)

    def _known(self, raw: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Missing tokens as <unk>, or dropped where the vocabulary has no <unk>."""
        unk = self.stoi.get(UNK)
        return np.where(missing, unk, raw).astype(np.int32) if unk is not None else raw[~missing]

    def _lookup(self, text: str):
        """Ids (N,) int32 of the text's tokens, -1 where missing, and a function giving the
        token strings at some positions."""
        if self.level == "word":
            toks = tokens(text, "word", False)
            lookup = {**self.stoi, **dict.fromkeys(set(toks) - self.stoi.keys(), -1)}
            ids = np.fromiter(map(lookup.__getitem__, toks), np.int32, len(toks))
            return ids, lambda at: [toks[i] for i in at]
        cps = tokens(text, "char", self.ptb_chars).astype(np.int64)
        table = np.array([(code_point(s, self.ptb_chars), i) for i, s in enumerate(self.itos)
                          if s != UNK], dtype=np.int64).reshape(-1, 2)  # fmt: skip
        table = table[np.argsort(table[:, 0])]  # (V, 2): code point, id
        pos = np.minimum(np.searchsorted(table[:, 0], cps), len(table) - 1)
        ids = np.where(table[pos, 0] == cps, table[pos, 1], -1).astype(np.int32)
        return ids, lambda at: [chr(c) for c in cps[at]]

    def characters(self, ids: np.ndarray) -> int:
        """Characters of the text that target tokens `ids` stand for, what bits per character
        divide by at every level: at word level a word and the separator after it (a space,
        or the line break that <eos> stands for at a line's end), a character a token at
        char level (PTB's `_` a space, <eos> the line break)."""
        if self.level == "char":
            return int(np.size(ids))
        if self.level == "bpe":
            return self.codec.characters(ids)
        if not hasattr(self, "_widths"):  # (V,) characters a word takes with its separator
            widths = np.array([0 if t == EOS else len(t) + 1 for t in self.itos], np.int64)
            object.__setattr__(self, "_widths", widths)
        return int(self._widths[np.asarray(ids, np.int64)].sum())

    def spelled(self, counts: dict[str, int]) -> tuple[int, float]:
        """For a word-level text given by its word counts: its characters (a word with its
        separator, <eos> the line break) and the nats of spelling out, a character at a
        time, every word the vocabulary lacks (which the model only knows as <unk>): what
        makes bits per character honest where <unk> stands for many words. The spelling
        model is a character unigram of the vocabulary's own words, each word ended by a
        separator; a character none of them has costs as one seen once."""
        if "_spelling" not in self.__dict__:
            chars = collections.Counter("".join(t for t in self.itos if t not in (EOS, UNK)))
            total = sum(chars.values()) + len(self.itos) + len(chars) + 2  # +1 each, +1 unseen
            cost = {c: math.log(total / (n + 1)) for c, n in chars.items()}
            ends = math.log(total / (len(self.itos) + 1))  # a word's end: one per type
            object.__setattr__(self, "_spelling", (cost, math.log(total), ends))
        cost, unseen, end = self.__dict__["_spelling"]
        characters, nats = 0, 0.0
        for word, n in counts.items():
            if word == EOS:
                continue
            characters += n * (len(word) + 1)
            if word not in self.stoi:
                nats += n * (sum(cost.get(c, unseen) for c in word) + end)
        return characters, nats

    def pieces(self, ids: Iterable[int], line_start: bool = True) -> Iterator[str]:
        """The text of each id in turn, for streaming output: `<eos>` is a line break, words
        are separated by a space (none at the start of a line), PTB's `_` reads as a space.
        `line_start`: whether the text written so far ends a line (or is empty). In bpe, the
        bytes of each token, a character split between tokens given once whole."""
        if self.level == "bpe":
            yield from self.codec.pieces(ids)
            return
        for i in ids:
            tok = self.itos[i]
            if tok == EOS:
                piece = "\n"
            elif self.level == "word":
                piece = tok if line_start else " " + tok
            else:
                piece = " " if (tok == "_" and self.ptb_chars) else tok
            line_start = piece == "\n"
            yield piece

    def decode(self, ids) -> str:
        """Ids -> readable text (see `pieces`)."""
        return "".join(self.pieces(np.asarray(ids).ravel().tolist()))

    def to_json(self) -> dict:
        d = {"itos": list(self.itos), "level": self.level, "ptb_chars": self.ptb_chars}
        if self.tokenizer is not None:  # as JSON, not a string of it
            d["tokenizer"] = json.loads(self.tokenizer)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Vocab:
        tokenizer = json.dumps(d["tokenizer"]) if "tokenizer" in d else None
        return cls(tuple(d["itos"]), d["level"], bool(d.get("ptb_chars", False)), tokenizer)


@dataclass
class Corpus:
    """A vocabulary and the id streams of its splits (each (N,), of the smallest integer
    type that holds the vocabulary: tokenise.id_dtype)."""

    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray | None
    name: str
    source: DataSource
    notes: list[str] = field(default_factory=list)  # what was inferred, for the user
    unknown: dict[str, int] = field(default_factory=dict)  # tokens a given vocabulary lacks
    files: list[dict] = field(default_factory=list)  # path, size, mtime_ns, sha256 (not stdin)
    # word level: each split's (characters, nats of spelling its unknown words) (Vocab.spelled)
    spelled: list[tuple[int, float]] | None = None
    cached: bool = False  # read from a cache of token ids (lstm_lm.cache)
    cached_in: str | None = None  # the directory of that cache: the run's, or the shared one
    seconds: float = 0.0  # to load it
    work: list[str] = field(default_factory=list)  # what this load did, timed (not cached)


def read_text(path: str | Path, limit: int | None = None) -> str:
    """Read a UTF-8 text file (`-`: standard input) whole, or its first `limit` bytes (less
    a character the cut splits), or raise LMError naming the file and the fix: for short
    texts (a seed, lines to score, a page to show); corpora stream (`tokenise`)."""
    name = "<stdin>" if str(path) == STDIN else str(path)
    raw = _read_stdin(limit) if str(path) == STDIN else _read_file(Path(path), limit)
    if limit is not None and len(raw) == limit:
        raw = raw[: _last_whole(raw)]
    text = _decode(raw, name)
    if not text.strip():
        raise LMError(f"{name}: file is empty; give a file with some text")
    return text


def _last_whole(raw: bytes) -> int:
    """Where UTF-8 bytes cut at an arbitrary point end after their last whole character."""
    start = len(raw) - 1
    while start > 0 and len(raw) - start < 4 and raw[start] & 0xC0 == 0x80:
        start -= 1  # back over continuation bytes to the last character's first byte
    lead = raw[start] if raw else 0
    need = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return len(raw) if len(raw) - start >= need else start


def _read_file(path: Path, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(-1 if limit is None else limit)
    except FileNotFoundError:
        raise LMError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise LMError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise LMError(f"{path}: cannot read ({e.strerror})") from None


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
    kept = [t for t, c in counts.items() if c >= min_count or t == EOS]  # lines are not rare
    if max_vocab is not None and len(kept) > max_vocab:
        kept.sort(key=lambda t: (-counts[t], t))
        kept = kept[: max_vocab - (UNK not in kept[:max_vocab])]
    if len(kept) < len(counts) and UNK not in kept:
        kept.append(UNK)
    return Vocab(tuple(sorted(kept)), level, ptb_chars)


@dataclass(frozen=True)
class DataSource:
    """Where a corpus comes from and how it is tokenised: exactly one of `ptb_dir` (the Penn
    TreeBank, fetched and verified there when missing), `data_dir` (a directory holding
    ptb.{train,valid,test}.txt or {train,valid,test}.txt) or `train` (with optional `valid`
    and `test` files). Paths are made absolute, so a checkpoint's source works from anywhere."""

    level: str = "word"
    ptb_dir: str | None = None
    data_dir: str | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    max_vocab: int | None = None
    min_count: int = 1
    vocab_size: int | None = None  # bpe: the tokens to learn (None: bpe.default_vocab_size)

    def __post_init__(self):
        if self.level not in ("word", "char", "bpe"):
            raise LMError(f"unknown level {self.level!r}; use 'word', 'char' or 'bpe'")
        if self.vocab_size is not None and self.level != "bpe":
            raise LMError("--vocab-size sets a bpe vocabulary: it goes with --level bpe")
        if self.level == "bpe" and (self.max_vocab is not None or self.min_count != 1):
            raise LMError("--max-vocab and --min-count cut a word vocabulary; with --level bpe "
                          "give --vocab-size N")  # fmt: skip
        given = sum(p is not None for p in (self.ptb_dir, self.data_dir, self.train))
        if given != 1:
            raise LMError("give either --data DIR or --train FILE, not both" if given else
                          "no training data: give --data DIR or --train FILE")  # fmt: skip
        if self.train is None and (self.valid is not None or self.test is not None):
            raise LMError("--valid/--test need --train")
        for name in ("ptb_dir", "data_dir", "train", "valid", "test"):
            path = getattr(self, name)
            if path is not None:
                path = str(path) if str(path) == STDIN else str(Path(path).absolute())
                object.__setattr__(self, name, path)

    def load(
        self, log: Log | None = None, progress: Progress | None = None, vocab: Vocab | None = None
    ) -> Corpus:
        """Read (PTB: first fetch and verify, reporting through `log` and `progress`),
        tokenise and encode the splits; every problem is an LMError naming the file. With a
        `vocab` (a trained model's), the splits are encoded with it rather than one built from
        the training text, and `Corpus.unknown` counts the tokens it lacks."""
        if self.ptb_dir is not None:
            fetch_ptb(self.ptb_dir, log=log, progress=progress)
        if self.train is not None:
            name = "stdin" if self.train == STDIN else Path(self.train).stem
            files, ptb = (self.train, self.valid, self.test), False
        else:
            d = Path(self.data_dir or self.ptb_dir)
            if not d.is_dir():
                raise LMError(
                    f"{d}: no such directory; give a directory with train.txt, valid.txt, test.txt"
                )
            ptb = (d / PTB_NAMES[0]).exists()
            names = PTB_NAMES if ptb else PLAIN_NAMES
            if not (d / names[0]).exists():
                raise LMError(f"{d}: holds neither train.txt nor ptb.train.txt")
            files, name = [d / n if (d / n).exists() else None for n in names], d.name
        return _read_corpus(self, *files, ptb_chars=ptb and self.level == "char", name=name,
                            vocab=vocab, progress=progress)  # fmt: skip

    def to_json(self) -> dict:
        size = {} if self.vocab_size is None else {"vocab_size": self.vocab_size}
        if self.ptb_dir is not None:
            return {"kind": "ptb", "level": self.level, "dir": self.ptb_dir, **size}
        return {
            "kind": "files",
            "level": self.level,
            "data": self.data_dir,
            "train": self.train,
            "valid": self.valid,
            "test": self.test,
            "max_vocab": self.max_vocab,
            "min_count": self.min_count,
            **size,
        }

    @classmethod
    def from_json(cls, d: dict) -> DataSource:
        if d["kind"] == "ptb":
            return cls(d["level"], ptb_dir=d["dir"], vocab_size=d.get("vocab_size"))
        return cls(
            d["level"],
            data_dir=d.get("data"),
            train=d.get("train"),
            valid=d.get("valid"),
            test=d.get("test"),
            max_vocab=d.get("max_vocab"),
            min_count=d.get("min_count", 1),
            vocab_size=d.get("vocab_size"),
        )


def _read_corpus(source: DataSource, train, valid, test, ptb_chars: bool, name: str,
                 vocab: Vocab | None = None, progress: Progress | None = None):  # fmt: skip
    """The corpus of three files (valid and test may be None), tokenised as `source` says,
    with its own vocabulary or the given one; each file streamed (`tokenise`)."""
    level, notes = source.level, []
    texts = [Splits(Text(train))]
    if valid is not None:
        texts.append(Splits(Text(valid)))
    else:
        texts[0] = carve(texts[0].text, VALID_FRACTION)
        notes.append(f"no valid file: using the last {texts[0].length - texts[0].cut:,} "
                     f"characters ({VALID_FRACTION:.0%}) of {Path(train).name} for "
                     "validation")  # fmt: skip
    if test is not None:
        texts.append(Splits(Text(test)))

    def tracked(what):  # the progress of a pass over a file, named by the pass
        if progress is not None:
            return lambda f, done, total: progress(f"{what} {f}", done, total)

    if level == "bpe":
        return _read_bpe(source, texts, valid is None, test is not None, name, notes, vocab,
                         tracked)  # fmt: skip
    counts = [c for t in texts for c in count(t, level, ptb_chars, tracked("reading"))]
    if valid is None and not all(map(_has_text, counts[:2])):
        raise LMError(f"{train}: too short to carve a validation split; give --valid FILE")
    unknown = collections.Counter()
    if vocab is None:
        vocab = build_vocab(counts[0], level, ptb_chars, source.max_vocab, source.min_count)
        notes += vocabulary_notes(counts[0], vocab, source)
        if UNK not in vocab.stoi and any(c.keys() - vocab.stoi.keys() for c in counts[1:]):
            vocab = Vocab(tuple(sorted(vocab.itos + (UNK,))), level, ptb_chars)
    else:
        for c in counts:
            unknown.update({t: n for t, n in c.items() if t not in vocab.stoi})
    kept = [sum(n for t, n in c.items() if t in vocab.stoi or UNK in vocab.stoi) for c in counts]
    ids, at = [], 0
    for t in texts:
        ids += encode(t, vocab, kept[at : at + len(t)], tracked("encoding"))
        at += len(t)
    test_ids = ids[2] if test is not None else None
    unknown = dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))  # most first
    files = [{"path": str(Path(t.text.path).absolute()), "size": t.text.size,
              "mtime_ns": t.text.mtime_ns, "sha256": t.text.sha256} for t in texts]  # fmt: skip
    files = files if all(t.text.path != STDIN for t in texts) else []
    spelled = [vocab.spelled(c) for c in counts] if level == "word" else None
    return Corpus(vocab, ids[0], ids[1], test_ids, name, source, notes, unknown, files,
                  spelled)  # fmt: skip


# A word vocabulary this large for this few training tokens a type is said (PTB: 10,000
# types, 93 tokens a type): rare words learn little and the output layer dominates the step.
LARGE_VOCAB, FEW_TOKENS_A_TYPE = 10_000, 50


def vocabulary_notes(counts: dict[str, int], vocab: Vocab, source: DataSource) -> list[str]:
    """What the user should know of a word vocabulary learnt from the training counts: the
    types --min-count turned into <unk>, and a vocabulary large for the text, with the
    options that make it smaller."""
    if vocab.level != "word":
        return []
    notes, tokens = [], sum(counts.values())
    rare = sum(1 for t, c in counts.items() if c < source.min_count and t != EOS)
    if rare and source.max_vocab is None:
        notes.append(f"{rare:,} word types seen fewer than {source.min_count} times are <unk> "
                     f"(--min-count {source.min_count}; --min-count 1 keeps them)")  # fmt: skip
    if len(vocab) > LARGE_VOCAB and tokens / len(vocab) < FEW_TOKENS_A_TYPE:
        notes.append(f"a large vocabulary for this text: {len(vocab):,} word types, "
                     f"{tokens / len(vocab):.0f} training tokens a type (PTB: 93); smaller and "
                     "faster with --level bpe (subwords), --max-vocab N, a higher --min-count "
                     "or --softmax adaptive")  # fmt: skip
    return notes


def _read_bpe(source: DataSource, texts: list[Splits], carved: bool, has_test: bool, name: str,
              notes: list[str], vocab: Vocab | None, tracked) -> Corpus:  # fmt: skip
    """The bpe corpus: a byte-level BPE vocabulary learnt from the training split (or the
    given one), then every split encoded with it, piece by piece."""
    work = []
    if vocab is None:
        size = source.vocab_size or bpe.default_vocab_size(texts[0].text.size)
        t0 = time.perf_counter()
        train = (piece for k, piece in texts[0].pieces(tracked("learning BPE from")) if k == 0)
        tokenizer = bpe.learn(train, size)
        vocab = Vocab(bpe.vocabulary(tokenizer), "bpe", tokenizer=tokenizer)
        work.append(f"learnt a byte-level BPE vocabulary of {len(vocab):,} tokens from the "
                    f"training text in {time.perf_counter() - t0:.1f} s"
                    + ("" if source.vocab_size else " (--vocab-size N to choose)"))  # fmt: skip
    dtype = id_dtype(len(vocab))
    ids = [[] for t in texts for _ in range(len(t))]
    at, t0 = 0, time.perf_counter()
    for t in texts:
        for k, split in itertools.groupby(t.pieces(tracked("encoding")), lambda kp: kp[0]):
            encoded = vocab.codec.encode_pieces((p for _, p in split), cores_per_rank())
            ids[at + k] += (a.astype(dtype) for a in encoded)
        at += len(t)
    ids = [np.concatenate(parts) if parts else np.empty(0, dtype) for parts in ids]
    seconds, size = time.perf_counter() - t0, sum(t.text.size for t in texts)
    work.append(f"encoded {size / 1e6:.1f} MB into {sum(map(len, ids)):,} tokens in "
                f"{seconds:.1f} s ({size / 1e6 / seconds:.1f} MB/s)")  # fmt: skip
    if carved and not (len(ids[0]) and len(ids[1])):
        raise LMError(f"{source.train}: too short to carve a validation split; give --valid FILE")
    files = [{"path": str(Path(t.text.path).absolute()), "size": t.text.size,
              "mtime_ns": t.text.mtime_ns, "sha256": t.text.sha256} for t in texts]  # fmt: skip
    files = files if all(t.text.path != STDIN for t in texts) else []
    return Corpus(vocab, ids[0], ids[1], ids[2] if has_test else None, name, source, notes, {},
                  files, work=work)  # fmt: skip


def _has_text(counts: dict[str, int]) -> bool:
    """Whether a split holds more than white space and line ends."""
    return any(t != EOS and t.strip() for t in counts)


def load_corpus(level: str = "word", **where) -> Corpus:
    """`DataSource(level, **where).load()`, e.g. `load_corpus("word", data_dir="dataset/ptb")`
    or `load_corpus("char", train="book.txt")`."""
    return DataSource(level, **where).load()


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


def eval_streams(ids: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into B parallel streams so that, unlike `batchify`, every token
    but the first is a target: each row ends with the token the next one starts with, and
    what is left over continues the last row.

    ┌ a f k ┐ p q   the stream a b ... q with B = 3: f is the first row's last target and
    │ b g l │       the second row's first input; p q, the remainder, continue the last row
    │ c h m │       (its state carried) after the windows. Each row but the first starts
    │ d i n │       from a fresh state: B - 1 targets are predicted with less context than
    │ e j o │       one stream would give them.
    └ f k p ┘
    Returns the rows (B, L + 1) with L = (N - 1) // B, and the remainder (N - B L,), which
    starts with the last row's final token.
    """
    L = (len(ids) - 1) // batch_size
    rows = np.arange(batch_size)[:, None] * L + np.arange(L + 1)  # (B, L + 1)
    return ids[rows], ids[batch_size * L :]


def num_windows(data: np.ndarray, bptt: int) -> int:
    """Windows of `bptt` steps that cover (B, L) streams; the last may be shorter."""
    return windows_per_epoch(data.size, data.shape[0], bptt)


def windows_per_epoch(tokens: int, batch_size: int, bptt: int) -> int:
    """The windows of an epoch over a stream of `tokens` cut into `batch_size` streams."""
    return -(-(tokens // batch_size - 1) // bptt)


def window(data: np.ndarray, i: int, bptt: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th window: inputs x and targets y, both (B, t) intp with t <= bptt, y one step
    ahead.

    stream: a b c d e f g h i     bptt = 4
    x:      a b c d | e f g h     window 0 | window 1 (the last window may be shorter)
    y:      b c d e | f g h i
    """
    s = i * bptt
    t = min(bptt, data.shape[1] - 1 - s)
    return as_index(data[:, s : s + t]), as_index(data[:, s + 1 : s + 1 + t])


def as_index(ids: np.ndarray) -> np.ndarray:
    """Token ids as the model indexes with them: stored in the smallest type that holds the
    vocabulary (uint8 at char level), where `H + id` would overflow."""
    return ids.astype(np.intp)


def check_fits(ids: np.ndarray, batch_size: int, bptt: int, what: str) -> None:
    """Raise LMError unless the stream fills at least one whole (B, T) window."""
    if len(ids) // batch_size < bptt + 1:
        raise LMError(
            f"{what} is too small: {len(ids):,} tokens cannot fill one window of "
            f"batch size {batch_size} x bptt {bptt}; use a smaller --batch-size or --bptt"
        )
