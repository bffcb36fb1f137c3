"""Byte-level BPE tokens (`--level bpe`): a vocabulary learnt from the training text with
Hugging Face's `tokenizers`, GPT-2's scheme, and text encoded with OpenAI's `tiktoken` (both
in the optional `bpe` extra).

Every UTF-8 text maps to the 256 byte tokens first, which merges then join into longer ones,
so there is no unknown token and decoding gives back the very bytes. No normaliser, no
prefix space: the text round-trips exactly. The tokenizer is kept as its own JSON (in the
checkpoint's vocabulary, never a pickle). Why `tokenizers` and not `sentencepiece`: its
byte-level BPE round-trips any text where sentencepiece normalises white space by default,
it trains from an iterator of pieces (a corpus streams), and it saves as JSON where
sentencepiece saves a binary model. Why `tiktoken` to encode: it cannot learn a vocabulary,
but it encodes with the same pre-tokenizer and merges 3-4 times faster (PTB's training text
on 2 cores: 15.6 MB/s on one thread against tokenizers' 1.7-5.3), and a 100 MB corpus is
encoded in seconds. Its rule (merge the adjacent pair whose union has the lowest id) is
tokenizers' (merge the pair learnt first) for a vocabulary learnt here, where each merge's
token takes the next id.

A token's text may end inside a character (a multi-byte UTF-8 sequence split by a merge):
`Codec.pieces` holds such bytes back until the character is whole.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lstm_lm import LMError

INSTALL = "pip install 'lstm-lm[bpe]' (in a checkout: pip install '.[bpe]')"
MIN_VOCAB, MAX_VOCAB = 512, 32_768  # default sizes are kept between these
# GPT-2's pre-tokenizer, tokenizers' ByteLevel: merges never cross these pieces' edges.
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Where a text may be cut and its halves encoded apart with the same ids as the whole: before
# white space that follows a character that is not. No piece of PATTERN holds white space
# after anything else, and none looks back. str.isspace (re's \S) takes more characters for
# white space than the regex engines do, ASCII's white space is theirs too.
CUT = re.compile(r"\S(?=[ \t\n\r\f\v])")


def _library(name: str = "tokenizers"):
    try:
        return __import__(name)
    except ImportError:
        raise LMError(f"--level bpe needs the {name} package: {INSTALL}") from None


def default_vocab_size(characters: int) -> int:
    """A vocabulary that grows with the text, about 4 sqrt(characters): 4,000 tokens for a
    megabyte, 9,000 for PTB's 5 MB; a multiple of 64, between MIN_VOCAB and MAX_VOCAB."""
    size = 64 * round(4 * math.sqrt(max(characters, 1)) / 64)
    return int(min(max(size, MIN_VOCAB), MAX_VOCAB))


def learn(pieces: Iterable[str], vocab_size: int) -> str:
    """The JSON of a byte-level BPE tokenizer of `vocab_size` tokens learnt from the text in
    `pieces` (read once, in order)."""
    tk = _library()
    if vocab_size < 257:
        raise LMError(f"--vocab-size {vocab_size}: a byte-level vocabulary needs more than 256")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_parts(pieces), trainer=trainer)
    return json.dumps(json.loads(tokenizer.to_str()))  # as Vocab.from_json writes it again


def _byte_of() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (`Ġ` for a space, `Ċ` for a line break), back
    to the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    stand_in, extra = {}, 0
    for b in range(256):
        if b in printable:
            stand_in[b] = chr(b)
        else:
            stand_in[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in stand_in.items()}


class Codec:
    """A learnt vocabulary at work: text to ids and back, piece by piece for streaming, and
    each token's bytes and characters."""

    def __init__(self, itos: tuple[str, ...]):
        byte_of = _byte_of()
        self.bytes = [bytes(byte_of[c] for c in token) for token in itos]  # each id's bytes
        ranks = {b: i for i, b in enumerate(self.bytes)}
        self.encoder = _library("tiktoken").Encoding(
            "lstm-lm", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={}
        )
        # a character starts at every byte that is not a continuation byte (10xxxxxx)
        self.widths = np.array([sum((b & 0xC0) != 0x80 for b in t) for t in self.bytes])
        self.line_break = itos.index("Ċ")

    def encode(self, text: str) -> np.ndarray:
        """(N,) int32 (encode_ordinary with np.array is faster than encode_to_numpy)."""
        return np.array(self.encoder.encode_ordinary(text), np.int32)

    def encode_pieces(self, pieces: Iterable[str], threads: int = 1) -> Iterator[np.ndarray]:
        """The ids of a text given in pieces, the same as `encode` of the whole: each piece is
        encoded up to its last `CUT` (the rest goes with the next), in `threads` parts at a
        time. A text without a CUT in 64 MiB is cut at a line break there (which may change
        a token or two at the seam), so that memory stays bounded."""
        carry = ""
        with ThreadPoolExecutor(threads) as pool:
            for piece in pieces:
                text = carry + piece
                cuts = [_cut(text, len(text) * k // threads) for k in range(1, threads)]
                end = _last_cut(text)
                if not end and len(text) > 1 << 26:
                    end = text.rfind("\n") + 1
                starts = [0, *sorted(c for c in set(cuts) if 0 < c < end)]
                parts = [text[a:b] for a, b in zip(starts, [*starts[1:], end])]
                carry = text[end:]
                yield from pool.map(self.encode, parts)
        if carry:
            yield self.encode(carry)

    def pieces(self, ids: Iterable[int]) -> Iterator[str]:
        """The text of each id in turn, a character split between tokens given whole once its
        last byte comes (an unfinished one at the end as U+FFFD)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in ids:
            yield decoder.decode(self.bytes[i])
        if tail := decoder.decode(b"", final=True):
            yield tail

    def characters(self, ids: np.ndarray) -> int:
        return int(self.widths[np.asarray(ids, np.int64)].sum())


def _parts(pieces: Iterable[str], size: int = 1 << 12) -> Iterator[str]:
    """The pieces cut at CUTs into parts of about `size` characters: tokenizers' trainer holds
    some 100 bytes a character of the pieces it works on (4 MiB pieces took 1.3 GB to learn
    from 100 MB, 4 KiB parts 170 MB)."""
    for piece in pieces:
        at = 0
        while at < len(piece):
            end = _cut(piece, at + size)
            yield piece[at:end]
            at = end


def _cut(text: str, at: int) -> int:
    """The first CUT at or after `at`, else the end."""
    m = CUT.search(text, max(at - 1, 0))
    return m.end() if m else len(text)


def _last_cut(text: str) -> int:
    """The last CUT of a text (0 where it has none), looked for in ever longer tails."""
    tail = 1 << 12
    while True:
        start = max(len(text) - tail, 0)
        ends = [m.end() for m in CUT.finditer(text, start)]
        if ends or not start:
            return ends[-1] if ends else 0
        tail *= 8


def vocabulary(tokenizer_json: str) -> tuple[str, ...]:
    """The tokens of a tokenizer, by id."""
    tokenizer = _library().Tokenizer.from_str(tokenizer_json)
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise LMError("the BPE tokenizer's ids are not 0 .. V - 1")
    return tuple(t for t, _ in by_id)
