"""Using a trained model: score text line by line, export to safetensors, nucleus sampling."""

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import checkpoint
from lstm_lm.cli import main
from lstm_lm.sampling import draw
from lstm_lm.score import score_lines, split_lines


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


LINES = ["a b c", "", "b e f b e a d d b", "f", "a zebra b", "c " * 60]  # one longer than T


def test_lines_scored_together_equal_lines_scored_alone(markov_chain_run):
    out, _ = markov_chain_run
    c = checkpoint.load(out, dtype="float64")
    together = score_lines(c.model, c.vocab, LINES, batch_size=4, bptt=7)
    for s, line in zip(together, LINES):
        alone = score_lines(c.model, c.vocab, [line], batch_size=1, bptt=35)[0]
        assert s.text == line and s.tokens == alone.tokens
        assert abs(s.logprob - alone.logprob) < 1e-9
    assert [s.tokens for s in together] == [4, 1, 10, 2, 3, 61]  # tokens and closing <eos>
    assert together[4].unknown == ["zebra"]  # no <unk> in this vocabulary: skipped, listed


def test_a_line_scores_what_eval_gives_after_an_empty_line(markov_chain_run, tmp_path):
    """From a fresh state fed <eos>, the line's tokens and its <eos>: eval --file of a file
    holding an empty line and then that line has the same targets from the same state."""
    out, _ = markov_chain_run
    for line in [line for line in LINES if line]:  # eval refuses a file of blank lines
        f = tmp_path / "one.txt"
        f.write_text("\n" + line + "\n")
        ev = json.loads(invoke("eval", out, "--file", f, "--json").stdout)
        r = invoke("score", out, "-", "--json", input=line + "\n")
        sc = json.loads(r.stdout)
        assert sc["tokens"] == ev["tokens"]
        # float32 sums in windows of other lengths: equal to their rounding
        assert sc["logprob"] == pytest.approx(-ev["nll"] * ev["tokens"], rel=1e-6)


def test_scores_are_the_true_log_probabilities_of_the_chain(markov_chain_run):
    """The known answer: a model that learned the chain gives each next letter its true
    probability P[previous, next], within a few hundredths of a nat on average."""
    out, P = markov_chain_run
    c = checkpoint.load(out)
    rng = np.random.default_rng(11)
    letters = "abcdef"
    seq = [rng.integers(6)]
    for _ in range(3000):
        seq.append(rng.choice(6, p=P[seq[-1]]))
    s = score_lines(c.model, c.vocab, [" ".join(letters[i] for i in seq)])[0]
    model = np.array(s.token_logprobs[1:-1])  # each transition: not the first letter, not the <eos>
    true = np.log(P[seq[:-1], seq[1:]])
    assert abs(model.mean() - true.mean()) < 0.03, (model.mean(), true.mean())
    assert np.abs(model - true).mean() < 0.1
    assert np.corrcoef(model, true)[0, 1] > 0.95


def test_score_output(markov_chain_run):
    out, _ = markov_chain_run
    text = "\n".join(LINES[:3]) + "\n"
    r = invoke("score", out, "-", input=text)
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [row[3] for row in rows] == LINES[:3] and [row[1] for row in rows] == ["4", "1", "10"]
    lp = [float(row[0]) for row in rows]
    assert all(math.isclose(float(row[2]), math.exp(-x / int(row[1])), rel_tol=1e-4)
               for row, x in zip(rows, lp))  # fmt: skip
    total = -sum(lp) / 15
    assert f"3 lines, 15 tokens, perplexity {math.exp(total):,.2f}" in r.stderr
    r10 = invoke("score", out, "-", "--log10", "--per-token", input=text)
    rows10 = [line.split("\t") for line in r10.stdout.splitlines()]
    for row, row10 in zip(rows, rows10):
        assert float(row10[0]) == pytest.approx(float(row[0]) / math.log(10), abs=2e-6)
        per_token = [float(x) for x in row10[4].split()]
        assert len(per_token) == int(row[1])
        assert sum(per_token) == pytest.approx(float(row10[0]), abs=1e-5)
    objs = [
        json.loads(x)
        for x in invoke("score", out, "-", "--json", input=text).stdout.split("\n")[:-1]
    ]
    assert [set(o) for o in objs] == [{"line", "tokens", "logprob", "ppl", "bpc", "unknown"}] * 3


def test_split_lines():
    assert split_lines("a\n\nb\n") == ["a", "", "b"] and split_lines("a\nb") == ["a", "b"]


def test_export_and_use_the_safetensors_file(markov_chain_run, tmp_path):
    from safetensors import safe_open

    out, _ = markov_chain_run
    f = tmp_path / "model.safetensors"
    r = invoke("export", out, f)
    assert r.exit_code == 0, r.output
    with safe_open(str(f), framework="numpy") as st:
        names, meta = set(st.keys()), st.metadata()
        assert st.get_tensor("l0.Wf").shape == (32 + 7, 32)  # (H + V, H), rows [h; x]
    assert names == {f"l0.{w}{g}" for w in "Wb" for g in "fico"} | {"Wy", "by"}
    assert json.loads(meta["config"])["hidden"] == 32
    assert json.loads(meta["vocab"])["itos"][:2] == ["<eos>", "a"]
    for args in (["eval", "--json"], ["score", "-", "--json"], ["sample", "--seed", 3]):
        a = invoke(args[0], out, *args[1:], input="a b c\n")
        b = invoke(args[0], f, *args[1:], input="a b c\n")
        assert a.exit_code == b.exit_code == 0 and a.stdout == b.stdout
    assert "best valid ppl" in invoke("info", f).stdout
    r = invoke("train", "--resume", f)
    assert r.exit_code == 1 and "an exported model holds no training state" in r.output


def test_export_refuses_another_suffix_and_says_what_is_missing(markov_chain_run, tmp_path,
                                                                monkeypatch):  # fmt: skip
    out, _ = markov_chain_run
    r = invoke("export", out, tmp_path / "model.npz")
    assert r.exit_code == 2 and "does not end in .safetensors" in r.output
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if the extra were not installed
    r = invoke("export", out, tmp_path / "model.safetensors")
    assert r.exit_code == 1 and "pip install 'lstm-lm[export]'" in r.output
    assert not (tmp_path / "model.safetensors").exists()


def test_top_p_keeps_the_nucleus():
    logits = np.log(np.array([0.05, 0.5, 0.15, 0.3]))
    rng = np.random.default_rng(0)
    drawn = {draw(logits, rng, top_p=0.79) for _ in range(2000)}
    assert drawn == {1, 3}  # 0.5 + 0.3 reach 0.79: the two most likely
    assert {draw(logits, rng, top_p=0.81) for _ in range(2000)} == {1, 3, 2}
    assert {draw(logits, rng, top_p=1e-9) for _ in range(100)} == {1}  # greedy in the limit
    a = [draw(logits, np.random.default_rng(5), top_p=1.0) for _ in range(50)]
    b = [draw(logits, np.random.default_rng(5)) for _ in range(50)]
    assert a == b  # top-p 1 keeps everything


def test_sample_top_p(markov_chain_run):
    out, _ = markov_chain_run
    r = invoke("sample", out, "--seed-text", "a", "--top-p", 0.9, "--length", 10, "--seed", 1)
    assert r.exit_code == 0 and r.stdout.startswith("a ")
    r = invoke("sample", out, "--top-p", 0.9, "--greedy")
    assert r.exit_code == 2 and "--greedy does not go with --top-p" in r.output
    r = invoke("sample", out, "--top-p", 0)
    assert r.exit_code == 2 and "--top-p" in r.output
