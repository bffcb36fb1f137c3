"""Every command through CliRunner: outputs, options and every bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import __version__, cache, checkpoint
from lstm_lm.cli import main, views
from lstm_lm.config import TrainConfig


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in (
        "download",
        "train",
        "eval",
        "sample",
        "score",
        "export",
        "info",
        "gradcheck",
        "bench",
    ):
        assert cmd in r.output


def test_version_and_module_entry():
    assert invoke("--version").output.strip() == f"lstm-lm, version {__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "lstm_lm", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout


def stepwise_nll(model, ids) -> float:
    """Mean NLL of ids[1:], each given all before it, one token at a time through
    `model.step` (batch 1, float64 log-softmax): a path independent of `evaluate`'s windows."""
    state, total = model.init_state(1), 0.0
    for t in range(len(ids) - 1):
        logits, state = model.step(ids[t : t + 1], state)
        z = logits[0] - logits[0].max()
        total += np.log(np.exp(z).sum()) - z[ids[t + 1]]
    return total / (len(ids) - 1)


def test_eval_table_and_json(tiny_run):
    r = invoke("eval", tiny_run)
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.stdout and "20,000" in r.stdout  # every target of the test split
    r = invoke("eval", tiny_run, "--split", "valid", "--json")
    res = json.loads(r.stdout)
    assert set(res) == {"split", "tokens", "nll", "ppl", "bpc"}
    assert (res["split"], res["tokens"]) == ("valid", 4000)
    c = checkpoint.load(tiny_run)
    # bits per character of the text scored: all of valid.txt ("a b ... f\n", one line) but
    # its first letter and the space after it
    text = (Path(c.meta["data"]["data"]) / "valid.txt").read_text()
    chars = len(text) - 2
    assert res["bpc"] == pytest.approx(res["nll"] * 4000 / np.log(2) / chars, rel=1e-12)
    expected = stepwise_nll(c.model, cache.trained_on(c).valid)
    assert res["nll"] == pytest.approx(expected, rel=1e-5)
    assert res["ppl"] == pytest.approx(np.exp(expected), rel=1e-5)
    for batch in (1, 3, 4, 100, 4000):  # every token but the first scored, whatever the batch
        r = invoke("eval", tiny_run, "--split", "valid", "--batch-size", batch, "--json")
        res = json.loads(r.stdout)
        assert res["tokens"] == 4000
        if batch <= 100:  # streams of 39 tokens or more, each primed with those before it
            assert res["nll"] == pytest.approx(expected, rel=1e-5)
    r = invoke("eval", tiny_run, "--split", "valid", "--batch-size", 4001)
    assert r.exit_code == 1 and "valid: too few tokens (4001) for batch size 4001" in r.output


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
    assert len(a.stdout.split()) + a.stdout.count("\n") - 1 == 3 + 15  # <eos>: a line break
    c = invoke("sample", tiny_run, "--seed-text", "a b c", "--length", 15, "--seed", 5)
    assert c.stdout != a.stdout  # the seed is used
    g1 = invoke("sample", tiny_run, "--seed-text", "a", "--greedy", "--length", 8)
    g2 = invoke("sample", tiny_run, "--seed-text", "a", "--greedy", "--length", 8, "--seed", 99)
    top1 = invoke("sample", tiny_run, "--seed-text", "a", "--top-k", 1, "--length", 8, "--seed", 3)
    assert g1.stdout == g2.stdout == top1.stdout  # top-1 sampling is greedy decoding
    r = invoke("sample", tiny_run, *"--seed-text a --num 2 --top-k 2 --temperature 0.5".split())
    assert r.exit_code == 0 and r.stdout.count("\n") == 2 and r.stderr.count("--- sample") == 2


def test_sample_seed_file_and_unknown_words(tiny_run, tmp_path):
    f = tmp_path / "seed.txt"
    f.write_text("a b qqq")
    r = invoke("sample", tiny_run, "--seed-file", f, "--length", 3)
    assert r.exit_code == 0
    assert "warning: 1 unknown tokens are skipped: 'qqq'" in r.stderr


def test_info_shows_config_and_curve(tiny_run):
    r = invoke("info", tiny_run)
    assert r.exit_code == 0
    best = checkpoint.load(tiny_run).train_state["best_valid"]
    for text in ("lstm 1 x 16", "parameters", f"best valid ppl │ {np.exp(best):,.2f}",
                 "adam lr 0.01", "step 60", "learning curve: valid perplexity", "█"):  # fmt: skip
        assert text in r.stdout, text


def test_info_names_the_lr_schedule():
    assert views.lr_schedule(TrainConfig(epochs=8, decay_after=4)) == "x0.5 per epoch after 4"
    for constant in (TrainConfig(epochs=8, decay_after=8), TrainConfig(epochs=8, lr_decay=1.0)):
        assert views.lr_schedule(constant) == "constant"


def test_gradcheck_command():
    r = invoke(
        "gradcheck", *"--layers 2 --hidden 4 --bptt 3 --dropout 0.2 --input-dropout 0.3".split()
    )
    assert r.exit_code == 0, r.output
    assert "input dropout 0.3" in r.stdout
    assert "l1.Wo" in r.stdout and "state.l1.1" in r.stdout and "FAIL" not in r.stdout
    assert "all 22 arrays within 1e-06" in r.stderr
    options = "--hidden 4 --bptt 3 --weight-drop 0.5 --word-dropout 0.3 --variational --dropout 0.2"
    r = invoke("gradcheck", *options.split())
    assert r.exit_code == 0, r.output
    assert "word dropout 0.3, weight drop 0.5, variational" in r.stdout
    assert "all 22 arrays within 1e-06" in r.stderr
    r = invoke("gradcheck", *f"{options} --ar 2 --tar 1".split())
    assert r.exit_code == 0, r.output
    assert "weight drop 0.5, variational, AR 2, TAR 1" in r.stdout
    assert "all 22 arrays within 1e-06" in r.stderr


def test_gradcheck_command_fails_on_a_wrong_backward(broken_lstm_backward):
    r = invoke("gradcheck", "--layers", 1, "--hidden", 4)
    assert r.exit_code == 1
    assert "FAIL" in r.stdout and "gradient check failed: largest relative error" in r.stderr


def test_bench_command_json():
    opts = "--vocab 50 --hidden 8 --layers 1 --batch-size 4 --bptt 5 --dropout 0.3 --repeats 2"
    r = invoke("bench", *opts.split(), "--literal", "--json")
    assert r.exit_code == 0, r.output
    fast, literal = json.loads(r.stdout)
    measured = {k: fast[k] for k in ("layers", "hidden", "vocab", "batch_size", "bptt", "dropout")}
    assert measured == {"layers": 1, "hidden": 8, "vocab": 50, "batch_size": 4, "bptt": 5,
                        "dropout": 0.3}  # fmt: skip
    assert fast["optimizer"] == "sgd" and fast["input_dropout"] == 0.2  # the small preset's
    assert fast["train_tokens_per_s"] > 0 and fast["eval_tokens_per_s"] > 0
    assert literal["cell"] == "lstm (literal)" and literal["train_tokens_per_s"] > 0
    r = invoke("bench", "--preset", "char", "--hidden", 8, "--repeats", 1, "--json")
    res = json.loads(r.stdout)
    assert (res["vocab"], res["batch_size"], res["bptt"], res["optimizer"]) == (50, 32, 50, "adam")


def test_bench_profile():
    opts = "--vocab 50 --hidden 8 --layers 1 --batch-size 4 --bptt 5 --repeats 2".split()
    r = invoke("bench", *opts, "--profile", "--json")
    assert r.exit_code == 0, r.output
    parts = [p["part"] for p in json.loads(r.stdout)["profile"]["parts"]]
    assert "output GEMMs" in parts and "softmax" in parts and parts[-1] == "other"
    r = invoke("bench", *opts, "--profile")
    assert r.exit_code == 0, r.output
    assert "one training step of lstm 1 x 8, V 50, B 4, T 5" in r.stdout
    assert "time loop, backward" in r.stdout and "GEMM ceiling" in r.stdout


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
    run = tmp_path / "run"  # a run stopped before its first save
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    for cmd in ("eval", "sample", "info"):
        assert_clean_error(invoke(cmd, run), 1, f"{run}: the run has no checkpoint yet")
    assert_clean_error(invoke("eval", tmp_path), 1, "a directory without a checkpoint")


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
    assert_clean_error(invoke("info", bad), 1, f"{bad}: truncated or corrupted checkpoint")


@pytest.mark.parametrize(
    "array, value", [("l0.Wf", np.nan), ("by", np.inf), ("opt.m.l0.W", -np.inf)]
)
@pytest.mark.parametrize("command", [
    ["eval", "CKPT"], ["sample", "CKPT"], ["score", "CKPT", "-"], ["info", "CKPT"],
    ["export", "CKPT", "out.safetensors"], ["train", "--resume", "CKPT", "--max-steps", "99"],
])  # fmt: skip
def test_a_checkpoint_with_nan_or_inf_is_refused_naming_the_array(
    tiny_run, tmp_path, command, array, value
):
    with np.load(tiny_run / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[array].flat[3] = value
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    before = bad.read_bytes()
    args = [bad if a == "CKPT" else tmp_path / a if a.endswith(".safetensors") else a
            for a in command]  # fmt: skip
    r = CliRunner().invoke(main, [str(a) for a in args], input="a b\n")
    assert_clean_error(r, 1, f"{bad}: {array} holds NaN or inf values")
    assert bad.read_bytes() == before and not (tmp_path / "out.safetensors").exists()


def test_not_an_npz(tmp_path):
    f = tmp_path / "text.npz"
    f.write_text("hello")
    assert_clean_error(invoke("eval", f), 1, "not an .npz archive")


def test_npz_that_is_not_ours(tmp_path):
    f = tmp_path / "other.npz"
    np.savez(f, weights=np.arange(4))
    assert_clean_error(invoke("sample", f), 1, "not an lstm-lm checkpoint")


class Exploit:
    """Unpickling this creates a file: proof of whether the payload ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_npz_is_refused_and_never_executed(tmp_path):
    ours, theirs = tmp_path / "pwned-by-lstm-lm", tmp_path / "pwned-by-allow-pickle"
    f = tmp_path / "evil.npz"
    np.savez(f, meta=np.array([Exploit(str(ours))], dtype=object))
    assert_clean_error(invoke("eval", f), 1, "pickled objects", "refuses", "nothing was executed")
    assert not ours.exists()
    # the positive control: the same file does run its payload where pickles are allowed
    np.savez(f, meta=np.array([Exploit(str(theirs))], dtype=object))
    with np.load(f, allow_pickle=True) as z:
        z["meta"]
    assert theirs.exists()


def test_vocabulary_mismatch_on_resume(markov_corpus, tmp_path):
    data, _ = markov_corpus
    mine = tmp_path / "data"
    mine.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (mine / name).write_text((data / name).read_text())
    out = tmp_path / "run"
    opts = "--layers 1 --hidden 4 --max-steps 2 --quiet"
    r = invoke("train", "--data", mine, *opts.split(), "--out", out)
    assert r.exit_code == 0
    (mine / "train.txt").write_text((data / "train.txt").read_text() + "brand new words\n")
    assert_clean_error(
        invoke("train", "--resume", out, "--max-steps", 4), 1, "does not match the checkpoint"
    )


def test_resume_refuses_changed_options(tiny_run, tmp_path):
    assert_clean_error(invoke("train", "--resume", tiny_run, "--hidden", 64), 2,
                       "--resume continues the saved configuration", "(got --hidden)")  # fmt: skip
    r = invoke("train", "--resume", tiny_run, "--data", tmp_path, "--level", "char")
    assert_clean_error(r, 2, "(got --data, --level)")


def test_unwritable_run_directory(markov_corpus, tmp_path):
    data, _ = markov_corpus
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("train", "--data", data, "--max-steps", 1, "--out", blocker / "run")
    assert_clean_error(
        r, 1, f"cannot write to run directory {blocker / 'run'}", "choose another --out"
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


@pytest.mark.parametrize("args,fragment", [
    (["--data", "d", "--train", "t.txt"], "give either --data DIR or --train FILE, not both"),
    (["--valid", "v.txt"], "--valid/--test need --train"),
])  # fmt: skip
def test_data_options_that_do_not_go_together(args, fragment):
    assert_clean_error(invoke("train", *args), 2, fragment)


def test_damaged_checkpoints_end_in_one_line(tiny_run, tmp_path):
    """A real checkpoint damaged 240 ways (a seeded draw: bytes of an array's header
    changed, the file cut, a byte flipped anywhere, bytes inserted in a header, an array
    dropped, an array of another shape or kind): eval and info either work or end in one
    line and exit 1, never a traceback. NumPy's header parser raised tokenize.TokenError for
    some headers once."""
    import zipfile

    src = (tiny_run / "best.npz").read_bytes()
    heads = [i for i in range(len(src)) if src.startswith(b"\x93NUMPY", i)]
    rng = np.random.default_rng(0)
    with np.load(tiny_run / "best.npz") as z:
        arrays = {k: z[k] for k in z.files}
    outcomes = set()
    for trial in range(240):
        bad, kind = tmp_path / f"bad{trial}.npz", trial % 6
        b = bytearray(src)
        at = heads[rng.integers(len(heads))]
        if trial == 0:  # the header dict left open: NumPy's parser raises TokenError
            b[src.index(b"}", at)] = ord(" ")
        elif kind == 0:
            for _ in range(rng.integers(1, 4)):
                b[at + rng.integers(0, 128)] = rng.integers(0, 256)
        elif kind == 1:
            b = b[: rng.integers(0, len(b))]
        elif kind == 2:
            b[rng.integers(0, len(b))] ^= 0xFF
        elif kind == 3:
            at += 10 + rng.integers(0, 60)
            b[at:at] = bytes(rng.integers(0, 256, rng.integers(1, 8)).astype(np.uint8))
        if kind < 4:
            bad.write_bytes(bytes(b))
        else:
            names = [k for k in arrays if k != "meta"]
            changed = dict(arrays)
            name = names[rng.integers(len(names))]
            if kind == 4:
                del changed[name]
            else:
                changed[name] = [np.zeros((3, 1, 2)), np.array(["x"]), np.zeros(0, np.int8)][
                    trial % 3
                ]
            with zipfile.ZipFile(bad, "w") as zf:
                for k, v in changed.items():
                    with zf.open(f"{k}.npy", "w") as f:
                        np.lib.format.write_array(f, np.asarray(v))
        for command in ("eval", "info"):
            r = invoke(command, bad, *(["--split", "valid"] if command == "eval" else []))
            assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
            if r.exit_code != 0:
                assert_clean_error(r, 1, str(bad))
                assert len([x for x in r.output.splitlines() if x.startswith("Error")]) == 1
            outcomes.add(r.exit_code)
    assert 1 in outcomes


def test_eval_names_the_checkpoint_once(tiny_run):
    r = invoke("eval", tiny_run)
    assert r.exit_code == 0, r.output
    assert r.output.count(str(tiny_run / "best.npz")) == 1, r.output  # the table's title
    r = invoke("eval", tiny_run, "--json")  # no title: stderr says which file
    assert f"using {tiny_run / 'best.npz'}" in r.stderr and json.loads(r.stdout)["ppl"] > 1
