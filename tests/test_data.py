"""The data pipeline: PTB counts, vocabularies, own corpora, batching, errors."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import lstm_lm
from lstm_lm import LMError
from lstm_lm.cli import main
from lstm_lm.data import (
    EOS,
    UNK,
    DataSource,
    Vocab,
    batchify,
    build_vocab,
    check_fits,
    eval_streams,
    load_corpus,
    num_windows,
    read_text,
    window,
)
from lstm_lm.runs import data_source
from lstm_lm.tokenise import Splits, Text, count


def test_ptb_word_counts(ptb_dir):
    c = load_corpus("word", data_dir=ptb_dir)
    assert len(c.vocab) == 10_000
    assert (len(c.train), len(c.valid), len(c.test)) == (929_589, 73_760, 82_430)
    assert c.train.dtype == c.valid.dtype == np.uint16  # the smallest that holds 10,000 ids
    assert {EOS, UNK} <= set(c.vocab.itos)
    assert list(c.vocab.itos) == sorted(c.vocab.itos)  # ids never change between runs


def test_ptb_char_counts(ptb_dir):
    c = load_corpus("char", data_dir=ptb_dir)
    assert len(c.vocab) == 50
    assert (len(c.train), len(c.valid), len(c.test)) == (5_017_482, 393_042, 442_423)
    assert c.vocab.ptb_chars and c.train.dtype == np.uint8
    assert c.vocab.decode(c.train[:8]) == "aer bank"  # `_` between words reads as a space
    assert (c.train == c.vocab.stoi[EOS]).sum() == 42_068  # one <eos> per line


def test_vocab_round_trip_word():
    v = build_vocab({"the": 5, "cat": 2, EOS: 3}, "word")
    ids, unknown = v.encode("the cat\nthe\n")
    assert unknown == []
    assert v.decode(ids) == "the cat\nthe\n"
    assert Vocab.from_json(v.to_json()) == v


def test_vocab_round_trip_raw_chars():
    text = "héllo\nwörld\n"
    v = build_vocab({ch: 1 for ch in text}, "char")
    ids, unknown = v.encode(text)
    assert unknown == [] and v.decode(ids) == text
    assert len(ids) == len(text)  # every character, newlines included


def test_unknown_words_map_to_unk(tmp_path):
    (tmp_path / "train.txt").write_text("a a a b b c\n" * 3)
    (tmp_path / "valid.txt").write_text("a z\n")
    c = load_corpus("word", data_dir=tmp_path)
    assert UNK in c.vocab.stoi
    assert c.vocab.decode(c.valid) == f"a {UNK}\n"


def test_max_vocab_and_min_count(tmp_path):
    (tmp_path / "train.txt").write_text("a a a a b b b c c d\n")
    (tmp_path / "valid.txt").write_text("a b c d\n")
    c = load_corpus("word", data_dir=tmp_path, max_vocab=3)  # a, b and <unk>; <eos> (1) is cut too
    assert set(c.vocab.itos) == {"a", "b", UNK}
    c = load_corpus("word", data_dir=tmp_path, min_count=2)  # d goes; <eos>, seen once, stays
    assert set(c.vocab.itos) == {"a", "b", "c", UNK, EOS}
    assert c.notes == ["1 word types seen fewer than 2 times are <unk> (--min-count 2; "
                       "--min-count 1 keeps them)"]  # fmt: skip


def test_explicit_files_and_carved_valid(tmp_path):
    train = tmp_path / "mine.txt"
    train.write_text("".join(f"line {i} of my text\n" for i in range(100)))
    c = load_corpus("char", train=train)
    assert c.notes and "valid" in c.notes[0]
    assert c.test is None
    total = len(train.read_text())
    assert len(c.train) + len(c.valid) == total
    assert 0.05 * total < len(c.valid) < 0.15 * total
    assert c.vocab.decode(c.valid).startswith("line")  # carved at a line break


@pytest.mark.parametrize(
    "content,message",
    [(None, "no such file"), (b"", "empty"), (b"  \n", "empty"), (b"caf\xe9\n", "not UTF-8")],
)
def test_bad_files(tmp_path, content, message):
    f = tmp_path / "train.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(LMError, match=message):
        read_text(f)


def test_a_prefix_of_a_file_ends_on_a_whole_character(tmp_path):
    text = "a\u00e9\u20ac\U0001f600" * 5  # characters of 1, 2, 3 and 4 bytes
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    size = len(text.encode())
    for limit in range(1, size + 2):
        prefix = read_text(f, limit=limit)
        assert text.startswith(prefix) and len(prefix.encode()) > limit - 4
    assert read_text(f, limit=size) == text


def test_missing_directory(tmp_path):
    with pytest.raises(LMError, match="no such directory"):
        load_corpus("word", data_dir=tmp_path / "nope")


def test_batchify_and_windows_tile_the_stream():
    ids = np.arange(103, dtype=np.int32)
    data = batchify(ids, 4)  # (4, 25): 3 tokens of remainder dropped
    assert data.shape == (4, 25)
    assert (data[1] == np.arange(25, 50)).all()  # each row is a contiguous piece of the stream
    T = 7
    xs, ys = zip(*(window(data, i, T) for i in range(num_windows(data, T))))
    assert len(xs) == num_windows(data, T) == 4  # 24 targets per row: 7 + 7 + 7 + 3
    assert [x.shape for x in xs] == [(4, 7)] * 3 + [(4, 3)]
    x, y = np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)
    assert (x == data[:, :-1]).all() and (y == data[:, 1:]).all()  # tiled, y shifted by one
    assert window(data, 1, T)[0][0, 0] == 7


def test_eval_streams_make_every_token_but_the_first_a_target_once():
    for N in range(2, 60):
        ids = np.arange(N, dtype=np.int32)
        for B in range(1, N):
            rows, rest = eval_streams(ids, B)
            L = (N - 1) // B
            assert rows.shape == (B, L + 1) and rest[0] == rows[-1, -1]
            assert (rows[1:, 0] == rows[:-1, -1]).all()  # each row starts where the last ended
            targets = np.concatenate([rows[:, 1:].ravel(), rest[1:]])
            assert (np.sort(targets) == ids[1:]).all()  # each once
            assert len(rest) - 1 < B


def test_too_small_for_one_window():
    with pytest.raises(LMError, match="too small.*--batch-size or --bptt"):
        check_fits(np.arange(50), batch_size=10, bptt=5, what="the training split")
    check_fits(np.arange(60), batch_size=10, bptt=5, what="the training split")


def test_data_source_round_trips_through_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = DataSource("char", train="a.txt", valid="b.txt", max_vocab=30, min_count=2)
    assert files.train == str(tmp_path / "a.txt")  # absolute: a checkpoint works from anywhere
    ptb = DataSource("word", ptb_dir="dataset/ptb")
    for source in (files, ptb):
        assert DataSource.from_json(json.loads(json.dumps(source.to_json()))) == source
    # the records lstm-lm 0.1.0 wrote into its checkpoints
    old = {"kind": "ptb", "level": "word", "dir": "/data/ptb"}
    assert DataSource.from_json(old) == DataSource("word", ptb_dir="/data/ptb")


@pytest.mark.parametrize("where,message", [
    ({}, "no training data: give --data DIR or --train FILE"),
    ({"data_dir": "d", "train": "t.txt"}, "give either --data DIR or --train FILE, not both"),
    ({"data_dir": "d", "valid": "v.txt"}, "--valid/--test need --train"),
])  # fmt: skip
def test_data_source_refuses_ambiguous_data(where, message):
    with pytest.raises(LMError, match=message):
        DataSource("word", **where)


def test_load_records_its_source(tmp_path):
    (tmp_path / "train.txt").write_text("a b a\n" * 20)
    c = load_corpus("word", data_dir=tmp_path, min_count=2)
    assert c.source == DataSource("word", data_dir=tmp_path, min_count=2)
    assert c.source.load().vocab == c.vocab


@pytest.mark.parametrize("level,ptb_chars,ids_text,seed_ends_line,expected", [
    ("word", False, "x y\nz", True, ["x", " y", "\n", "z"]),
    ("word", False, "x y", False, [" x", " y"]),  # continuing a line
    ("char", True, "a_b\nc", True, ["a", " ", "b", "\n", "c"]),  # PTB's `_` reads as a space
    ("char", False, "a_b\nc", True, ["a", "_", "b", "\n", "c"]),
])  # fmt: skip
def test_pieces_stream_what_decode_joins(level, ptb_chars, ids_text, seed_ends_line, expected):
    if level == "word":
        tokens = ids_text.replace("\n", f" {EOS} ").split()
    else:
        tokens = [EOS if ch == "\n" else ch for ch in ids_text]
    v = Vocab(tuple(sorted(set(tokens))), level, ptb_chars)
    ids = [v.stoi[t] for t in tokens]
    assert list(v.pieces(ids, line_start=seed_ends_line)) == expected
    if seed_ends_line:
        assert v.decode(ids) == "".join(expected)


@pytest.mark.parametrize("level,ptb_chars", [("word", False), ("char", True), ("char", False)])
def test_encode_lines_is_encode_of_each_line(level, ptb_chars, tmp_path):
    lines = ["the cat sat", "", "a dog  sat  on the mat", "zebra cat €", "cat"]
    text = "the cat sat on a mat\nthe dog\n"
    f = tmp_path / "t.txt"
    f.write_text(text)
    v = build_vocab(count(Splits(Text(str(f))), level, ptb_chars)[0], level, ptb_chars)
    if level == "word":
        v = Vocab(tuple(sorted(v.itos + (UNK,))), level)  # words map to <unk>; chars are dropped
    for (ids, unknown), line in zip(v.encode_lines(lines), lines):
        one_ids, one_unknown = v.encode(line)
        assert ids.tolist() == one_ids.tolist() and unknown == one_unknown, line
    expected = ["zebra", "€"] if level == "word" else sorted(set("zebra€") - set(text))
    assert v.encode_lines(lines)[3][1] == expected


def test_min_count_defaults_by_corpus(ptb_dir, tmp_path):
    """2 for your own text at word level (its words seen once train <unk>), 1 for PTB, at
    char level, and whatever is given."""
    assert data_source("word", train=str(tmp_path / "t.txt")).min_count == 2
    assert data_source("word", data=str(tmp_path)).min_count == 2
    assert data_source("word").min_count == 1  # PTB, fetched into dataset/ptb
    assert data_source("word", data=str(ptb_dir)).min_count == 1  # PTB's own files
    assert data_source("char", train=str(tmp_path / "t.txt")).min_count == 1
    assert data_source("word", train=str(tmp_path / "t.txt"), min_count=1).min_count == 1


def test_unknown_words_get_the_probability_of_the_words_seen_once(tmp_path):
    """Own text at word level: a tenth of the tokens are words seen once, so <unk> stands for
    them in training, and an unknown word at eval time gets about a tenth of the mass."""
    rng = np.random.default_rng(0)
    words = [f"once{i}" if rng.random() < 0.1 else str(rng.choice(list("abcde")))
             for i in range(30_000)]  # fmt: skip
    lines = [" ".join(words[i : i + 10]) for i in range(0, len(words), 10)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(main, ["train", "--train", str(tmp_path / "t.txt"), "--layers", "1",
                                  "--hidden", "16", "--batch-size", "16", "--bptt", "10",
                                  "--epochs", "2", "--optimizer", "adam", "--lr", "0.01",
                                  "--out", str(tmp_path / "run")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "word types seen fewer than 2 times are <unk> (--min-count 2" in r.stderr
    model = lstm_lm.load(tmp_path / "run")
    assert model.encode("a zyzzyva b") == [model.vocab.stoi[w] for w in ("a", UNK, "b")]
    p_unk = dict(model.next_tokens("a b c d e a", k=len(model.vocab)))[UNK]
    assert 0.06 < p_unk < 0.14, p_unk
    # eval's bits per character charge the unknown word's spelling, over the text's own
    # characters: a longer unknown word costs more, where <unk> alone would cost the same
    bpc = {}
    for word in ("zz", "zzzzzzzzzzzz"):
        (tmp_path / "e.txt").write_text(f"a b {word} c d e\n" * 20)
        args = ["eval", str(tmp_path / "run"), "--file", str(tmp_path / "e.txt")]
        r = CliRunner().invoke(main, [*args, "--batch-size", "1", "--json"])
        res = json.loads(r.stdout)
        chars, nats = model.vocab.spelled({"a": 20, "b": 20, word: 20, "c": 20, "d": 20, "e": 20})
        assert chars == 20 * len(f"a b {word} c d e\n")
        assert res["bpc"] == pytest.approx(
            (res["nll"] * res["tokens"] + nats) / math.log(2) / (chars - 2), rel=1e-9
        )
        bpc[word] = res["bpc"] * chars  # bits of the whole text
    assert bpc["zzzzzzzzzzzz"] > bpc["zz"] + 20 * 10 * 2  # ten more letters, each > 2 bits


def test_a_large_vocabulary_for_the_text_is_said(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 30_000, 100_000)]  # 3 tokens a type
    (tmp_path / "t.txt").write_text(" ".join(words) + "\n")
    c = data_source("word", train=str(tmp_path / "t.txt"), min_count=1).load()
    said = [n for n in c.notes if n.startswith("a large vocabulary for this text: ")]
    assert len(said) == 1, c.notes
    assert all(
        remedy in said[0] for remedy in ("--level bpe", "--max-vocab N", "--softmax adaptive")
    )


def test_spelling_out_unknown_words_for_bits_per_character():
    """A word the vocabulary lacks costs its characters under a unigram of the vocabulary's
    own words (add-one, one count for a character none has) and a word's end: worked out by
    hand for a vocabulary of "ab" and "b"."""
    vocab = Vocab((EOS, UNK, "ab", "b"), "word")
    total = 3 + 4 + 2 + 2  # characters a, b, b; + 1 for each type, each character, unseen, end
    chars, nats = vocab.spelled({"ab": 2, "zb": 1, EOS: 1})
    assert chars == 2 * 3 + 3  # each word and its separator; <eos> is the last one's
    assert nats == pytest.approx(math.log(total) + math.log(total / 3) + math.log(total / 5))
    assert vocab.spelled({"ab": 5, "b": 1}) == (17, 0.0)  # nothing unknown: nothing to spell
