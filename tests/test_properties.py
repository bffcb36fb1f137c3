"""Properties that must hold for any input, checked on inputs hypothesis draws (and shrinks to
the smallest that fails): text of any Unicode round-trips through the tokenisers, the BPTT
windows cover every token exactly once, option values at their edges."""

import collections

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_lm.cli import main
from lstm_lm.data import DataSource, batchify, build_vocab, num_windows, window
from lstm_lm.tokenise import tokens

# any text a UTF-8 file can hold (no lone surrogates), line breaks and spaces among it
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
WORDY = st.lists(st.sampled_from(["the", "cat", "é", "日本", "\n", " ", "\t", "  ", "a\u00a0b"]),
                 max_size=60).map("".join)  # fmt: skip


def vocab_of(text: str, level: str):
    counts = collections.Counter(
        tokens(text, level, False) if level == "word" else map(chr, tokens(text, level, False))
    )
    return build_vocab(dict(counts), level)


@given(TEXT)
def test_char_level_round_trips_any_text(text):
    vocab = vocab_of(text, "char")
    ids, unknown = vocab.encode(text)
    assert unknown == [] and vocab.decode(ids) == text


@given(st.one_of(TEXT, WORDY))
def test_word_level_round_trips_words_and_lines(text):
    """Words come back as they were, one space between them, each line on its own (a line
    break is <eos>); runs of other whitespace are one space, as the split reads them."""
    vocab = vocab_of(text, "word")
    ids, unknown = vocab.encode(text)
    assert unknown == []
    assert vocab.decode(ids) == "\n".join(" ".join(line.split()) for line in text.split("\n"))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(TEXT.filter(lambda t: t.strip()), st.sampled_from(["char", "word"]))
def test_a_file_of_any_text_reads_back(tmp_path, text, level):
    """Through the streaming tokeniser and the file: what was written is what decodes, a
    final line break added where the file has none (every line ends in one)."""
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    corpus = DataSource(level, train=str(f), valid=str(f)).load()
    text = text if text.endswith("\n") else text + "\n"
    if level == "word":
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    assert corpus.vocab.decode(corpus.train) == text


@given(st.integers(2, 400), st.integers(1, 9), st.integers(1, 12))
def test_windows_cover_every_token_once(n, batch_size, bptt):
    if n // batch_size < 2:
        return  # too short a stream to hold one target
    data = batchify(np.arange(n), batch_size)  # (B, L): stream b holds a contiguous stretch
    assert np.array_equal(data.ravel(), np.arange(data.size))  # in order, the rest dropped
    xs, ys = zip(*(window(data, i, bptt) for i in range(num_windows(data, bptt))))
    assert all(x.shape == y.shape and x.shape[1] <= bptt for x, y in zip(xs, ys))
    assert np.array_equal(np.concatenate(xs, axis=1), data[:, :-1])
    assert np.array_equal(np.concatenate(ys, axis=1), data[:, 1:])  # each target once


@pytest.mark.parametrize("option, good, bad", [
    ("--dropout", ["0", "0.999"], ["1", "-0.01", "nan"]),
    ("--lr", ["1e-9", "100"], ["0", "-1"]),
    ("--batch-size", ["1"], ["0", "-3", "1.5"]),
    ("--max-minutes", ["0.001"], ["0", "-1"]),
    ("--cutoffs", ["1", "2,3"], ["0", "3,2", "2,2", "a", ""]),
    ("--lr-decay", ["1", "0.001"], ["0", "1.01"]),
])  # fmt: skip
def test_option_values_at_their_edges(option, good, bad):
    """Values at the edge of the allowed range pass, those just outside are usage errors
    (exit 2, one line), shown by --dry-run before any data is read."""
    extra = ["--softmax", "adaptive"] if option == "--cutoffs" else []
    for value in good:
        r = CliRunner().invoke(main, ["train", "--dry-run", option, value, *extra])
        assert r.exit_code == 0, (value, r.output)
    for value in bad:
        r = CliRunner().invoke(main, ["train", "--dry-run", option, value, *extra])
        assert r.exit_code == 2 and "Traceback" not in r.output, (value, r.output)
