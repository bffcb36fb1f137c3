"""Every command through CliRunner: outputs, options and every bad input."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import __version__
from lstm_lm.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("download", "train", "eval", "sample", "info", "gradcheck", "bench"):
        assert cmd in r.output


def test_version_and_module_entry():
    assert invoke("--version").output.strip() == f"lstm-lm, version {__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "lstm_lm", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout


def test_eval_table_and_json(tiny_run):
    r = invoke("eval", tiny_run)
    assert r.exit_code == 0 and "perplexity" in r.stdout
    r = invoke("eval", tiny_run, "--split", "valid", "--batch-size", 4, "--json")
    res = json.loads(r.stdout)
    assert set(res) == {"split", "tokens", "nll", "ppl", "bpc"} and res["split"] == "valid"
    assert res["ppl"] == pytest.approx(np.exp(res["nll"]))


def test_eval_on_a_file_warns_about_unknown_words(tiny_run, tmp_path):
    f = tmp_path / "other.txt"
    f.write_text("a b c zebra a b\n")
    r = invoke("eval", tiny_run, "--file", f, "--json")
    assert r.exit_code == 0
    # this vocabulary has no <unk>: "zebra" is dropped, leaving 6 tokens with <eos>, 5 targets
    assert json.loads(r.stdout)["tokens"] == 5
    assert "unknown tokens are skipped: 'zebra'" in r.stderr


def test_sample_is_reproducible_and_streams_words(tiny_run):
    a = invoke("sample", tiny_run, "--seed-text", "a b c", "--length", 15, "--seed", 4)
    b = invoke("sample", tiny_run, "--seed-text", "a b c", "--length", 15, "--seed", 4)
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert a.stdout.startswith("a b c ")
    g1 = invoke("sample", tiny_run, "--seed-text", "a", "--greedy", "--length", 8)
    g2 = invoke("sample", tiny_run, "--seed-text", "a", "--greedy", "--length", 8, "--seed", 99)
    assert g1.stdout == g2.stdout
    r = invoke(
        "sample", tiny_run, "--seed-text", "a", "--num", 2, "--top-k", 2, "--temperature", 0.5
    )
    assert r.exit_code == 0 and r.stdout.count("\n") >= 2


def test_sample_seed_file_and_unknown_words(tiny_run, tmp_path):
    f = tmp_path / "seed.txt"
    f.write_text("a b qqq")
    r = invoke("sample", tiny_run, "--seed-file", f, "--length", 3)
    assert r.exit_code == 0
    assert "warning: 1 unknown tokens are skipped: 'qqq'" in r.stderr


def test_info_shows_config_and_curve(tiny_run):
    r = invoke("info", tiny_run)
    assert r.exit_code == 0
    for text in ("lstm 1 x 16", "parameters", "best valid ppl", "valid perplexity by epoch", "█"):
        assert text in r.stdout


def test_gradcheck_command():
    r = invoke(
        "gradcheck",
        "--layers",
        2,
        "--hidden",
        4,
        "--bptt",
        3,
        "--dropout",
        0.2,
        "--input-dropout",
        0.3,
    )
    assert r.exit_code == 0, r.output
    assert "input dropout 0.3" in r.stdout
    assert "l1.Wo" in r.stdout and "state.l1.1" in r.stdout and "FAIL" not in r.stdout


def test_bench_command_json():
    r = invoke(
        "bench",
        "--vocab",
        50,
        "--hidden",
        8,
        "--layers",
        1,
        "--batch-size",
        4,
        "--bptt",
        5,
        "--repeats",
        2,
        "--literal",
        "--json",
    )
    assert r.exit_code == 0, r.output
    fast, literal = json.loads(r.stdout)
    assert fast["train_tokens_per_s"] > 0 and fast["eval_tokens_per_s"] > 0
    assert literal["cell"] == "lstm (literal)" and literal["train_tokens_per_s"] > 0


# --- bad input: one line, non-zero exit, no traceback ----------------------------------------


def assert_clean_error(r, code, *fragments):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    for f in fragments:
        assert f in r.output, r.output


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--hidden", "0"], "--hidden"),
        (["train", "--batch-size", "-3"], "--batch-size"),
        (["train", "--dropout", "1.5"], "--dropout"),
        (["train", "--input-dropout", "1"], "--input-dropout"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--optimizer", "rmsprop"], "--optimizer"),
        (["bench", "--bptt", "0"], "--bptt"),
    ],
)
def test_nonsense_option_values(args, fragment):
    assert_clean_error(invoke(*args), 2, fragment)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-k", "0"], "--top-k"),
        (["--seed-text", ""], "seed text is empty"),
        (["--seed-text", "   "], "seed text is empty"),
        (["--length", "0"], "--length"),
    ],
)
def test_bad_sample_options(tiny_run, args, fragment):
    assert_clean_error(invoke("sample", tiny_run, *args), 2, fragment)


def test_seed_text_with_no_known_token(tiny_run):
    assert_clean_error(
        invoke("sample", tiny_run, "--seed-text", "zzz", "--length", 3),
        1,
        "no token of the seed text is in the model's vocabulary",
    )


def test_missing_checkpoint(tmp_path):
    for cmd in ("eval", "sample", "info"):
        assert_clean_error(invoke(cmd, tmp_path / "nope.npz"), 1, "no such checkpoint")


def test_truncated_checkpoint(tiny_run, tmp_path):
    data = (tiny_run / "best.npz").read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: len(data) // 2])
    assert_clean_error(invoke("eval", bad), 1, "truncated or corrupted")


def test_corrupted_checkpoint(tiny_run, tmp_path):
    data = bytearray((tiny_run / "best.npz").read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    assert_clean_error(invoke("info", bad), 1, str(bad))


def test_not_an_npz(tmp_path):
    f = tmp_path / "text.npz"
    f.write_text("hello")
    assert_clean_error(invoke("eval", f), 1, "not an .npz archive")


def test_npz_that_is_not_ours(tmp_path):
    f = tmp_path / "other.npz"
    np.savez(f, weights=np.arange(4))
    assert_clean_error(invoke("sample", f), 1, "not an lstm-lm checkpoint")


class Exploit:
    """Unpickling this would create a file: proof that nothing was executed."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_npz_is_refused_and_never_executed(tmp_path):
    target = tmp_path / "pwned"
    f = tmp_path / "evil.npz"
    np.savez(f, meta=np.array([Exploit(str(target))], dtype=object))
    pickle.dumps(Exploit(str(target)))  # the payload is real
    assert_clean_error(invoke("eval", f), 1, "pickled objects", "refuses")
    assert not target.exists()


def test_vocabulary_mismatch_on_resume(markov_corpus, tmp_path):
    data, _ = markov_corpus
    mine = tmp_path / "data"
    mine.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (mine / name).write_text((data / name).read_text())
    out = tmp_path / "run"
    r = invoke(
        "train",
        "--data",
        mine,
        "--layers",
        1,
        "--hidden",
        4,
        "--max-steps",
        2,
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0
    (mine / "train.txt").write_text((data / "train.txt").read_text() + "brand new words\n")
    assert_clean_error(
        invoke("train", "--resume", out, "--max-steps", 4), 1, "does not match the checkpoint"
    )


def test_resume_refuses_changed_model_options(tiny_run):
    assert_clean_error(
        invoke("train", "--resume", tiny_run, "--hidden", 64), 2, "--resume continues"
    )


def test_unwritable_run_directory(markov_corpus, tmp_path):
    data, _ = markov_corpus
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_clean_error(
        invoke("train", "--data", data, "--max-steps", 1, "--out", blocker / "run"),
        1,
        "cannot write",
    )


def test_missing_training_file(tmp_path):
    assert_clean_error(invoke("train", "--train", tmp_path / "none.txt"), 1, "no such file")


def test_corpus_too_small(tmp_path):
    (tmp_path / "t.txt").write_text("a b c\n")
    assert_clean_error(
        invoke("train", "--train", tmp_path / "t.txt", "--valid", tmp_path / "t.txt"),
        1,
        "too small",
    )
