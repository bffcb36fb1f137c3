"""Tied input and output embeddings (`--tied`): one matrix E (V, H) feeds layer 0 and is the
output layer's weight. Gradient checks of the op and the model, the checkpoint's names, the
options it does not go with, a known answer, and the paths every model takes (resume,
fine-tuning with new words, export, processes)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module

from lstm_lm import checkpoint
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig, resolve
from lstm_lm.gradcheck import TOLERANCE, check_gradients, max_relative_error
from lstm_lm.model import LanguageModel
from lstm_lm.runs import extend_vocabulary
from lstm_lm.threads import Threads
from lstm_lm.tied import TiedSoftmax, embedding_backward, embedding_forward
from lstm_lm.timing import Phases

SMALL = "--layers 1 --hidden 16 --batch-size 8 --bptt 10 --quiet".split()


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(layers=1),
        dict(dropout=0.3, input_dropout=0.3),
        dict(input_dropout=0.3, word_dropout=0.3, variational=True, weight_drop=0.3, ar=2, tar=1),
        dict(cell="gru", input_dropout=0.2),
        dict(cell="janet", layers=3),
    ],
)
def test_gradient_check(options):
    """E's gradient is the sum of its input side (the window's rows) and its output side."""
    config = ModelConfig(vocab_size=11, hidden=6, layers=options.pop("layers", 2), tied=True,
                         **options)  # fmt: skip
    errors = check_gradients(config, bptt=5)
    assert set(errors) >= {"E", "by", "l0.Wf" if config.cell != "gru" else "l0.Wz"}
    assert "Wy" not in errors
    assert max(errors.values()) < TOLERANCE, errors


def test_the_ops_gradients_each_side_alone():
    """embedding_forward/backward and the tied softmax as a pair each, centered differences
    in float64 against their analytic gradients; the two sides of dE both non-zero."""
    rng = np.random.default_rng(0)
    V, H, T, B = 7, 5, 4, 3
    E = rng.normal(0, 0.5, (V, H))
    tokens = rng.integers(0, V - 2, (T, B))  # the last two tokens absent
    mask = (rng.random((T, B, H)) > 0.3) / 0.7
    w = rng.normal(0, 1, (T, B, H))  # loss = sum(w * e)
    e, cache = embedding_forward(E, tokens, mask)
    rows, drows = embedding_backward(w, cache)
    dE = np.zeros_like(E)
    dE[rows] = drows
    loss = lambda: float((w * embedding_forward(E, tokens, mask)[0]).sum())  # noqa: E731
    assert max_relative_error(loss, E, dE, list(np.ndindex(V, H))) < TOLERANCE
    assert np.all(dE[V - 2 :] == 0) and set(rows) == set(np.unique(tokens))

    config = ModelConfig(vocab_size=V, hidden=H, tied=True)
    out = TiedSoftmax(config, Threads())
    p = {"E": E, "by": rng.normal(0, 0.5, V)}
    top, targets = rng.normal(0, 1, (6, H)), rng.integers(0, V, 6)
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    _, dtop = out.loss(p, grads, top, targets, 1.0, Phases(on=False))
    loss = lambda: float(out.nll(p, top, targets).sum())  # noqa: E731
    assert max_relative_error(loss, E, grads["E"], list(np.ndindex(V, H))) < TOLERANCE
    assert max_relative_error(loss, p["by"], grads["by"], list(np.ndindex(V))) < TOLERANCE
    assert max_relative_error(loss, top, dtop, list(np.ndindex(*top.shape))) < TOLERANCE
    assert np.abs(grads["E"][V - 2 :]).min() > 0  # the output side reaches every row


def test_gradcheck_command():
    r = invoke("gradcheck", "--tied", "--input-dropout", "0.2", "--word-dropout", "0.2")
    assert r.exit_code == 0, r.output
    assert "E" in r.stdout.split() and "Wy" not in r.stdout.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--softmax", "adaptive"], "--tied shares the full softmax's weight"),
        (["--optimizer", "sgd", "--token-lr-scale", "10"], "with --tied there are none"),
    ],
)
def test_options_it_does_not_go_with(markov_corpus, tmp_path, args, message):
    data, _ = markov_corpus
    r = invoke("train", "--data", data, *SMALL, "--tied", *args, "--out", tmp_path / "r")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert message in r.output and len([x for x in r.output.splitlines() if x.strip()]) <= 3
    assert not (tmp_path / "r").exists()


def test_the_presets_token_lr_scale_does_not_apply():
    """`--preset medium-vd --tied` drops the one-hot rows' lr multiplier (saying so) and is
    `medium-tied`; `laptop-tied` is `laptop`'s recipe tied, shorter."""
    s = resolve("medium-vd", {"tied": True})
    assert s.model["tied"] and s.train.token_lr_scale == 1.0
    assert "does not apply" in s.origins["token_lr_scale"]
    tied = resolve("medium-tied")
    assert (tied.model, tied.train) == (s.model, s.train)
    s = resolve("laptop", {"tied": True, "epochs": 20, "asgd_after": 14})
    tied = resolve("laptop-tied")
    assert (tied.model, tied.train) == (s.model, s.train)


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory, markov_corpus):
    """A tied model trained on the Markov corpus until it knows the chain."""
    data, _ = markov_corpus
    out = tmp_path_factory.mktemp("tied") / "run"
    opts = "--layers 1 --hidden 32 --batch-size 16 --bptt 20 --epochs 2 --decay-after 1 --quiet"
    r = invoke("train", "--data", data, *opts.split(), "--tied", "--optimizer", "adam",
               "--lr", "0.01", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_learns_a_markov_chain_to_its_true_perplexity(markov_corpus, tied_run):
    _, true_ppl = markov_corpus
    r = invoke("eval", tied_run, "--json")
    assert r.exit_code == 0, r.output
    ppl = json.loads(r.stdout)["ppl"]
    assert abs(ppl / true_ppl - 1) < 0.05, (ppl, true_ppl)


def test_checkpoint_holds_E_in_place_of_Wy(tied_run):
    with np.load(tied_run / "best.npz", allow_pickle=False) as z:
        names = set(z.files)
        V, H = z["E"].shape
        assert z["l0.Wf"].shape == (2 * H, H) and z["by"].shape == (V,)
    assert "Wy" not in names and "E" in names
    ckpt = checkpoint.load(tied_run)
    assert ckpt.model.config.tied
    # one matrix: changing E changes both what layer 0 reads and what the output layer scores
    m = ckpt.model
    x = np.array([[1, 2, 3, 1]])
    before, _ = m.token_nll(x, x, m.init_state(1))
    m.params["E"][2] *= 0.5
    after, _ = m.token_nll(x, x, m.init_state(1))
    assert not np.allclose(before[0, 0], after[0, 0])  # target 2 at step 0: the output side
    assert not np.allclose(before[0, 2], after[0, 2])  # input 3 after 2: the input side


def test_info_and_sample(tied_run):
    r = invoke("info", tied_run)
    assert r.exit_code == 0 and "tied embeddings" in r.stdout
    r = invoke("sample", tied_run, "--seed-text", "a b", "--length", 10, "--seed", 1)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "extra", [["--optimizer", "adam", "--lr", "0.01"], ["--asgd", "--asgd-after", "1"]]
)
def test_resume_is_bit_identical(zipf_words, tmp_path, extra):
    """Stopped at step 20 and resumed to 30 (across the end of epoch 1, where ASGD starts
    averaging E densely): every array of last.npz the uninterrupted run's, to the bit."""
    args = ["--data", zipf_words, "--layers", "2", "--hidden", "8", "--batch-size", "4",
            "--bptt", "5", "--epochs", "3", "--seed", "7", "--quiet", "--tied", "--dtype",
            "float64", "--input-dropout", "0.2", "--word-dropout", "0.1", "--variational",
            "--weight-drop", "0.2", "--dropout", "0.2", *extra]  # fmt: skip
    assert invoke("train", *args, "--max-steps", 30, "--out", tmp_path / "a").exit_code == 0
    assert invoke("train", *args, "--max-steps", 20, "--out", tmp_path / "b").exit_code == 0
    r = invoke("train", "--resume", tmp_path / "b", "--max-steps", 30, "--quiet")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "a" / "last.npz") as A, np.load(tmp_path / "b" / "last.npz") as B:
        assert set(A.files) == set(B.files)
        for k in A.files:
            if k != "meta":
                assert A[k].tobytes() == B[k].tobytes(), k
        if "--asgd" in extra:  # the model is the average, the iterate the optimiser's
            assert not np.array_equal(A["opt.iterate.E"], A["E"])


def test_extend_vocab_keeps_the_old_words_probabilities():
    rng = np.random.default_rng(0)
    m = LanguageModel.init(ModelConfig(vocab_size=9, hidden=8, tied=True), rng, "float64")
    for p in m.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    big = extend_vocabulary(m, 12, rng)
    assert big.params["E"].shape == (12, 8) and not big.params["E"][9:].any()
    assert np.array_equal(big.params["E"][:9], m.params["E"])
    x = rng.integers(0, 9, (2, 30))
    y = np.roll(x, -1, axis=1)
    before, _ = m.token_nll(x, y, m.init_state(2))
    after, _ = big.token_nll(x, y, big.init_state(2))
    assert np.abs(after - before).max() <= 4 * np.finfo(np.float64).eps * np.abs(before).max()


def test_export_keeps_the_model(tied_run, tmp_path):
    require_module("safetensors", "export")
    f = tmp_path / "m.safetensors"
    assert invoke("export", tied_run, f).exit_code == 0
    ours = json.loads(invoke("eval", tied_run, "--json").stdout)
    theirs = json.loads(invoke("eval", f, "--json").stdout)
    assert theirs["nll"] == pytest.approx(ours["nll"], rel=1e-12)


def test_fine_tuning_a_tied_model_with_new_words(zipf_words, tmp_path):
    """--init-from a tied run onto text with new words (--extend-vocab): E grows by their
    rows, the run trains and resumes as any other."""
    args = "--layers 1 --hidden 8 --batch-size 4 --bptt 5 --quiet --tied".split()
    assert invoke("train", "--data", zipf_words, *args, "--max-steps", 10, "--out",
                  tmp_path / "a").exit_code == 0  # fmt: skip
    new = tmp_path / "new.txt"
    new.write_text("w1 w2 novel w3 other w1\n" * 40)
    r = invoke("train", "--init-from", tmp_path / "a", "--train", new, "--extend-vocab",
               "--max-steps", 8, "--out", tmp_path / "b", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    old, tuned = checkpoint.load(tmp_path / "a"), checkpoint.load(tmp_path / "b")
    assert tuned.model.config.tied and set(tuned.vocab.itos[-2:]) == {"novel", "other"}
    assert tuned.model.params["E"].shape == (len(old.vocab) + 2, 8)
