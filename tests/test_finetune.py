"""Fine-tuning (`train --init-from`): a trained model on new text, its vocabulary kept or
extended, its origin recorded."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import OptionError, archive, checkpoint, runs
from lstm_lm.cli import main
from lstm_lm.data import DataSource
from lstm_lm.runs import init_run

SMALL = ["--layers", "1", "--hidden", "32", "--batch-size", "16", "--bptt", "20", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def steps_to(run, target: float) -> int:
    """The first evaluation's step at which the run's valid perplexity is within 5% of target
    (a step past the run where it never is)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next((m["step"] for m in lines if m["valid_ppl"] <= 1.05 * target), 10**9)


def test_a_model_of_one_chain_learns_a_related_one_faster_than_from_scratch(
    markov_chain_run, related_chain_corpus, tmp_path
):
    """Chain B mixes chain A (the model's) with another: fine-tuned, the model comes within 5%
    of B's true perplexity in fewer steps than the same model from scratch."""
    run_a, _ = markov_chain_run
    data, true_b = related_chain_corpus
    schedule = ["--max-steps", 300, "--eval-every", 10, "--epochs", 100, "--decay-after", 100]
    r = invoke("train", "--init-from", run_a, "--data", data, *schedule, "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--data", data, *SMALL, "--optimizer", "adam", "--lr", 0.01, *schedule,
               "--out", tmp_path / "scratch")  # fmt: skip
    assert r.exit_code == 0, r.output
    fine, scratch = steps_to(tmp_path / "ft", true_b), steps_to(tmp_path / "scratch", true_b)
    assert fine <= 300 and fine < scratch, (fine, scratch)
    st = archive.read_meta(tmp_path / "ft" / "last.npz")["train_state"]
    assert st["init_from"]["path"] == str((run_a / "best.npz").absolute())
    assert st["init_from"]["step"] == archive.read_meta(run_a / "best.npz")["train_state"]["step"]


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("char")
    (d / "old.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    (d / "new.txt").write_text("THE QUICK BROWN FOX — jumps over the lazy dog!\n" * 200)
    r = invoke("train", "--level", "char", "--train", d / "old.txt", *SMALL, "--max-steps", 40,
               "--out", d / "run")  # fmt: skip
    assert r.exit_code == 0, r.output
    return d


def test_unknown_characters_stop_the_run_listing_them(char_model, tmp_path):
    d = char_model
    r = invoke("train", "--init-from", d / "run", "--train", d / "new.txt", "--out", tmp_path / "x")
    assert r.exit_code == 1 and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    listed = "17 token types of the new text are not in the model's vocabulary: 'O' 400, '!' 200"
    assert listed in errors[0]
    assert "'—' 200" in errors[0] and "'!' 200" in errors[0] and "--extend-vocab" in errors[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extend_vocab_keeps_the_old_texts_probabilities(char_model, tmp_path, dtype):
    d = char_model
    old = checkpoint.load(d / "run", dtype=dtype)
    source = DataSource("char", train=str(d / "new.txt"))
    run = init_run(d / "run", source, {}, {"dtype": dtype}, tmp_path / "x", extend_vocab=True)
    new_chars = set((d / "new.txt").read_text()) - set(old.vocab.itos)
    assert set(run.corpus.vocab.itos[len(old.vocab) :]) == new_chars and len(new_chars) == 17
    assert run.corpus.vocab.itos[: len(old.vocab)] == old.vocab.itos  # old ids kept
    W_old, W_new = old.model.params["l0.W"], run.model.params["l0.W"]
    assert np.array_equal(W_new[: len(W_old)], W_old)  # old rows untouched
    assert np.array_equal(run.model.params["Wy"][:, : len(old.vocab)], old.model.params["Wy"])
    ids, _ = old.vocab.encode((d / "old.txt").read_text()[:3000])
    x, y = ids[None, :-1], ids[None, 1:]
    before, _ = old.model.token_nll(x, y, old.model.init_state(1))
    after, _ = run.model.token_nll(x, y, run.model.init_state(1))
    eps = np.finfo(dtype).eps
    assert np.abs(after - before).max() <= 4 * eps * max(1.0, np.abs(before).max())
    r = invoke("train", "--init-from", d / "run", "--train", d / "new.txt", "--extend-vocab",
               "--max-steps", 30, "--out", tmp_path / "y")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "added 17 token types to the vocabulary: 'O' 400, '!' 200, 'B' 200" in r.stderr


def test_unknown_words_become_unk_and_are_counted(tmp_path):
    (tmp_path / "old.txt").write_text("a b c d e f g\na b c d e\n" * 200)
    r = invoke("train", "--train", tmp_path / "old.txt", "--max-vocab", 5, *SMALL,
               "--max-steps", 5, "--out", tmp_path / "run")  # fmt: skip
    assert r.exit_code == 0, r.output
    f = tmp_path / "new.txt"
    f.write_text("a b c zebra a b\nyak a b zebra\n" * 100)
    r = invoke("train", "--init-from", tmp_path / "run", "--train", f, "--max-steps", 5,
               "--out", tmp_path / "ft")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "300 tokens of 2 types are not in the model's vocabulary and become <unk>: " in r.stderr
    assert "'zebra' 200, 'yak' 100" in r.stderr
    r = invoke("train", "--init-from", tiny_run_like := tmp_path / "run", "--train", f, "--out",
               tmp_path / "ft2", "--extend-vocab", "--max-steps", 5)  # fmt: skip
    assert r.exit_code == 0 and tiny_run_like.exists()
    # asked for, they are added even though <unk> could stand for them
    tuned, old = checkpoint.load(tmp_path / "ft2").vocab, checkpoint.load(tmp_path / "run").vocab
    assert len(tuned) == len(old) + 2 and {"zebra", "yak"} <= set(tuned.itos)
    assert "added 2 token types to the vocabulary: 'zebra' 200, 'yak' 100" in r.stderr


def test_a_fine_tuned_run_resumes_bit_for_bit(tiny_run, tmp_path):
    f = tmp_path / "new.txt"
    f.write_text("a b c d e f\nf e d c b a\n" * 300)
    args = ["--init-from", tiny_run, "--train", f, "--optimizer", "sgd", "--lr", 0.5, "--quiet"]
    assert invoke("train", *args, "--max-steps", 12, "--out", tmp_path / "a").exit_code == 0
    assert invoke("train", *args, "--max-steps", 8, "--out", tmp_path / "b").exit_code == 0
    r = invoke("train", "--resume", tmp_path / "b", "--max-steps", 12, "--quiet")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "a" / "last.npz") as a, np.load(tmp_path / "b" / "last.npz") as b:
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files if k != "meta")
    c = checkpoint.load(tmp_path / "b" / "last.npz")
    assert c.train_config.optimizer == "sgd" and c.train_state["step"] == 12
    r = invoke("eval", tmp_path / "b", "--json")  # its data, encoded with its vocabulary
    assert r.exit_code == 0 and json.loads(r.stdout)["split"] == "valid"


@pytest.mark.parametrize("args, message", [
    (["--hidden", 64], "cannot give --hidden"),
    (["--preset", "small"], "cannot give --preset"),
    (["--level", "char"], "cannot give --level"),
    (["--tied"], "cannot give --tied"),  # it shapes the model, as --hidden does
    (["--resume", "RUN"], "--resume does not go with --init-from"),
])  # fmt: skip
def test_options_that_do_not_go_with_init_from(tiny_run, tmp_path, args, message):
    args = [tiny_run if a == "RUN" else a for a in args]
    r = invoke("train", "--init-from", tiny_run, *args, "--out", tmp_path / "x")
    assert r.exit_code == 2 and message in r.output, r.output
    r = invoke("train", "--extend-vocab", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--extend-vocab goes with --init-from" in r.output


def test_a_plan_reads_the_header_alone_and_the_same_rules_hold_from_python(tiny_run, tmp_path):
    """runs.plan decides what train would start from the checkpoint's header; resume_run and
    init_run called from Python refuse what the command line refuses, with its words."""
    p = runs.plan({"max_steps": 9, "hidden": None}, resume=tiny_run)
    assert p.kind == "resume" and p.values["max_steps"] == 9 and p.origins["max_steps"] == "option"
    assert p.origins["hidden"].startswith("the run (") and p.out == tiny_run
    with pytest.raises(OptionError, match="only --epochs.* may change .got --hidden"):
        runs.plan({"hidden": 64}, resume=tiny_run)
    with pytest.raises(OptionError, match="only --epochs.* may change .got --lr"):
        runs.resume_run(tiny_run, {"lr": 0.5}, tmp_path / "r")
    source = DataSource("word", train=str(tmp_path / "t.txt"))
    with pytest.raises(OptionError, match="cannot give --tied"):
        runs.init_run(tiny_run, source, {"tied": True}, out=tmp_path / "i")
