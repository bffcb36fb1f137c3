"""Training end to end: learning a known distribution, exact resume, interrupts, divergence."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import archive, checkpoint
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig, TrainConfig, resolve
from lstm_lm.data import DataSource
from lstm_lm.model import LanguageModel
from lstm_lm.optim import SGD
from lstm_lm.runs import new_run
from lstm_lm.train import Diverged, train_step

SMALL = ["--layers", "1", "--hidden", "16", "--batch-size", "8", "--bptt", "10", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_learns_a_markov_chain_to_its_true_perplexity(markov_corpus, markov_chain_run):
    """A corpus drawn from a random order-1 chain: held-out perplexity within 5% of exp(H)."""
    _, true_ppl = markov_corpus
    out, _ = markov_chain_run
    r = invoke("eval", out, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["tokens"] == 20_000  # every target of the test split, <eos> included
    assert abs(result["ppl"] / true_ppl - 1) < 0.05, (result["ppl"], true_ppl)
    r = invoke("sample", out, "--seed-text", "a b", "--length", 20, "--seed", 1)
    assert r.exit_code == 0 and len(r.stdout.split()) + r.stdout.count("\n") - 1 == 2 + 20


def arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


@pytest.mark.parametrize(
    "stop_at", [7, 30]
)  # mid-epoch, and across the epoch boundary (25 windows)
def test_resume_is_bit_identical(tmp_path, stop_at):
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(list("abcdefg"), 12)) for _ in range(200)) + "\n"
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text(text[:500])
    opts = "--layers 2 --hidden 8 --batch-size 4 --bptt 26 --epochs 3 --seed 3 --quiet"
    regularised = "--dropout 0.3 --input-dropout 0.2 --optimizer adam --lr 0.01"
    common = ["--data", tmp_path, *opts.split(), *regularised.split()]
    r = invoke("train", *common, "--max-steps", 40, "--out", tmp_path / "straight")
    assert r.exit_code == 0, r.output
    r = invoke("train", *common, "--max-steps", stop_at, "--out", tmp_path / "split")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--resume", tmp_path / "split", "--max-steps", 40, "--quiet")
    assert r.exit_code == 0, r.output
    a, b = arrays(tmp_path / "straight" / "last.npz"), arrays(tmp_path / "split" / "last.npz")
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    st = checkpoint.load(tmp_path / "split" / "last.npz").train_state
    assert st["step"] == 40


def test_resume_from_best_saved_at_an_epoch_end(tmp_path):
    (tmp_path / "train.txt").write_text("a b c d e f g\n" * 150)
    (tmp_path / "valid.txt").write_text("a b c d e f g\n" * 10)
    out = tmp_path / "run"
    # 1,200 tokens in 8 streams of 150: 15 windows of 10 per epoch
    r = invoke("train", "--data", tmp_path, *SMALL, "--epochs", 3, "--max-steps", 15, "--out", out)
    assert r.exit_code == 0, r.output
    best = checkpoint.load(out / "best.npz").train_state
    assert (best["epoch"], best["window"]) == (2, 0)  # saved at the epoch end: resumes at the next
    r = invoke(
        "train", "--resume", out / "best.npz", "--max-steps", 20, "--out", tmp_path / "again"
    )
    assert r.exit_code == 0, r.output
    assert checkpoint.load(tmp_path / "again" / "last.npz").train_state["step"] == 20


def test_interrupt_saves_and_says_how_to_resume(markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lstm_lm", "train", "--data", str(data), *SMALL, "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--epochs", "50", "--eval-every", "5"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300  # a safety net for a hung run, not a speed limit
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    assert metrics.exists(), "the run never evaluated"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"resume with: lstm-lm train --resume {out}" in err
    assert "Traceback" not in err
    st = checkpoint.load(out / "last.npz").train_state
    assert st["step"] >= 5
    r = invoke("train", "--resume", out, "--max-steps", st["step"] + 3)
    assert r.exit_code == 0, r.output
    assert checkpoint.load(out / "last.npz").train_state["step"] == st["step"] + 3


def test_nan_stops_and_keeps_the_last_good_checkpoint(markov_corpus, tmp_path, monkeypatch):
    data, _ = markov_corpus
    real, calls = LanguageModel.loss_and_grads, {"n": 0}

    def poisoned(self, *args, **kwargs):
        r = real(self, *args, **kwargs)
        calls["n"] += 1
        return r._replace(loss=float("nan")) if calls["n"] == 25 else r

    monkeypatch.setattr(LanguageModel, "loss_and_grads", poisoned)
    out = tmp_path / "run"
    r = invoke("train", "--data", data, *SMALL, "--eval-every", 10, "--out", out)
    assert r.exit_code == 1
    assert "loss became nan at step 25" in r.output and "Traceback" not in r.output
    best = checkpoint.load(out / "best.npz")
    assert best.train_state["step"] == 20
    assert all(np.isfinite(p).all() for p in best.model.params.values())


def blow_up_from(step: int, monkeypatch):
    """From the given call of loss_and_grads on, gradients a thousand times too large: finite
    losses, but weights that leave any sensible range."""
    real, calls = LanguageModel.loss_and_grads, {"n": 0}

    def blown(self, *args, **kwargs):
        r = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= step:
            for g in r.grads.values():
                g *= 1e3
        return r

    monkeypatch.setattr(LanguageModel, "loss_and_grads", blown)


def test_divergence_keeps_the_checkpoints_from_before_it(markov_corpus, tmp_path, monkeypatch):
    data, _ = markov_corpus
    args = ["--data", data, *SMALL, "--clip", 0, "--eval-every", 10]
    assert invoke("train", *args, "--max-steps", 20, "--out", tmp_path / "good").exit_code == 0
    blow_up_from(25, monkeypatch)
    out = tmp_path / "run"
    r = invoke("train", *args, "--out", out)
    assert r.exit_code == 1
    assert "Error: the loss diverged (valid ppl " in r.output
    assert "at step 30): lower --lr; the checkpoints saved before were kept" in r.output
    for name in ("best.npz", "last.npz"):  # as a run that stopped at step 20 left them
        assert arrays(out / name).keys() == arrays(tmp_path / "good" / name).keys()
        for k, a in arrays(out / name).items():
            assert a.tobytes() == arrays(tmp_path / "good" / name)[k].tobytes(), (name, k)
        assert archive.read_meta(out / name)["train_state"]["step"] == 20
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20]


def test_a_save_between_evaluations_refuses_diverged_weights(markov_corpus, tmp_path, monkeypatch):
    """Stopped (Ctrl-C, --save-every) after the weights blew up and before the next
    evaluation: the training loss since the last one says so, and nothing is written."""
    data, _ = markov_corpus
    blow_up_from(15, monkeypatch)
    settings = resolve("small", dict(layers=1, hidden=16, batch_size=8, bptt=10, clip=0.0,
                                     eval_every=10))  # fmt: skip
    run = new_run(settings, DataSource("word", data_dir=data), tmp_path / "run")
    steps = []
    with pytest.raises(Diverged, match=r"diverged \(train ppl .* at step 19\)"):
        run.fit(on_event=lambda e: e.kind == "step" and steps.append(e.state.step),
                should_stop=lambda: len(steps) >= 19)  # fmt: skip
    assert archive.read_meta(run.out / "last.npz")["train_state"]["step"] == 10


def test_run_directory_and_metrics(tiny_run):
    assert {p.name for p in tiny_run.iterdir()} >= {"best.npz", "last.npz", "metrics.jsonl"}
    lines = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert lines and set(lines[-1]) >= {
        "step",
        "epoch",
        "lr",
        "train_loss",
        "train_ppl",
        "valid_loss",
        "valid_ppl",
        "tokens_per_s",
        "elapsed",
    }
    assert lines[-1]["step"] == 60


def test_json_progress(markov_corpus, tmp_path):
    data, _ = markov_corpus
    opts = "--max-steps 20 --eval-every 10 --json"
    r = invoke("train", "--data", data, *SMALL, *opts.split(), "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["step"] for o in objs] == [10, 20]


def test_existing_run_is_not_overwritten(tiny_run, markov_corpus):
    data, _ = markov_corpus
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir()}
    r = invoke("train", "--data", data, "--out", tiny_run, *SMALL, "--max-steps", 1)
    assert r.exit_code == 1
    assert f"{tiny_run} already holds a run; continue it with --resume {tiny_run}" in r.output
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir()} == before


def test_presets_and_overrides(markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / "run"
    r = invoke("train", "--preset", "seed", "--data", data, "--hidden", 12, "--max-steps", 2,
               "--out", out, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    c = checkpoint.load(out / "last.npz")
    # the seed preset's values, with --hidden overridden
    assert (c.model.config.layers, c.model.config.hidden) == (1, 12)
    assert (c.train_config.batch_size, c.train_config.epochs, c.train_config.token_lr_scale) == (
        20, 6, 10.0)  # fmt: skip


def test_char_level_own_text(tmp_path):
    text = "the quick brown fox jumps over the lazy dog.\n" * 60
    (tmp_path / "book.txt").write_text(text)
    out = tmp_path / "run"
    r = invoke("train", "--level", "char", "--train", tmp_path / "book.txt", *SMALL,
               "--max-steps", 30, "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    # eval's bits per character equal the validation loss measured in training (8 streams)
    r = invoke("eval", out, "--split", "valid", "--batch-size", 8, "--json")
    assert r.exit_code == 0, r.output
    best = checkpoint.load(out).train_state["best_valid"]
    assert json.loads(r.stdout)["bpc"] == pytest.approx(best / np.log(2), rel=1e-12)
    r = invoke("info", out)
    assert r.exit_code == 0, r.output
    assert "valid ppl (bpc)" in r.output
    assert f"{np.exp(best):,.2f} ({best / np.log(2):.3f} bpc)" in r.output
    r = invoke("sample", out, "--seed-text", "the qu€ick", "--length", 10, "--seed", 0)
    assert r.exit_code == 0
    assert "unknown tokens are skipped: '€'" in r.stderr
    assert r.stdout.startswith("the qu€ick") and len(r.stdout) == len("the qu€ick") + 10 + 1


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the inf planted below
def test_train_step_updates_only_when_finite():
    rng = np.random.default_rng(0)
    model = LanguageModel.init(ModelConfig(vocab_size=9, hidden=4, layers=1), rng, "float64")
    opt, tc = SGD(model.params), TrainConfig(clip=5.0, token_lr_scale=10.0)
    x = rng.integers(0, 9, (2, 3))
    before = {k: v.copy() for k, v in model.params.items()}
    step = train_step(model, opt, tc, x, x, model.init_state(2), 0.1, rng)
    assert step.finite and len(step.state) == 1
    assert all((model.params[k] != before[k]).any() for k in before)
    model.params["Wy"][0, 0] = np.inf
    before = {k: v.copy() for k, v in model.params.items()}
    step = train_step(model, opt, tc, x, x, model.init_state(2), 0.1, rng)
    assert not step.finite
    assert all(np.array_equal(model.params[k], before[k], equal_nan=True) for k in before)


def test_a_checkpoint_of_lstm_lm_0_1_0_loads(tiny_run, tmp_path):
    """0.1.0 kept the token level in the training config too; such checkpoints still load."""
    with np.load(tiny_run / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["train_config"]["level"] = "word"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    old, new = checkpoint.load(tmp_path / "old.npz"), checkpoint.load(tiny_run / "last.npz")
    assert old.train_config == new.train_config and old.vocab.level == "word"


def test_the_learning_rate_schedule():
    """Zaremba et al.'s: the rate held for --decay-after epochs, then times --lr-decay at each
    epoch (their small model: 1 for four epochs, then halved)."""
    tc = TrainConfig(lr=1.0, lr_decay=0.5, decay_after=4)
    assert [tc.lr_at(e) for e in range(1, 9)] == [1, 1, 1, 1, 0.5, 0.25, 0.125, 0.0625]
    assert [TrainConfig(lr=0.1, lr_decay=0.8, decay_after=0).lr_at(e) for e in (1, 2)] == [
        pytest.approx(0.08),
        pytest.approx(0.064),
    ]


def test_each_step_updates_at_its_epochs_rate(tmp_path, monkeypatch):
    """The rate every optimiser step receives, recorded: 23 windows an epoch at 1, then 23 at
    0.5, then 23 at 0.25 (1,000 tokens, a tenth for validation, B 4, T 10)."""
    rng = np.random.default_rng(0)
    text = tmp_path / "t.txt"
    text.write_text("\n".join(" ".join(rng.choice(list("abcde"), 9)) for _ in range(100)) + "\n")
    rates = []
    real = SGD.step

    def recorded(self, params, grads, lr, rows=None):
        rates.append(lr)
        return real(self, params, grads, lr, rows)

    monkeypatch.setattr(SGD, "step", recorded)
    r = invoke("train", "--train", text, "--layers", 1, "--hidden", 8, "--batch-size", 4,
               "--bptt", 10, "--epochs", 3, "--lr", 1, "--lr-decay", 0.5, "--decay-after", 1,
               "--quiet", "--out", tmp_path / "run")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert rates == [1.0] * 23 + [0.5] * 23 + [0.25] * 23


def test_max_tokens_stops_at_the_first_step_that_reaches_it(markov_corpus, tmp_path):
    """20 tokens a step (B 4 x T 5): --max-tokens 1001 stops after step 51 (1,020 tokens);
    resumed with 2,000, after step 100."""
    data, _ = markov_corpus
    out = tmp_path / "run"
    opts = ["--layers", 1, "--hidden", 8, "--batch-size", 4, "--bptt", 5, "--quiet"]
    r = invoke("train", "--data", data, *opts, "--max-tokens", 1001, "--out", out)
    assert r.exit_code == 0, r.output
    st = archive.read_meta(out / "last.npz")["train_state"]
    assert (st["step"], st["tokens"]) == (51, 1020)
    r = invoke("train", "--resume", out, "--max-tokens", 2000, "--quiet")
    assert r.exit_code == 0, r.output
    st = archive.read_meta(out / "last.npz")["train_state"]
    assert (st["step"], st["tokens"]) == (100, 2000)
