"""Streaming tokenisation: the same ids as reading the text whole, in any piece size, in the
smallest integer type; a few bytes of memory per character; the run's cache of token ids."""

import shutil
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import cache, checkpoint, tokenise
from lstm_lm.cli import main
from lstm_lm.data import DataSource, Vocab, build_vocab, load_corpus
from lstm_lm.tokenise import UNK, id_dtype

TEXT = "naïve café — ünïcödé ok\nthe cat  sat\n\n 🐈 on the mat\nno final line break"


def reference(text: str, level: str) -> tuple[Vocab, np.ndarray]:
    """The vocabulary and ids of a whole text, through Vocab.encode (the in-memory path)."""
    from collections import Counter

    tokens = text.replace("\n", " <eos> ").split() if level == "word" else list(text)
    vocab = build_vocab(Counter(tokens), level)
    return vocab, vocab.encode(text)[0]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 22])  # bytes read at a time
@pytest.mark.parametrize("level", ["word", "char"])
def test_streaming_gives_the_ids_of_the_whole_text(tmp_path, monkeypatch, chunk, level):
    monkeypatch.setattr(tokenise, "CHUNK", chunk)
    text = TEXT * 7
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "v.txt").write_text(text[:50] + " zebra ☃", encoding="utf-8")
    c = load_corpus(level, train=str(tmp_path / "t.txt"), valid=str(tmp_path / "v.txt"))
    vocab, ids = reference(text + "\n", level)
    assert UNK in c.vocab.stoi and c.vocab.itos == tuple(sorted(vocab.itos + (UNK,)))
    expected = np.array([c.vocab.stoi[vocab.itos[i]] for i in ids])
    assert np.array_equal(c.train, expected) and c.train.dtype == np.uint8
    valid, _ = c.vocab.encode(text[:50] + " zebra ☃\n")
    assert np.array_equal(c.valid, valid)


@pytest.mark.parametrize("chunk", [5, 1 << 22])
def test_a_carved_validation_split_and_ptb_characters(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(tokenise, "CHUNK", chunk)
    lines = [f"line {i} of some words é" for i in range(40)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    c = load_corpus("char", train=str(tmp_path / "t.txt"))
    text = "\n".join(lines) + "\n"
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1  # at a line break past the middle
    assert c.notes == [f"no valid file: using the last {len(text) - cut:,} characters (10%) "
                       "of t.txt for validation"]  # fmt: skip
    assert c.vocab.decode(c.train) == text[:cut] and c.vocab.decode(c.valid) == text[cut:]
    d = tmp_path / "ptb"
    d.mkdir()
    for name in ("train", "valid", "test"):
        (d / f"ptb.{name}.txt").write_text(" a  cat sat \n the mat\n")
    p = load_corpus("char", data_dir=str(d))
    assert p.vocab.ptb_chars and p.vocab.decode(p.train) == "a cat sat\nthe mat\n"


def test_id_types():
    assert [id_dtype(v) for v in (2, 256, 257, 65536, 65537)] == [
        np.uint8, np.uint8, np.uint16, np.uint16, np.uint32]  # fmt: skip


def test_loading_costs_a_few_bytes_per_character(tmp_path):
    """Texts of 4 and 16 MB (one piece and four): what the larger costs on top of the smaller
    is its ids (1 byte a character here), not copies of the text; the pieces' arrays are
    paid once."""
    rng = np.random.default_rng(0)
    words = np.array(["int", "static", "return", "{", "}", "(x);", "/*", "*/", "\n", "é"])
    peaks, sizes = [], []
    for n in (1_000_000, 4_000_000):
        text = " ".join(rng.choice(words, n)) + "\n"
        (tmp_path / "big.txt").write_text(text)
        tracemalloc.start()
        c = load_corpus("char", train=str(tmp_path / "big.txt"))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(c.train) + len(c.valid) == len(text) and c.train.dtype == np.uint8
        sizes.append(len(text))
        del c
    per_char = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    assert per_char < 2, per_char  # the ids; the bound is 6 bytes


def test_the_run_keeps_its_token_ids_and_resume_and_eval_use_them(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("some text of mine\nand more of it\n" * 300)
    out = tmp_path / "run"
    args = ["--level", "char", "--train", tmp_path / "t.txt", "--layers", 1, "--hidden", 8,
            "--batch-size", 4, "--bptt", 10, "--max-steps", 5, "--quiet"]  # fmt: skip
    r = CliRunner().invoke(main, ["train", *map(str, args), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "tokens.json").exists() and (out / "tokens.train.npy").exists()

    def no_tokenising(*a, **k):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(DataSource, "load", no_tokenising)
    r = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-steps", "8", "--quiet"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["eval", str(out), "--json"])
    assert r.exit_code == 0, r.output
    monkeypatch.undo()
    # the same size, other bytes: the cache no longer matches, the text is read again
    (tmp_path / "t.txt").write_text("some text of MINE\nand more of it\n" * 300)
    r = CliRunner().invoke(main, ["eval", str(out), "--json"])
    assert r.exit_code == 1 and "the training files changed since the run" in r.output
    assert checkpoint.load(out).train_state["step"] == 8


def test_valid_tokens_limits_validation_not_eval(tmp_path):
    (tmp_path / "t.txt").write_text("some text of mine\nand more of it\n" * 300)
    out = tmp_path / "run"
    args = ["--level", "char", "--train", tmp_path / "t.txt", "--layers", 1, "--hidden", 8,
            "--batch-size", 4, "--bptt", 10, "--max-steps", 5, "--valid-tokens", 200]  # fmt: skip
    r = CliRunner().invoke(main, ["train", *map(str, args), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "validating on the first 200 of 990 valid tokens (--valid-tokens N to change" in r.stderr
    assert "training tokens (9.7 KiB of text, tokenised in " in r.stderr
    c = checkpoint.load(out)
    from lstm_lm.evaluation import evaluate

    nll, n = evaluate(c.model, cache.trained_on(c).valid[:200], 4)
    assert c.train_state["best_valid"] == pytest.approx(nll / n, rel=1e-6)
    r = CliRunner().invoke(main, ["eval", str(out), "--json"])
    assert r.exit_code == 0 and '"tokens": 989' in r.stdout  # eval takes the whole split
    r = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-steps", "6"])
    assert r.exit_code == 0 and "token ids from the cache in" in r.stderr


def test_the_cache_is_memory_mapped_and_checked_by_size_and_time(tmp_path, monkeypatch):
    """A second load maps the ids (nothing read yet) and hashes no file whose size and time
    are unchanged; a file touched but the same is hashed and still matches; --verify hashes
    every file; a cache cut short (no JSON) is rebuilt."""
    import os

    text = tmp_path / "t.txt"
    text.write_text("some text of mine\nand more of it\n" * 300)
    source = DataSource("char", train=str(text))
    first = cache.load(source, tmp_path)
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: hashed.append(p) or real(p))
    again = cache.load(source, tmp_path)
    assert again.cached and isinstance(again.train, np.memmap) and hashed == []
    assert np.array_equal(again.train, first.train) and again.train.dtype == np.uint8
    assert np.array_equal(again.valid, first.valid) and again.vocab == first.vocab
    st = text.stat()
    os.utime(text, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, the same bytes
    assert cache.load(source, tmp_path).cached and len(hashed) == 1
    assert cache.load(source, tmp_path, verify=True).cached and len(hashed) == 2
    (tmp_path / "tokens.json").unlink()  # cut short: the shared cache has them still
    relinked = cache.load(source, tmp_path)
    assert relinked.cached and relinked.cached_in == str(cache.shared_entry(source, None))
    assert (tmp_path / "tokens.json").exists()  # and the run has its own again
    (tmp_path / "tokens.json").unlink()
    shutil.rmtree(cache.shared_entry(source, None))
    assert not cache.load(source, tmp_path).cached  # tokenised and cached again
    assert cache.load(source, tmp_path).cached


def test_train_and_eval_take_verify(tmp_path):
    (tmp_path / "t.txt").write_text("some text of mine\nand more of it\n" * 300)
    out = tmp_path / "run"
    args = ["--level", "char", "--train", tmp_path / "t.txt", "--layers", 1, "--hidden", 8,
            "--batch-size", 4, "--bptt", 10, "--max-steps", 3, "--quiet"]  # fmt: skip
    assert CliRunner().invoke(main, ["train", *map(str, args), "--out", str(out)]).exit_code == 0
    r = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-steps", "4", "--verify"])
    assert r.exit_code == 0 and "token ids from the cache" in r.stderr, r.output
    r = CliRunner().invoke(main, ["eval", str(out), "--verify", "--json"])
    assert r.exit_code == 0, r.output


def test_a_second_run_on_the_same_text_reads_the_shared_cache(tmp_path, monkeypatch):
    """Another run directory, the same file and tokeniser settings: the ids come from the
    user's cache directory, linked into the new run; other settings tokenise anew; two runs
    publishing at once leave one complete entry."""
    text = tmp_path / "t.txt"
    text.write_text("a text of my own\nwith two lines\n" * 400)
    args = ["--train", str(text), "--layers", "1", "--hidden", "8", "--batch-size", "4",
            "--bptt", "10", "--max-steps", "2", "--valid-tokens", "100"]  # fmt: skip
    r = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0 and "tokenised in" in r.stderr, r.output
    r = CliRunner().invoke(main, ["train", *args, "--hidden", "12", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0 and "token ids from the cache in" in r.stderr, r.output
    a, b = (tmp_path / d / "tokens.train.npy" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    r = CliRunner().invoke(main, ["train", *args, "--min-count", "1", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and "tokenised in" in r.stderr  # another vocabulary: anew
    source = DataSource("word", train=str(text), min_count=2)
    entry = cache.shared_entry(source, None)
    corpus = source.load()
    shutil.rmtree(entry)
    cache._publish(entry, corpus, False)
    cache._publish(entry, corpus, False)  # a second publisher finds it there: replaced whole
    assert (entry / "tokens.json").exists()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # none left over
    assert cache.load(source, None).cached
