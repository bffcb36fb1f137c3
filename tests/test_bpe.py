"""--level bpe: a byte-level BPE vocabulary learnt from the training text, which any text
round-trips through exactly, kept in the checkpoint as JSON, used by every command."""

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module
from hypothesis import given, settings
from hypothesis import strategies as st

import lstm_lm
from lstm_lm import LMError, bpe
from lstm_lm.cli import main
from lstm_lm.data import DataSource, Vocab

require_module("tokenizers", "bpe")

CODE = "".join(
    f"def f{i}(x):\n    return x * {i}  # naïve, ü, 日本\n\nclass C{i}:\n    pass\n"
    for i in range(300)
)


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def vocab():
    tokenizer = bpe.learn([CODE], 400)
    return Vocab(bpe.vocabulary(tokenizer), "bpe", tokenizer=tokenizer)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=200))
def test_any_text_round_trips_and_streams_whole_characters(vocab, text):
    ids, unknown = vocab.encode(text)
    assert unknown == [] and vocab.decode(ids) == text
    assert "".join(vocab.pieces(ids)) == text  # a character split between tokens comes whole
    assert vocab.characters(ids) == len(text)  # what bits per character divide by


# Text where white space and line breaks meet in every way the pre-tokenizer treats apart, and
# a vocabulary learnt from such text, which has tokens for their runs.
BITS = ["a", "b", "é", "日", "1", "'s", ".", "_", " ", "  ", "\t", "\n", "\r\n", "\u00a0",
        "\u2028", "\x1c"]  # fmt: skip
SPACEY = st.lists(st.sampled_from(BITS), max_size=150).map("".join)


@pytest.fixture(scope="module")
def spacey():
    tokenizer = bpe.learn(["".join(np.random.default_rng(0).choice(BITS, 40_000))], 1000)
    return Vocab(bpe.vocabulary(tokenizer), "bpe", tokenizer=tokenizer)


@settings(max_examples=300, deadline=None)
@given(SPACEY)
def test_a_text_cut_at_any_cut_encodes_as_the_whole(spacey, text):
    encode = spacey.codec.encode
    for m in bpe.CUT.finditer(text):
        at = m.end()
        assert [*encode(text[:at]), *encode(text[at:])] == encode(text).tolist(), at


@settings(max_examples=300, deadline=None)
@given(SPACEY, st.lists(st.integers(0, 300), max_size=8), st.integers(1, 3))
def test_a_text_in_pieces_encodes_as_the_whole(spacey, text, cuts, threads):
    """Wherever the pieces end (a corpus is read 4 MiB at a time), the ids are those of the
    whole text: bpe.CUT splits it only where the pre-tokenizer does."""
    ends = sorted({min(c, len(text)) for c in cuts} | {len(text)})
    pieces = [text[a:b] for a, b in zip([0, *ends], ends)]
    parts = list(spacey.codec.encode_pieces(pieces, threads))
    whole = spacey.codec.encode(text)
    assert np.array_equal(np.concatenate([whole[:0], *parts]), whole)


@settings(max_examples=200, deadline=None)
@given(st.one_of(SPACEY, st.text(st.characters(exclude_categories=["Cs"]), max_size=200)))
def test_the_same_ids_as_tokenizers_own_encoder(vocab, spacey, text):
    """tiktoken encodes (faster) what tokenizers learnt: the same ids as tokenizers gives."""
    import tokenizers

    for v in (vocab, spacey):
        theirs = tokenizers.Tokenizer.from_str(v.tokenizer).encode(text).ids
        assert v.encode(text)[0].tolist() == theirs


def test_the_vocabulary_round_trips_as_json(vocab):
    again = Vocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab and isinstance(vocab.to_json()["tokenizer"], dict)  # JSON, not text
    assert len(vocab) > 256 and vocab.boundary() == vocab.encode("\n")[0][0]


def test_default_vocabulary_grows_with_the_text():
    assert bpe.default_vocab_size(10) == bpe.MIN_VOCAB
    assert bpe.default_vocab_size(1_000_000) == 64 * round(4000 / 64)  # 4 sqrt(chars)
    assert bpe.default_vocab_size(10**12) == bpe.MAX_VOCAB


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    (d / "code.txt").write_text(CODE)
    out = d / "run"
    r = invoke("train", "--level", "bpe", "--train", d / "code.txt", "--vocab-size", 400,
               "--layers", 1, "--hidden", 32, "--batch-size", 8, "--bptt", 20, "--epochs", 2,
               "--optimizer", "adam", "--lr", "0.01", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "learnt a byte-level BPE vocabulary of" in r.stderr
    return out


def test_every_command_uses_the_runs_tokens(bpe_run, tmp_path):
    r = invoke("sample", bpe_run, "--seed-text", "def f", "--length", 60, "--seed", 0)
    assert r.exit_code == 0 and r.stdout.startswith("def f")
    assert not set("ĠĊ") & set(r.stdout)  # text, never the byte tokens' stand-ins
    model = lstm_lm.load(bpe_run)
    lines = ["def f3(x):", "    return x * 3  # naïve"]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    r = invoke("score", bpe_run, tmp_path / "lines.txt", "--json")
    scored = [json.loads(line) for line in r.stdout.splitlines()]
    for line, s in zip(lines, scored):  # bits per character of the line and its break
        assert s["bpc"] == pytest.approx(-s["logprob"] / math.log(2) / (len(line) + 1))
    assert scored[0]["bpc"] < scored[1]["bpc"] + 10  # both scored
    (tmp_path / "f.txt").write_text(CODE[:3000])
    r = invoke("eval", bpe_run, "--file", tmp_path / "f.txt", "--batch-size", 1, "--json")
    res = json.loads(r.stdout)
    ids = model.encode(CODE[:3000])
    first = len(model.decode(ids[:1]))  # every token but the first is scored
    assert res["tokens"] == len(ids) - 1
    assert res["bpc"] == pytest.approx(res["nll"] * res["tokens"] / math.log(2) / (3000 - first))
    assert model.perplexity(CODE[:3000]) == pytest.approx(res["ppl"], rel=1e-9)
    r = invoke("export", bpe_run, tmp_path / "m.safetensors")
    assert r.exit_code == 0, r.output
    assert lstm_lm.load(tmp_path / "m.safetensors").vocab == model.vocab
    r = invoke("viz", bpe_run, "--text", "def f(x):\n    return x", "--out", tmp_path / "v.html")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--init-from", bpe_run, "--train", tmp_path / "f.txt", "--max-steps", 3,
               "--quiet", "--out", tmp_path / "ft")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert lstm_lm.load(tmp_path / "ft").vocab == model.vocab  # the model's tokens kept


def test_the_run_learns_the_text(bpe_run):
    """Two epochs of repetitive code: well below the bits of a uniform byte (8)."""
    r = invoke("eval", bpe_run, "--json")
    assert json.loads(r.stdout)["bpc"] < 2.0, r.stdout


def test_bad_options_and_a_missing_library(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text(CODE[:2000])
    r = invoke("train", "--train", tmp_path / "t.txt", "--vocab-size", 500, "--dry-run")
    assert r.exit_code == 2 and "--vocab-size sets a bpe vocabulary" in r.output
    r = invoke("train", "--level", "bpe", "--train", tmp_path / "t.txt", "--min-count", 3,
               "--dry-run")  # fmt: skip
    assert r.exit_code == 2 and "with --level bpe give --vocab-size N" in r.output
    r = invoke("train", "--level", "bpe", "--train", tmp_path / "t.txt", "--vocab-size", 100)
    assert r.exit_code == 2  # a byte-level vocabulary has 256 tokens to start with
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    r = invoke("train", "--level", "bpe", "--train", tmp_path / "t.txt", "--out", tmp_path / "r")
    assert r.exit_code == 1 and "--level bpe needs the tokenizers package: pip install" in r.output
    assert "Traceback" not in r.output
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    with pytest.raises(LMError, match="--level bpe needs the tiktoken package: pip install"):
        bpe.Codec(("a", "Ċ"))
    assert DataSource("bpe", train=str(tmp_path / "t.txt")).vocab_size is None
    assert np.iinfo(np.uint16).max > bpe.MAX_VOCAB  # ids of any default vocabulary fit 2 bytes


def test_a_second_run_reads_the_tokens_the_first_made(tmp_path):
    """The second run on the same text reads the ids from the token cache: it says neither
    that it learnt a vocabulary nor that it encoded, which it did not."""
    (tmp_path / "code.txt").write_text(CODE)
    args = ["--level", "bpe", "--train", tmp_path / "code.txt", "--vocab-size", 300, "--layers", 1,
            "--hidden", 8, "--batch-size", 4, "--bptt", 10, "--max-steps", 1]  # fmt: skip
    first = invoke("train", *args, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert "learnt a byte-level BPE vocabulary of 300 tokens" in first.stderr
    assert "MB into " in first.stderr and "tokenised in" in first.stderr
    second = invoke("train", *args, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    assert "token ids from the cache in" in second.stderr
    assert "learnt" not in second.stderr and "MB into" not in second.stderr
    assert lstm_lm.load(tmp_path / "b").vocab == lstm_lm.load(tmp_path / "a").vocab
