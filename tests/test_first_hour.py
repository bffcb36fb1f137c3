"""What a newcomer meets in the first hour: progress in a log file, a time budget, eval's
defaults on their own text, a double Ctrl-C, a finished run resumed, info for scripts, help."""

import io
import json
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from lstm_lm import archive, rundir
from lstm_lm.cli import main, views
from lstm_lm.config import TrainConfig
from lstm_lm.train import Event, TrainState

SMALL = ["--layers", "1", "--hidden", "16", "--batch-size", "8", "--bptt", "10"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def own_text(tmp_path_factory):
    """A text of one's own, no valid or test file: a tenth becomes the valid split."""
    rng = np.random.default_rng(0)
    f = tmp_path_factory.mktemp("own") / "notes.txt"
    f.write_text("\n".join(" ".join(rng.choice(list("abcdefgh"), 9)) for _ in range(600)) + "\n")
    return f


def test_progress_lines_without_a_terminal(own_text, tmp_path, monkeypatch):
    monkeypatch.setattr(views, "PROGRESS_SECONDS", 0.0)  # a line at every step
    r = invoke("train", "--train", own_text, *SMALL, "--max-steps", 12, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("step ")]
    assert len(lines) == 12
    pattern = r"step (\d+)/12  epoch (\d\.\d\d)  train ppl [\d.,]+  [\d,]+ tok/s  \d+ s left"
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    assert [int(m[1]) for m in matches] == list(range(1, 13))
    epochs = [float(m[2]) for m in matches]
    assert epochs == sorted(epochs) and 0 < epochs[-1] < 1
    monkeypatch.setattr(views, "PROGRESS_SECONDS", 3600.0)
    r = invoke("train", "--train", own_text, *SMALL, "--max-steps", 12, "--out", tmp_path / "b")
    assert not [line for line in r.stderr.splitlines() if line.startswith("step ")]
    monkeypatch.setattr(views, "PROGRESS_SECONDS", 0.0)
    r = invoke("train", "--train", own_text, *SMALL, "--max-steps", 12, "--quiet",
               "--out", tmp_path / "c")  # fmt: skip
    assert r.exit_code == 0 and r.stderr.splitlines() == [
        line for line in r.stderr.splitlines() if line.startswith("done: ")
    ]


def test_max_minutes_stops_saves_and_resumes(own_text, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--train", own_text, *SMALL, "--epochs", 1000, "--max-minutes", 0.005,
               "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "(--max-minutes reached)" in r.stderr
    st = archive.read_meta(out / "last.npz")["train_state"]
    assert 0.3 <= st["elapsed"] and st["epoch"] < 1000
    assert f"go on: lstm-lm train --resume {out}" in r.stderr
    # the budget is spent: a resume goes on without it (here up to 5 more steps)
    r = invoke("train", "--resume", out, "--max-steps", st["step"] + 5)
    assert r.exit_code == 0, r.output
    assert "--max-minutes 0.005 was reached; going on without it" in r.stderr
    done = st["history"][-1]["epoch"]  # the evaluation at the stop: the same step
    assert f"at step {st['step']:,} (epoch {done:.2f})" in r.stderr
    assert archive.read_meta(out / "last.npz")["train_state"]["step"] == st["step"] + 5
    # a limit given anew that the run has already reached: nothing to do, and how to go on
    r = invoke("train", "--resume", out, "--max-minutes", 0.005)
    assert r.exit_code == 0 and "--max-steps" in r.stderr and "was reached" in r.stderr
    assert f"nothing to do: {out} has trained " in r.stderr and "(M > 0.005)" in r.stderr
    r = invoke("train", "--resume", out, "--max-minutes", 0.01, "--quiet")
    assert r.exit_code == 0, r.output
    later = archive.read_meta(out / "last.npz")["train_state"]
    assert later["step"] > st["step"] + 5 and later["elapsed"] >= 0.6
    r = invoke("train", "--train", own_text, "--max-minutes", 0, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--max-minutes" in r.output


def test_resuming_a_finished_run_says_so_and_how_to_go_on(own_text, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", "--train", own_text, *SMALL, "--epochs", 1, "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = invoke("train", "--resume", out)
    assert r.exit_code == 0, r.output
    assert f"nothing to do: {out} finished its 1 epochs at step " in r.stderr
    assert f"lstm-lm train --resume {out} --epochs N (N > 1)" in r.stderr
    assert "done" not in r.stderr and {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = invoke("train", "--resume", out, "--epochs", 2, "--quiet")
    assert r.exit_code == 0 and archive.read_meta(out / "last.npz")["train_state"]["epoch"] == 3


def test_eval_of_ones_own_text_takes_valid_and_agrees_with_training(own_text, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--train", own_text, *SMALL, "--max-steps", 30, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("eval", out, "--json")
    assert r.exit_code == 0, r.output
    assert "the run's data has no test split: evaluating on valid" in r.stderr
    result = json.loads(r.stdout)
    assert result["split"] == "valid"
    trained = archive.read_meta(out / "best.npz")["train_state"]["best_valid"]
    assert result["nll"] == trained  # the same streams, the same sums
    assert (
        json.loads(invoke("info", out, "--json").stdout)["progress"]["best_valid_loss"] == trained
    )
    r = invoke("eval", out, "--split", "test")
    assert r.exit_code == 1 and "the run's data has no test split" in r.output


def test_info_json_for_scripts(own_text, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--train", own_text, *SMALL, "--max-steps", 20, "--eval-every", 10,
               "--out", out, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    info = json.loads(invoke("info", out, "--json").stdout)
    assert info["path"] == str(out / "best.npz")
    assert info["vocab_size"] == 9 and info["level"] == "word"  # a-h and <eos>
    assert info["parameters"] == (16 + 9 + 1) * 64 + (16 + 1) * 9
    assert (info["config"]["hidden"], info["train_config"]["batch_size"]) == (16, 8)
    assert info["progress"]["step"] == 20
    assert [m["step"] for m in info["history"]] == [10, 20]
    assert info["data"]["train"] == str(own_text)


def test_a_double_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(
    own_text, tmp_path, as_from_a_terminal
):
    out = tmp_path / "run"
    slow = ["--hidden", "1024", "--batch-size", "16", "--bptt", "100", "--epochs", "100"]
    p = subprocess.Popen([sys.executable, "-m", "lstm_lm", "train", "--train", str(own_text),
                          *slow, "--out", str(out)], stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_from_a_terminal)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # training has started
    p.send_signal(signal.SIGINT)
    lines = []
    for line in p.stderr:  # the second Ctrl-C once the first one was heard, mid-step
        lines.append(line)
        if line.startswith("stopping after this step"):
            p.send_signal(signal.SIGINT)
            break
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, "".join(lines) + err
    assert err.strip().splitlines()[-1] == (
        f"aborted before the first checkpoint: nothing was saved in {out}"
    )
    assert not rundir.saved(out)


def test_help_texts():
    text = " ".join(invoke("train", "--help").output.split())
    assert "the last 10% of --train" in text and "%%" not in text
    assert "pip install 'lstm-lm[mpi]' (in a checkout: pip install '.[mpi]')" in text
    assert "--max-minutes M Stop after M minutes" in text
    assert "Divide the logits by T" in " ".join(invoke("sample", "--help").output.split())


def test_the_progress_bar_fits_80_columns_and_counts_down_to_max_minutes(tmp_path):
    """The bar of a 2-minute run of 30,212 steps, one minute in: its step total shows at 80
    columns and its time left is the minute the limit leaves, not the epochs' hours."""
    con = views.Consoles()
    con.log = Console(width=80, file=io.StringIO(), force_terminal=True)
    run = SimpleNamespace(config=TrainConfig(epochs=13, max_minutes=2.0), out=tmp_path)
    view = views.TrainView(con, run, False, lambda: "")
    view.started = (time.monotonic() - 60, 0)  # 1,020 steps in the last minute
    st = TrainState(step=1_020, epoch=1, elapsed=60.0, tokens=408_000)
    view.update_bar(Event("step", st, 1.0, loss=5.75, windows=2_324, total=30_212))
    table = Console(width=80, record=True, file=io.StringIO())
    table.print(view.bar.make_tasks_table(view.bar.tasks))
    view.stop_bar()
    text = table.export_text()
    assert "epoch 1/13" in text and "1020/30212" in text and "6,800 tok/s" in text, text
    assert "1 min left" in text, text  # unlimited, it would be 29 min
    run.config = TrainConfig(epochs=13)
    assert view.time_left(Event("step", st, total=30_212), 60.0, 1_020) == "29 min left"


def test_a_run_stopped_in_its_first_epoch_still_has_a_learning_curve(markov_corpus, tmp_path):
    """--max-minutes without --eval-every: an evaluation at each fifth of the limit (here
    evaluations of 200 tokens take far less than a fifth, however busy the machine), so a run
    stopped long before its first epoch ends has points for info and plot."""
    data, _ = markov_corpus
    out = tmp_path / "run"
    args = ["--data", data, "--layers", 1, "--hidden", 64, "--batch-size", 1, "--bptt", 5,
            "--valid-tokens", 200, "--max-minutes", 0.03, "--quiet"]  # fmt: skip
    r = invoke("train", *args, "--out", out)
    assert r.exit_code == 0, r.output
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(history) >= 5 and all(m["epoch"] < 1 for m in history), history
    fifth = 60 * 0.03 / 5
    assert all(m["elapsed"] >= (k + 1) * fifth for k, m in enumerate(history[:4])), history
    r = invoke("train", *args, "--eval-every", 10**6, "--out", tmp_path / "every")
    assert len((tmp_path / "every" / "metrics.jsonl").read_text().splitlines()) == 1
