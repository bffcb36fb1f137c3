"""Byte-level BPE tokens (`--level bpe`): a vocabulary learnt from the training text with
Hugging Face's `tokenizers` (the optional `bpe` extra), GPT-2's scheme.

Every UTF-8 text maps to the 256 byte tokens first, which merges then join into longer ones,
so there is no unknown token and decoding gives back the very bytes. No normaliser, no
prefix space: the text round-trips exactly. The tokenizer is kept as its own JSON (in the
checkpoint's vocabulary, never a pickle). Why `tokenizers` and not `sentencepiece`: its
byte-level BPE round-trips any text where sentencepiece normalises white space by default,
it trains from an iterator of pieces (a corpus streams), and it saves as JSON where
sentencepiece saves a binary model.

A token's text may end inside a character (a multi-byte UTF-8 sequence split by a merge):
`Codec.pieces` holds such bytes back until the character is whole.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterable, Iterator

import numpy as np

from lstm_lm import LMError

INSTALL = "pip install 'lstm-lm[bpe]' (in a checkout: pip install '.[bpe]')"
MIN_VOCAB, MAX_VOCAB = 512, 32_768  # default sizes are kept between these


def _library():
    try:
        import tokenizers
    except ImportError:
        raise LMError(f"--level bpe needs the tokenizers package: {INSTALL}") from None
    return tokenizers


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
    tokenizer.train_from_iterator(pieces, trainer=trainer)
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
    """A learnt tokenizer at work: text to ids and back, piece by piece for streaming, and
    each token's bytes and characters."""

    def __init__(self, tokenizer_json: str, itos: tuple[str, ...]):
        self.tokenizer = _library().Tokenizer.from_str(tokenizer_json)
        byte_of = _byte_of()
        self.bytes = [bytes(byte_of[c] for c in token) for token in itos]  # each id's bytes
        # a character starts at every byte that is not a continuation byte (10xxxxxx)
        self.widths = np.array([sum((b & 0xC0) != 0x80 for b in t) for t in self.bytes])
        self.line_break = itos.index("Ċ")

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tokenizer.encode(text).ids, np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.array(e.ids, np.int32) for e in self.tokenizer.encode_batch(texts)]

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


def vocabulary(tokenizer_json: str) -> tuple[str, ...]:
    """The tokens of a tokenizer, by id."""
    tokenizer = _library().Tokenizer.from_str(tokenizer_json)
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise LMError("the BPE tokenizer's ids are not 0 .. V - 1")
    return tuple(t for t, _ in by_id)
