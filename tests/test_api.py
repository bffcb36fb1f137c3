"""The Python API (lstm_lm.load, Model): docs/library.md's examples run as written, and each
call checked against a known answer or against the command that does the same."""

import json
import math
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import READ, draw_chain, markov_chain, reading_stdin, wait_for

import lstm_lm
from lstm_lm import LMError
from lstm_lm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def ptb_run(tmp_path_factory, ptb_dir):
    """A tiny PTB word model (a few seconds): the vocabulary the page's examples use."""
    out = tmp_path_factory.mktemp("api") / "runs" / "small"
    opts = "--layers 1 --hidden 32 --batch-size 20 --bptt 20 --max-steps 30 --valid-tokens 2000"
    r = invoke("train", "--data", ptb_dir, *opts.split(), "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_the_library_page_runs_as_written(ptb_run, monkeypatch, capsys):
    page = (ROOT / "docs" / "library.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(ptb_run.parent.parent)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/library.md", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "Model('runs/small/best.npz': lstm 1 x 32, word level, 10,000 types)" in printed
    assert namespace["model"].unknown("the zyzzyva said") == ["zyzzyva"]


def test_next_tokens_are_the_chains_transition_probabilities(markov_chain_run):
    """After a stretch of the chain ending in each letter, the k most likely tokens and
    their probabilities are the chain's row for that letter, as far as the model learnt it
    (weighted by how often each letter occurs, the chain's own frequencies)."""
    out, P = markov_chain_run
    pi = markov_chain(6, seed=3)[1]
    model = lstm_lm.load(out)
    letters = "abcdef"
    history = " ".join(letters[i] for i in draw_chain(P, 300, np.random.default_rng(0)))
    kl = np.zeros(6)
    for prev in range(6):
        top = model.next_tokens(f"{history} {letters[prev]}", k=10)
        assert len(top) == len(model.vocab)  # k above V: every token
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
        assert abs(sum(p for _, p in top) - 1) < 1e-9
        q = np.array([dict(top)[letter] for letter in letters])
        kl[prev] = float(np.sum(P[prev] * np.log(P[prev] / q)))
        assert model.next_tokens(f"{history} {letters[prev]}", k=2) == top[:2]
    assert float(pi @ kl) < 0.04, kl
    # the same probabilities as scoring the line gives them, through the batched forward pass
    line = f"{history} a c"
    last = model.score([line])[0].token_logprobs[-2]  # "c" after "... a"; then <eos>
    assert dict(model.next_tokens(f"{history} a", k=7))["c"] == pytest.approx(
        math.exp(last), rel=1e-4
    )
    with pytest.raises(LMError, match="k must be at least 1"):
        model.next_tokens("a", k=0)


def test_generate_is_reproducible_leaves_the_prime_out_and_follows_the_options(markov_chain_run):
    model = lstm_lm.load(markov_chain_run[0])
    a = model.generate("a b", length=40, seed=3)
    assert a == model.generate(prime="a b", length=40, seed=3)  # the contract's names
    assert a != model.generate("a b", length=40, seed=4)
    words = a.split()
    assert len(words) == 40 and set(words) <= set("abcdef") | {"<eos>"} and a.startswith(" ")
    assert "".join(model.stream("a b", 40, seed=3)) == a
    greedy = model.generate("a", length=5, greedy=True)
    assert greedy == model.generate("a", length=5, greedy=True, seed=9)
    first = model.next_tokens("a", k=1)[0][0]
    assert greedy.split()[0] == first
    assert model.generate(length=3, seed=0).split()[0] in "abcdef"  # no prime: a line starts
    rng = np.random.default_rng(5)  # a Generator is drawn from in turn
    one, two = model.generate("a", 10, seed=rng), model.generate("a", 10, seed=rng)
    rng = np.random.default_rng(5)
    assert [one, two] == [model.generate("a", 10, seed=rng) for _ in range(2)] and one != two
    for bad, message in (({"temperature": 0}, "temperature"), ({"top_k": 0}, "top-k"),
                         ({"top_p": 1.5}, "top-p"), ({"length": 0}, "length")):  # fmt: skip
        with pytest.raises(LMError, match=message):
            model.generate("a", **{"length": 3, **bad})
    with pytest.raises(LMError, match="no token of the seed text"):
        model.generate("zzz")


def test_a_conversation_keeps_the_state_or_starts_afresh(markov_chain_run):
    model = lstm_lm.load(markov_chain_run[0])
    chat = model.conversation(keep_state=True, length=6, greedy=True)
    first = "".join(chat.reply("a b c"))
    second = "".join(chat.reply("d e"))
    # the whole text so far, then the new line: what the kept state has read
    assert second == model.generate("a b c" + first + "\nd e", 6, greedy=True)
    fresh = model.conversation(keep_state=False, length=6, seed=1)
    assert "".join(fresh.reply("d e")) == model.generate("d e", 6, seed=1)


def test_perplexity_and_score_are_what_the_commands_print(markov_chain_run, markov_corpus):
    out, _ = markov_chain_run
    data, true_ppl = markov_corpus
    model = lstm_lm.load(out)
    text = (data / "valid.txt").read_text()
    r = invoke("eval", out, "--file", data / "valid.txt", "--batch-size", 1, "--json")
    assert r.exit_code == 0, r.output
    assert model.perplexity(text) == pytest.approx(json.loads(r.stdout)["ppl"], rel=1e-12)
    assert abs(model.perplexity(text) - true_ppl) < 0.05 * true_ppl  # it knows the chain
    lines = ["a b c d", "f e", "a"]
    (data.parent / "lines.txt").write_text("\n".join(lines) + "\n")
    r = invoke("score", out, data.parent / "lines.txt", "--json")
    printed = [json.loads(line) for line in r.stdout.splitlines()]
    scores = model.score(lines)
    assert [s.tokens for s in scores] == [5, 3, 2] == [p["tokens"] for p in printed]
    for s, p in zip(scores, printed):
        assert s.logprob == pytest.approx(p["logprob"], rel=1e-12)
        assert math.isclose(sum(s.token_logprobs), s.logprob, rel_tol=1e-12)
        assert all(isinstance(lp, float) for lp in s.token_logprobs)
        # bits per character of the line and its line break (words one space apart)
        assert s.chars == len(s.text) + 1 and p["bpc"] == pytest.approx(
            -s.logprob / math.log(2) / (len(s.text) + 1), rel=1e-12
        )
    with pytest.raises(LMError, match="list of lines"):
        model.score("a b c")
    with pytest.raises(LMError, match="too few"):
        model.perplexity("a")


def test_encode_decode_and_bad_input(markov_chain_run, tmp_path):
    model = lstm_lm.load(markov_chain_run[0])
    ids = model.encode("a b c\nd")
    assert all(isinstance(i, int) for i in ids) and len(ids) == 5  # the line break: <eos>
    assert model.decode(ids) == "a b c\nd"
    assert model.unknown("a zz b yy") == ["yy", "zz"]
    with pytest.raises(LMError, match="token ids must be in"):
        model.decode([len(model.vocab)])
    with pytest.raises(LMError, match="no such checkpoint"):
        lstm_lm.load(tmp_path / "nothing")
    (tmp_path / "x.npz").write_bytes(b"not an archive")
    with pytest.raises(LMError, match="not an .npz archive"):
        lstm_lm.load(tmp_path / "x.npz")


def test_sample_interactive_from_a_pipe(markov_chain_run):
    out, _ = markov_chain_run
    r = invoke("sample", out, "--interactive", "--length", 4, "--seed", 0,
               input="a b\nc d e\n\nf f\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2, lines  # the empty line ends it: "f f" is never read
    assert lines[0].startswith("a b ") and len(lines[0].split()) == 2 + 4
    assert lines[1].startswith("c d e ") and len(lines[1].split()) == 3 + 4
    kept = invoke("sample", out, "--interactive", "--keep-state", "--length", 4, "--greedy",
                  input="a b\nc d e\n")  # fmt: skip
    assert kept.exit_code == 0, kept.output
    model = lstm_lm.load(out)
    first = model.generate("a b", 4, greedy=True)
    assert kept.stdout.splitlines() == [
        "a b" + first,
        "c d e" + model.generate("a b" + first + "\nc d e", 4, greedy=True),
    ]
    assert invoke("sample", out, "--interactive", input="").exit_code == 0  # end of input
    r = invoke("sample", out, "--keep-state")
    assert r.exit_code == 2 and "--keep-state goes with --interactive" in r.output
    r = invoke("sample", out, "--interactive", "--seed-text", "a")
    assert r.exit_code == 2 and "does not go with" in r.output


@pytest.mark.skipif(platform.machine() not in READ or not Path("/proc/self/syscall").exists(),
                    reason="reads Linux's /proc/PID/syscall on x86_64 or aarch64")  # fmt: skip
def test_ctrl_c_ends_an_interactive_sample_cleanly(markov_chain_run, as_from_a_terminal):
    """Ctrl-C while it waits for a line: the session ends with exit 0, what was printed
    stays, no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "lstm_lm", "sample", str(markov_chain_run[0]),
                          "--interactive", "--length", "3", "--seed", "0"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=as_from_a_terminal)  # fmt: skip
    p.stdin.write(b"a b\n")
    p.stdin.flush()
    assert p.stdout.readline().startswith(b"a b ")  # the first continuation
    wait_for(lambda: reading_stdin(p.pid), "the next line to be read")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and b"Traceback" not in err, err
