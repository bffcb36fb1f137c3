"""A resumed run is the uninterrupted run, bit for bit, whatever changes training.

The matrix: optimiser x the options that change a step x dtype, on a tiny model over 60
word types, so that every window leaves most token rows untouched (where an optimiser that
wrote into the reused gradient buffer fed stale values into the next step). 20 steps, a
resume, 10 more; the epoch ends at step 27, so the resumed part crosses an evaluation and a
learning-rate decay. Every array of last.npz and best.npz is compared, optimiser state and
carried hidden state included, and so are the RNG state and the position in the data.
"""

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import archive
from lstm_lm.cli import main

BASE = "--layers 1 --hidden 8 --batch-size 4 --bptt 5 --epochs 3 --decay-after 1 --seed 7 --quiet"
LR = {"sgd": "0.5", "adam": "0.01", "adagrad": "0.1"}
OPTIONS = {
    "none": "--dropout 0 --input-dropout 0",
    "dropout": "--dropout 0.3 --input-dropout 0",
    "input-dropout": "--dropout 0 --input-dropout 0.2",
    "all": "--dropout 0.3 --input-dropout 0.2 --layers 2 --clip 0.5 --eval-every 7",
    "2016-17": "--dropout 0.3 --input-dropout 0.2 --variational --word-dropout 0.2 "
    "--weight-drop 0.3 --ar 2 --tar 1 --layers 2",
    "adaptive": "--dropout 0.3 --softmax adaptive --cutoffs 6,20",
}
SGD_ONLY = "--token-lr-scale 10"


@pytest.fixture(scope="module")
def corpus(zipf_words):
    """Zipf-distributed words over 60 types: 27 windows of B 4 x T 5 per epoch."""
    return zipf_words


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def contents(path):
    """Every array of a checkpoint, and what in its header decides the next step."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    st = archive.read_meta(path)["train_state"]
    keys = ("step", "epoch", "window", "tokens", "rng", "asgd_from", "scheduled_losses")
    return arrays, {k: st[k] for k in keys}


def assert_identical(straight, split):
    """last.npz the same to the bit; best.npz too, unless the split run's extra evaluation
    (where it stopped, at step 20) was its best: a model the straight run never evaluated."""
    names = ["last.npz"]
    if archive.read_meta(split / "best.npz")["train_state"]["step"] != 20:
        names.append("best.npz")
    for name in names:
        (A, wa), (B, wb) = contents(straight / name), contents(split / name)
        assert wa == wb, name
        assert A.keys() == B.keys(), name
        for k in A:
            assert A[k].dtype == B[k].dtype and A[k].tobytes() == B[k].tobytes(), (name, k)


def train_and_resume(corpus, tmp_path, args):
    invoke("train", "--data", corpus, *args, "--max-steps", 30, "--out", tmp_path / "straight")
    invoke("train", "--data", corpus, *args, "--max-steps", 20, "--out", tmp_path / "split")
    invoke("train", "--resume", tmp_path / "split", "--max-steps", 30, "--quiet")
    return tmp_path / "straight", tmp_path / "split"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("optimizer", list(LR))
def test_resume_is_bit_identical(corpus, tmp_path, optimizer, options, dtype):
    extra = SGD_ONLY.split() if optimizer == "sgd" else []
    args = [*BASE.split(), "--optimizer", optimizer, "--lr", LR[optimizer], "--dtype", dtype,
            *OPTIONS[options].split(), *extra]  # fmt: skip
    straight, split = train_and_resume(corpus, tmp_path, args)
    assert_identical(straight, split)
    arrays, where = contents(straight / "last.npz")
    assert where["step"] == 30 and where["epoch"] == 2  # the resumed part crossed an epoch end
    assert any(k.startswith("opt.") for k in arrays) and "state.l0.0" in arrays


@pytest.mark.parametrize(
    "when, expected",
    [
        ("--asgd-patience 1 --eval-every 2", lambda s: s < 20),  # averaging from before the resume
        ("--asgd-patience 1 --eval-every 7", lambda s: s >= 20),  # ... and after it
        ("--asgd-patience 99 --asgd-after 1", lambda s: s == 27),  # at the end of epoch 1
    ],
)
def test_resume_is_bit_identical_with_asgd(corpus, tmp_path, when, expected):
    """Averaged SGD: the checkpoints hold the average as the model and the iterate (and the
    token rows' lazy average) as optimiser state; all come back."""
    args = [*BASE.split(), "--asgd", *when.split(), "--lr", 3, "--weight-drop", 0.3,
            "--dtype", "float64"]  # fmt: skip
    straight, split = train_and_resume(corpus, tmp_path, [str(a) for a in args])
    assert_identical(straight, split)
    arrays, where = contents(straight / "last.npz")
    asgd_from = archive.read_meta(straight / "last.npz")["train_state"]["asgd_from"]
    assert asgd_from is not None and expected(asgd_from)
    assert "opt.iterate.l0.W" in arrays and int(arrays["opt.n"]) == 30 - asgd_from + 1
    assert "opt.since.l0.W" in arrays and "opt.since.Wy" not in arrays  # token rows: lazily
    assert not np.array_equal(arrays["opt.iterate.Wy"], arrays["Wy"])  # the model is the average


@pytest.mark.parametrize("cell", ["gru", "rnn", "janet"])
def test_resume_is_bit_identical_for_every_cell(corpus, tmp_path, cell):
    args = [*BASE.split(), "--cell", cell, "--optimizer", "adam", "--lr", "0.01",
            "--dtype", "float64", *OPTIONS["all"].split()]  # fmt: skip
    assert_identical(*train_and_resume(corpus, tmp_path, args))
