"""Streaming tokenisation: text files read in pieces of about CHUNK bytes cut at line
breaks, counted, then encoded into arrays allocated once, in the smallest integer type that
holds the vocabulary. A corpus of N characters costs about N bytes at char level (its ids)
plus a piece's worth, where reading it whole cost some 30 N.

Word level: each line split on whitespace, `<eos>` appended. Char level: every character a
token, line breaks included; with the PTB convention (`ptb_chars`), the characters of each
word, `_` between words, `<eos>` for the line break. Every file is read twice: `count` (each
split's token types, which give the vocabulary and each split's length), then `encode`.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError

EOS = "<eos>"
UNK = "<unk>"
STDIN = "-"  # a file name that means standard input
CHUNK = 1 << 22  # bytes read at a time: 4 MiB (a piece's arrays take some 20 times that)
UNICODE = 0x110000  # code points

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes in all)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for t in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(t).max + 1:
            return np.dtype(t)
    raise LMError(f"a vocabulary of {vocab_size:,} types is too large")


@dataclass
class Text:
    """A UTF-8 text file, or standard input (read once and kept), as line-aligned pieces that
    together are the text with a final line break. `size`: bytes; `mtime_ns`: its
    modification time when opened; `sha256` once read whole."""

    path: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str | None = None
    _stdin: str | None = field(default=None, repr=False)

    def __post_init__(self):
        self.path = str(self.path)
        if self.path == STDIN:
            self._stdin = _decode(_read_stdin(), self.name)
            self.size = len(self._stdin.encode())
            return
        p = Path(self.path)
        if not p.exists():
            raise LMError(f"{p}: no such file; check the path")
        if p.is_dir():
            raise LMError(f"{p}: is a directory, expected a text file")
        st = p.stat()
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == STDIN else self.path

    def pieces(self, progress: Progress | None = None) -> Iterator[str]:
        """The text in pieces ending with a line break (the last gets one where the file has
        none); LMError for a file that cannot be read, is not UTF-8 or holds only spaces."""
        blank = True
        for piece in self._pieces(progress or (lambda *a: None)):
            blank = blank and not piece.strip()
            yield piece
        if blank:
            raise LMError(f"{self.name}: file is empty; give a file with some text")

    def _pieces(self, progress: Progress) -> Iterator[str]:
        if self._stdin is not None:
            yield self._stdin if self._stdin.endswith("\n") else self._stdin + "\n"
            return
        decoder, digest = codecs.getincrementaldecoder("utf-8")(), hashlib.sha256()
        done, tail = 0, ""
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    try:
                        text = tail + decoder.decode(chunk)
                    except UnicodeDecodeError as e:
                        at = done + e.start
                        raise LMError(f"{self.name}: not UTF-8 text (bad byte at offset {at}); "
                                      "convert it to UTF-8") from None  # fmt: skip
                    done += len(chunk)
                    progress(Path(self.path).name, done, self.size)
                    cut = text.rfind("\n") + 1
                    if cut:
                        yield text[:cut]
                    tail = text[cut:]
                tail += decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise LMError(f"{self.name}: not UTF-8 text (it ends inside a character); "
                          "convert it to UTF-8") from None  # fmt: skip
        except OSError as e:
            raise LMError(f"{self.name}: cannot read ({e.strerror})") from None
        if tail:
            yield tail + "\n"
        self.sha256 = digest.hexdigest()


@dataclass
class Splits:
    """A text as one split, or as two consecutive ones cut at character `cut` (`carve`)."""

    text: Text
    cut: int | None = None
    length: int = 0  # characters of the text, where known

    def __len__(self) -> int:
        return 1 if self.cut is None else 2

    def pieces(self, progress: Progress | None = None) -> Iterator[tuple[int, str]]:
        """(split, piece) in the order of the text: one pass over the file for all splits."""
        at = 0
        for piece in self.text.pieces(progress):
            if self.cut is None or at + len(piece) <= self.cut:
                yield 0, piece
            elif at >= self.cut:
                yield 1, piece
            else:
                yield 0, piece[: self.cut - at]
                yield 1, piece[self.cut - at :]
            at += len(piece)


def carve(text: Text, fraction: float) -> Splits:
    """A text cut into a training and a validation split, the last `fraction` of its
    characters, at a line break if one falls in the second half. Its length comes from the
    bytes (a character is a byte that does not continue one), so only the text before the
    cut is decoded, once, to find that line break."""
    total = _characters(text)
    cut, at = int(total * (1 - fraction)), 0
    for piece in text.pieces():
        if at + len(piece) >= cut:
            nl = at + piece.rfind("\n", 0, cut - at)  # at - 1 where the piece has none before
            if nl > total // 2:
                cut = nl + 1
            break
        at += len(piece)
    return Splits(text, cut, total)


def _characters(text: Text) -> int:
    """The characters of a UTF-8 text with a final line break, counted on its bytes."""
    if text.path == STDIN:
        return sum(len(p) for p in text.pieces())
    n, last = 0, b""
    try:
        with open(text.path, "rb") as f:
            while chunk := f.read(CHUNK):
                b = np.frombuffer(chunk, np.uint8)
                n += len(b) - int(np.count_nonzero((b & 0xC0) == 0x80))
                last = chunk[-1:]
    except OSError as e:
        raise LMError(f"{text.name}: cannot read ({e.strerror})") from None
    return n + (last != b"\n")


def tokens(piece: str, level: str, ptb_chars: bool):
    """A piece's tokens: words (a list of str, `<eos>` for each line break) or characters
    (code points, uint32; with the PTB convention, a line break stands for `<eos>`)."""
    if level == "word":
        return piece.replace("\n", f" {EOS} ").split()
    if ptb_chars:
        piece = ptb_convention(piece)
    return np.frombuffer(piece.encode("utf-32-le"), np.uint32)


def ptb_convention(text: str) -> str:
    """PTB character convention: `_` between the words of a line, one line break per line."""
    return "\n".join("_".join(line.split()) for line in text.split("\n"))


def count(splits: Splits, level: str, ptb_chars: bool, progress=None) -> list[dict[str, int]]:
    """Token type -> count, in each split."""
    if level == "word":
        words = [collections.Counter() for _ in range(len(splits))]
        for k, piece in splits.pieces(progress):
            words[k].update(tokens(piece, level, ptb_chars))
        return [dict(c) for c in words]
    codes = np.zeros((len(splits), UNICODE), np.int64)
    for k, piece in splits.pieces(progress):
        n = np.bincount(tokens(piece, level, ptb_chars))
        codes[k, : len(n)] += n
    return [{_char(c, ptb_chars): int(n[c]) for c in np.flatnonzero(n)} for n in codes]


def encode(splits: Splits, vocab, lengths: list[int], progress=None) -> list[np.ndarray]:
    """Each split's ids, (length,) of `id_dtype`: tokens the vocabulary lacks are <unk>
    where it has one and left out where not (`lengths` count what is kept)."""
    out = [np.empty(n, id_dtype(len(vocab))) for n in lengths]
    unk, at = vocab.stoi.get(UNK, -1), [0] * len(lengths)
    if vocab.level == "char":
        lut = np.full(UNICODE, unk, np.int32)
        for i, s in enumerate(vocab.itos):
            if s != UNK:
                lut[code_point(s, vocab.ptb_chars)] = i
    for k, piece in splits.pieces(progress):
        toks = tokens(piece, vocab.level, vocab.ptb_chars)
        if vocab.level == "word":
            ids = np.fromiter(map(vocab.stoi.get, toks, itertools.repeat(unk)), np.int32, len(toks))
        else:
            ids = lut[toks]
        if unk < 0:
            ids = ids[ids >= 0]
        out[k][at[k] : at[k] + len(ids)] = ids
        at[k] += len(ids)
    assert at == lengths, (at, lengths)
    return out


def _char(code: int, ptb_chars: bool) -> str:
    return EOS if (ptb_chars and code == ord("\n")) else chr(code)


def code_point(token: str, ptb_chars: bool) -> int:
    """The character a char-level token stands for (`<eos>`: the line break, PTB chars)."""
    return ord("\n") if (token == EOS and ptb_chars) else ord(token)


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LMError(
            f"{name}: not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8"
        ) from None


def _read_stdin(limit: int | None = None) -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise LMError("'-' reads standard input, which is a terminal here; pipe the text in")
    return sys.stdin.buffer.read(-1 if limit is None else limit)
