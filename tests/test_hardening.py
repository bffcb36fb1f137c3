"""What a user can do wrong or have go wrong: one line, an honest exit code, nothing lost.

Bad values at their extremes, options that do not go together, output that cannot be
written, memory that is not there, Ctrl-C, kill -9 at any moment, a full disk.
"""

import errno
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import READ, missing, reading_stdin, wait_for

from lstm_lm import archive, atomic, checkpoint, rundir
from lstm_lm.cli import main

SMALL = ["--layers", "1", "--hidden", "16", "--batch-size", "8", "--bptt", "10", "--quiet"]


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def lstm_lm(*args):
    """The command in a process of its own, as a user runs it."""
    return [sys.executable, "-m", "lstm_lm", *map(str, args)]


def assert_clean_error(r, code, *fragments):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    for f in fragments:
        assert f in r.output, r.output


def arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


# --- values at their extremes --------------------------------------------------------------


@pytest.mark.parametrize("command", [["train"], ["gradcheck"], ["bench"], ["sample", "x"]])
def test_negative_seed(command):
    assert_clean_error(invoke(*command, "--seed", -1), 2, "Invalid value for '--seed'")


@pytest.mark.parametrize("lr", [1e9, 1e30])
def test_a_huge_learning_rate_ends_in_a_line_not_a_traceback(markov_corpus, tmp_path, lr):
    data, _ = markov_corpus
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *SMALL, "--lr", lr, "--clip", 0, "--max-steps", 20,
               "--out", out)  # fmt: skip
    assert_clean_error(r, 1, "lower --lr")
    assert [line for line in r.output.splitlines() if line.startswith("Error")] == [
        "Error: the loss diverged (valid ppl 1.0e+304 at step 20): lower --lr; nothing was "
        "saved yet"
    ]
    assert not rundir.saved(out) and not (out / "metrics.jsonl").read_text()


@pytest.mark.parametrize("args", [
    ["train", "--hidden", 100_000_000, "--max-steps", 1],
    ["gradcheck", "--hidden", 100_000_000],
    ["bench", "--hidden", 1_000_000],
])  # fmt: skip
def test_a_model_too_big_for_memory_is_refused_with_the_figure(args, markov_corpus, tmp_path):
    data, _ = markov_corpus
    extra = ["--data", data, "--out", tmp_path / "run"] if args[0] == "train" else []
    r = invoke(*args, *extra)
    assert_clean_error(r, 1, "this model needs about", "of memory to train", "is available")
    assert not (tmp_path / "run").exists()


# --- output that cannot be written -----------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("args", [["sample", "--length", 5, "--seed", 1], ["eval", "--json"]])
def test_output_to_a_full_device(tiny_run, args):
    with open("/dev/full", "w") as full:
        p = subprocess.run(lstm_lm(args[0], tiny_run, *args[1:]), stdout=full,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert p.returncode == 1
    assert "Error: cannot write the output: No space left on device" in p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr


def test_output_to_a_closed_pipe(tiny_run):
    p = subprocess.Popen(lstm_lm("sample", tiny_run, "--length", 200_000), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)  # fmt: skip
    p.stdout.read(10)
    p.stdout.close()  # the reader goes away, as `| head` does
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert b"Traceback" not in err and b"Exception ignored" not in err


# --- options that do not go together ---------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    (["sample", "{run}", "--greedy", "--top-k", 3], "--greedy does not go with --top-k"),
    (["sample", "{run}", "--greedy", "--temperature", 0.5],
     "--greedy does not go with --temperature"),
    (["sample", "{run}", "--seed-text", "a", "--seed-file", "f"],
     "--seed-text does not go with --seed-file"),
    (["eval", "{run}", "--split", "valid", "--file", "f"], "--split does not go with --file"),
    (["train", "--resume", "{run}", "--train", "t.txt"], "(got --train)"),
    (["train", "--resume", "{run}", "--level", "char", "--data", "d"], "(got --data, --level)"),
    (["train", "--optimizer", "adam", "--token-lr-scale", 3],
     "--token-lr-scale multiplies the SGD learning rate; it does not go with --optimizer adam"),
    (["train", "--cell", "gru", "--forget-bias", 1], "--cell gru has no forget gate"),
    (["train", "--cell", "lstm", "--chrono", 50], "--chrono needs --cell janet"),
    (["train", "--optimizer", "adam", "--asgd"],
     "--asgd averages the iterates of SGD; it does not go with --optimizer adam"),
    (["train", "--asgd-after", 3], "--asgd-after says when --asgd starts averaging; give --asgd"),
    (["train", "--resume", "{run}", "--weight-drop", 0.2], "(got --weight-drop)"),
])  # fmt: skip
def test_options_in_conflict_are_refused_naming_both(tiny_run, args, message):
    r = invoke(*[str(a).format(run=tiny_run) for a in args])
    assert_clean_error(r, 2, message)


def test_a_preset_value_that_does_not_apply_is_dropped(markov_corpus, tmp_path):
    """The small preset's token-row multiplier is for SGD; the char preset's forget bias
    for cells with a forget gate. Neither is applied where it does not belong."""
    data, _ = markov_corpus
    r = invoke("train", "--data", data, "--optimizer", "adam", *SMALL, "--max-steps", 1,
               "--out", tmp_path / "adam")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert checkpoint.load(tmp_path / "adam").train_config.token_lr_scale == 1.0
    r = invoke("train", "--data", data, "--level", "char", "--cell", "gru", *SMALL,
               "--max-steps", 1, "--out", tmp_path / "gru")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert checkpoint.load(tmp_path / "gru").model.config.forget_bias == 0.0


def test_dry_run_shows_every_value_and_its_origin_and_writes_nothing(markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        data,
        "--hidden",
        12,
        "--optimizer",
        "adam",
        "--variational",
        "--weight-drop",
        0.5,
        "--ar",
        2,
        "--dry-run",
        "--out",
        out,
    ]
    r = CliRunner().invoke(main, list(map(str, args)), env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in r.stdout.splitlines() if line.count("│") == 4}  # fmt: skip
    assert rows["hidden"] == ["12", "option"]
    assert rows["dropout"] == ["0.2", "preset small"]  # what explicit options inherit, shown
    assert rows["token-lr-scale"][0] == "1.0" and "does not apply" in rows["token-lr-scale"][1]
    assert rows["seed"] == ["0", "default"] and rows["out"] == [str(out), "option"]
    assert rows["variational"] == ["True", "option"] and rows["weight-drop"] == ["0.5", "option"]
    assert rows["word-dropout"] == ["0.0", "default"] and rows["asgd"] == ["False", "default"]
    assert rows["asgd-after"] == ["None", "default"]
    assert rows["ar"] == ["2.0", "option"] and rows["tar"] == ["0.0", "default"]
    r = CliRunner().invoke(main, list(map(str, args + ["--json"])))
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)  # for scripts: the table's values and origins, on stdout alone
    assert set(shown) == {"settings", "from"} and len(shown["settings"]) == len(rows)
    assert {k.replace("_", "-"): [str(v), shown["from"][k]]
            for k, v in shown["settings"].items()} == rows  # fmt: skip
    assert not out.exists()


def test_help_shows_the_presets_and_the_defaults():
    r = invoke("train", "--help")
    assert "small: layers 2, hidden 200" in r.output and "char: level char" in r.output
    assert "(small: 200)" in r.output and "(default 0)" in r.output
    for command in ("eval", "sample", "info"):
        text = " ".join(invoke(command, "--help").output.split())  # unwrapped
        assert "or a run directory, which means its best.npz (or last.npz" in text


# --- stopping and crashing lose nothing ------------------------------------------------------


def test_resume_into_another_directory_takes_the_whole_run(tiny_run, tmp_path):
    from lstm_lm.runs import resume_run

    new = tmp_path / "continued"
    run = resume_run(tiny_run, {"max_steps": 70}, new)  # before any training
    assert (new / "best.npz").read_bytes() == (tiny_run / "best.npz").read_bytes()
    assert run.out == new and run.resume.train_state["step"] == 60
    (new / "best.npz").unlink()
    r = invoke("train", "--resume", tiny_run, "--max-steps", 70, "--out", new)
    assert r.exit_code == 0, r.output
    tokens = {"tokens.json", "tokens.train.npy", "tokens.valid.npy", "tokens.test.npy"}
    assert {p.name for p in new.iterdir()} == {"best.npz", "last.npz", "metrics.jsonl", *tokens}
    assert (tiny_run / "tokens.json").exists()  # the corpus's token ids stay with the run,
    for name in tokens:  # and the new directory has them too, linked: no second copy
        assert (new / name).stat().st_ino == (tiny_run / name).stat().st_ino
    old = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert (new / "metrics.jsonl").read_text().splitlines()[: len(old)] == old
    assert checkpoint.load(new / "last.npz").train_state["step"] == 70


def test_resume_takes_the_newest_checkpoint_of_a_directory(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    r = invoke("train", "--resume", tiny_run, "--max-steps", 65, "--out", tmp_path / "later")
    assert r.exit_code == 0, r.output
    # as after a crash between the two saves: best.npz ahead of last.npz
    (run / "last.npz").write_bytes((tiny_run / "last.npz").read_bytes())  # step 60
    (run / "best.npz").write_bytes((tmp_path / "later" / "last.npz").read_bytes())  # step 65
    assert rundir.newest(run) == run / "best.npz"
    (run / ".last.npz.k9x2.tmp").write_bytes(b"PK half a checkpoint")  # what a kill leaves
    r = invoke("train", "--resume", run, "--max-steps", 66)
    assert r.exit_code == 0, r.output
    assert checkpoint.load(run / "last.npz").train_state["step"] == 66
    assert not list(run.glob(".*.tmp"))


def test_resume_from_an_older_checkpoint_drops_the_metrics_of_lost_work(markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / "run"
    opts = "--max-steps 10 --eval-every 5"
    assert invoke("train", "--data", data, *SMALL, *opts.split(), "--out", out).exit_code == 0
    older = (out / "last.npz").read_bytes()  # step 10: two evaluations
    assert invoke("train", "--resume", out, "--max-steps", 20, "--quiet").exit_code == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    (out / "last.npz").write_bytes(older)  # as if steps 11-20 had never been saved
    (out / "best.npz").unlink()
    r = invoke("train", "--resume", out, "--max-steps", 12, "--quiet")
    assert r.exit_code == 0, r.output
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 12]


def test_an_interrupted_run_saves_at_once_without_evaluating(markov_corpus, tmp_path):
    from lstm_lm.config import resolve
    from lstm_lm.data import DataSource
    from lstm_lm.runs import new_run

    data, _ = markov_corpus
    settings = resolve("seed", {"hidden": 8, "batch_size": 8, "bptt": 10, "eval_every": 5})
    run = new_run(settings, DataSource("word", data_dir=data), tmp_path / "run")
    events = []  # (kind, step, reason) as they come
    st = run.fit(on_event=lambda e: events.append((e.kind, e.state.step, e.reason)),
                 should_stop=lambda: events[-1][1] >= 7)  # fmt: skip
    assert events[-1] == ("end", 7, "interrupted")
    assert [step for kind, step, _ in events if kind == "eval"] == [5]  # none after the stop
    assert checkpoint.load(tmp_path / "run" / "last.npz").train_state["step"] == st.step == 7


@pytest.mark.skipif(platform.machine() not in READ or not Path("/proc/self/syscall").exists(),
                    reason="reads Linux's /proc/PID/syscall on x86_64 or aarch64")  # fmt: skip
@pytest.mark.parametrize("args", [["sample", "--length", 10_000_000], ["eval", "--file", "-"]])
def test_eval_and_sample_exit_130_on_ctrl_c(tiny_run, args, as_from_a_terminal):
    p = subprocess.Popen(lstm_lm(args[0], tiny_run, *args[1:]), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=as_from_a_terminal)  # fmt: skip
    if args[0] == "sample":
        p.stdout.read(20)  # generating
    else:  # started up, and blocked reading its standard input
        wait_for(lambda: reading_stdin(p.pid), "eval to read its standard input")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "interrupted"
    assert b"Traceback" not in err


def test_kill_9_at_random_moments_loses_only_the_work_since_the_last_save(markov_corpus, tmp_path):
    """Rounds of a run killed with SIGKILL at random moments while it trains, saving every
    few steps: after each, every .npz in the directory loads and --resume continues; in the
    end the resumed run equals one that was never interrupted, bit for bit."""
    data, _ = markov_corpus
    common = ["--data", data, *SMALL, "--dropout", 0.2, "--seed", 4, "--eval-every", 100,
              "--save-every", 0.0005, "--max-steps", 3000]  # fmt: skip
    straight, out = tmp_path / "straight", tmp_path / "killed"
    assert invoke("train", *common, "--out", straight).exit_code == 0
    rng, steps = np.random.default_rng(0), []
    for _ in range(4):
        resume = (out / "last.npz").exists()
        before = archive.read_meta(out / "last.npz")["train_state"]["step"] if resume else 0
        cmd = ["--resume", out, "--max-steps", 3000] if resume else [*common, "--out", out]
        p = subprocess.Popen(lstm_lm("train", *cmd), stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and (not (out / "last.npz").exists() or archive.read_meta(
                out / "last.npz")["train_state"]["step"] <= before):  # fmt: skip
            time.sleep(0.01)  # until this round has saved at least once
        time.sleep(rng.uniform(0, 0.3))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        assert p.returncode == -signal.SIGKILL  # killed while training, not finished
        for f in (out / "best.npz", out / "last.npz"):
            if f.exists():
                checkpoint.load(f)  # complete, whatever the moment of the kill
        steps.append(archive.read_meta(rundir.newest(out))["train_state"]["step"])
    assert steps == sorted(steps) and steps[-1] < 3000  # each round got further
    r = invoke("train", "--resume", out)
    assert r.exit_code == 0, r.output
    assert not list(out.glob(".*.tmp"))  # what the killed writers left is cleared
    a, b = arrays(straight / "last.npz"), arrays(out / "last.npz")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_full_disk_keeps_the_previous_checkpoint(markov_corpus, tmp_path, monkeypatch):
    """The disk fills up while last.npz is written (ENOSPC where the data reaches the disk,
    at fsync): one line naming the file and the space it needs, exit 1, the last.npz saved
    before intact."""
    data, _ = markov_corpus
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *SMALL, "--max-steps", 4, "--eval-every", 2, "--out", out)
    assert r.exit_code == 0
    before = (out / "last.npz").read_bytes()
    real = os.fsync

    def full(fd):
        if ".last.npz." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", full)
    r = invoke("train", "--resume", out, "--max-steps", 20, "--eval-every", 2)
    monkeypatch.undo()
    assert_clean_error(r, 1, f"cannot write {out / 'last.npz'}: no space left on the device (",
                       " bytes needed, ", "the previous file is intact")  # fmt: skip
    assert (out / "last.npz").read_bytes() == before
    assert checkpoint.load(out / "last.npz").train_state["step"] == 4
    assert not list(out.glob(".*.tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (tmpfs; needs the right to mount, which root has: CI
    requires it there)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        missing("mount", "cannot mount a tmpfs here (needs root)")
    yield mnt
    gc.collect()  # runs of this process may still map the cached token ids (cache.py)
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_really_full_disk(markov_corpus, small_disk):
    data, _ = markov_corpus
    out = small_disk / "run"
    r = invoke("train", "--data", data, *SMALL, "--max-steps", 4, "--eval-every", 2, "--out", out)
    assert r.exit_code == 0, r.output
    before = (out / "last.npz").read_bytes()
    with open(small_disk / "filler", "wb", buffering=0) as f:  # take all the space left
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    r = invoke("train", "--resume", out, "--max-steps", 20, "--eval-every", 2)
    assert_clean_error(r, 1, "no space left on the device (", " bytes needed, 0 free)",
                       "the previous file is intact")  # fmt: skip
    assert (out / "last.npz").read_bytes() == before
    assert checkpoint.load(out / "last.npz").train_state["step"] == 4


def test_a_run_directory_with_only_last_npz(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.npz").write_bytes((tiny_run / "last.npz").read_bytes())
    for args in (["eval", run, "--json"], ["sample", run, "--length", 3], ["info", run]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert f"using {run / 'last.npz'}" in r.stderr


# --- small things a user notices -------------------------------------------------------------


def test_standard_input_for_train_eval_and_sample(tmp_path):
    text = "the cat sat on the mat\n" * 200
    out = tmp_path / "run"
    r = invoke("train", "--level", "char", "--train", "-", *SMALL, "--max-steps", 5, "--out", out,
               input=text)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("eval", out, "--file", "-", "--json", input="the mat sat\n")
    assert r.exit_code == 0 and json.loads(r.stdout)["tokens"] == len("the mat sat\n") - 1
    r = invoke("sample", out, "--seed-file", "-", "--length", 4, input="the c")
    assert r.exit_code == 0 and r.stdout.startswith("the c") and len(r.stdout) == 5 + 4 + 1


def test_sample_out_writes_every_sample_with_separators(tiny_run, tmp_path):
    f = tmp_path / "samples.txt"
    r = invoke("sample", tiny_run, "--seed-text", "a", "--num", 3, "--length", 4, "--seed", 2,
               "--out", f)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and f"wrote 3 samples to {f}" in r.stderr
    lines = f.read_text().splitlines()
    assert lines[0::2] == ["--- sample 1", "--- sample 2", "--- sample 3"]
    assert all(line.startswith("a ") for line in lines[1::2])
    same = invoke("sample", tiny_run, "--seed-text", "a", "--num", 3, "--length", 4, "--seed", 2)
    assert same.stdout.splitlines() == lines[1::2]  # the same samples as on stdout


def test_info_curve_spans_the_range_of_its_values(markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *SMALL, "--max-steps", 40, "--eval-every", 10,
               "--out", out)  # fmt: skip
    assert r.exit_code == 0
    r = invoke("info", out)
    curve = r.stdout.split("learning curve: valid perplexity at each evaluation\n")[1]
    header, *rows = curve.splitlines()
    assert header.split()[:4] == ["epoch", "step", "valid", "ppl"]
    bars = [row.count("█") for row in rows]
    ppl = [float(row.split()[2]) for row in rows]
    assert len(bars) == 4 and min(bars) == 1 and max(bars) == 40
    assert bars[int(np.argmin(ppl))] == 1 and bars[int(np.argmax(ppl))] == 40


def test_summary_marks_the_best_row_and_shows_bpc_at_char_level(tmp_path):
    (tmp_path / "t.txt").write_text("abcabd abcabe\n" * 300)
    args = ["train", "--level", "char", "--train", tmp_path / "t.txt", "--out", tmp_path / "run"]
    opts = "--layers 1 --hidden 16 --max-steps 30 --eval-every 10"
    r = CliRunner().invoke(main, [*map(str, args), *opts.split()], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    history = checkpoint.load(tmp_path / "run").train_state["history"]
    best = min(range(len(history)), key=lambda i: history[i]["valid_loss"])
    rows = [line for line in r.stderr.splitlines() if line.startswith("│")]
    assert "valid bpc" in r.stderr and len(rows) == len(history)
    assert [row.split("│")[1].strip() for row in rows] == ["*" if i == best else "" for i in
                                                           range(len(rows))]  # fmt: skip
    assert f"{history[best]['valid_bpc']:.3f}" in rows[best]
