"""The adaptive softmax: its forward/backward pair gradient-checked alone and in the model, a
proper distribution (the probabilities of all V words sum to 1, eval's NLL is -log of them),
a Markov chain learnt to its true perplexity, and what it must fit into: checkpoints,
sampling, scoring, fine-tuning with new words, bench."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import lstm_lm.adaptive
from lstm_lm import checkpoint
from lstm_lm.adaptive import (
    AdaptiveSoftmax,
    adaptive_backward,
    adaptive_forward,
    adaptive_log_probs,
    frequency_order,
    tail_dims,
)
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig, resolve
from lstm_lm.data import DataSource
from lstm_lm.gradcheck import TOLERANCE, check_gradients, max_relative_error
from lstm_lm.model import LanguageModel
from lstm_lm.runs import extend_vocabulary, init_run


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def random_layer(rng, V=13, H=6, cutoffs=(3, 8), dtype="float64"):
    config = ModelConfig(vocab_size=V, hidden=H, softmax="adaptive", cutoffs=cutoffs)
    p = {k: rng.uniform(-0.8, 0.8, shape).astype(dtype)
         for k, shape in AdaptiveSoftmax.shapes(config).items()}  # fmt: skip
    return config, p, np.array([*cutoffs, V])


def literal_log_prob(h, w_rank, p, bounds):
    """log p(word of rank w_rank | h), written out from the definition for one position."""

    def log_softmax(z):
        return z - np.log(np.exp(z - z.max()).sum()) - z.max()

    C = bounds[0]
    head = log_softmax(h @ p["head.W"] + p["head.b"])
    if w_rank < C:
        return head[w_rank]
    i = int(np.searchsorted(bounds, w_rank, side="right")) - 1
    tail = log_softmax(h @ p[f"tail.{i}.P"] @ p[f"tail.{i}.W"] + p[f"tail.{i}.b"])
    return head[C + i] + tail[w_rank - bounds[i]]


def test_the_layer_alone_is_gradient_checked():
    """Every parameter and the input, float64, centered differences, with one cluster no
    target falls in (its gradient must be exactly zero)."""
    rng = np.random.default_rng(0)
    _, p, bounds = random_layer(rng, V=17, cutoffs=(3, 8, 12))
    top = rng.normal(0, 1, (9, 6))
    ranks = np.array([0, 2, 3, 7, 4, 1, 8, 11, 0])  # none in the last cluster, [12, 17)
    grads = {k: np.full_like(v, np.nan) for k, v in p.items()}

    def loss():
        return float(adaptive_forward(top, ranks, p, bounds)[0].sum())

    _, cache = adaptive_forward(top, ranks, p, bounds, dscale=1.0)
    dtop = adaptive_backward(cache, p, grads)
    assert not grads["tail.2.W"].any() and not grads["tail.2.P"].any()
    for name, array in [*p.items(), ("top", top)]:
        g = dtop if name == "top" else grads[name]
        idx = list(np.ndindex(*array.shape))[:: max(1, array.size // 40)]
        assert max_relative_error(loss, array, g, idx) < TOLERANCE, name


def test_nll_is_minus_the_log_probability_by_the_definition():
    rng = np.random.default_rng(1)
    _, p, bounds = random_layer(rng)
    top, ranks = rng.normal(0, 1, (20, 6)), rng.integers(0, 13, 20)
    nll, _ = adaptive_forward(top, ranks, p, bounds)
    expected = [-literal_log_prob(h, r, p, bounds) for h, r in zip(top, ranks)]
    np.testing.assert_allclose(nll, expected, rtol=1e-12)
    lp = adaptive_log_probs(top, p, bounds)
    np.testing.assert_allclose(lp[np.arange(20), ranks], -nll, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_models_probabilities_of_all_words_sum_to_one(dtype):
    """Sampling's distribution (model.step) sums to 1 over the vocabulary for any context,
    and eval's per-token NLL is minus its log at the target, words in any order."""
    rng = np.random.default_rng(2)
    config = ModelConfig(vocab_size=40, hidden=16, softmax="adaptive", cutoffs=(5, 20))
    model = LanguageModel.init(config, rng, dtype, order=rng.permutation(40))
    x, y = rng.integers(0, 40, (3, 7)), rng.integers(0, 40, (3, 7))
    state = model.init_state(3)
    nll, _ = model.token_nll(x, y, state)
    for t in range(7):
        logits, state = model.step(x[:, t], state)
        assert np.exp(logits).sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)
        np.testing.assert_allclose(-logits[np.arange(3), y[:, t]], nll[:, t], rtol=1e-4)


def test_words_are_ranked_by_frequency_ties_by_id():
    ids = np.array([4, 2, 2, 4, 0, 4, 1, 1, 3, 3])
    assert frequency_order(ids, 6).tolist() == [4, 1, 2, 3, 0, 5]


def test_tail_projections_shrink_by_four():
    assert tail_dims(200, 3) == [50, 12, 3] and tail_dims(8, 2) == [2, 1]


@pytest.mark.parametrize(
    "options",
    [dict(cutoffs=(3,)), dict(cutoffs=(2, 5, 9), dropout=0.3), dict(cutoffs=(4, 7), layers=1)],
)
def test_gradient_check_in_the_model(options):
    config = ModelConfig(vocab_size=11, hidden=8, softmax="adaptive", **options)
    errors = check_gradients(config, batch_size=3, bptt=5, seed=1)
    assert {"head.W", "head.b", "tail.0.P", "tail.0.W", "tail.0.b"} <= errors.keys()
    assert "Wy" not in errors
    assert max(errors.values()) < TOLERANCE, errors


def test_gradient_check_catches_a_wrong_tail_gradient(monkeypatch):
    real = lstm_lm.adaptive.adaptive_backward

    def broken(cache, p, grads, serial=None):
        dtop = real(cache, p, grads)
        grads["tail.0.P"] *= 1.001
        return dtop

    monkeypatch.setattr(lstm_lm.adaptive, "adaptive_backward", broken)
    config = ModelConfig(vocab_size=11, hidden=8, softmax="adaptive", cutoffs=(3,))
    assert check_gradients(config, bptt=4)["tail.0.P"] > TOLERANCE


def test_learns_a_markov_chain_to_its_true_perplexity(markov_corpus, tmp_path):
    data, true_ppl = markov_corpus  # 6 words and <eos>: head 2, tails [2, 4) and [4, 7)
    opts = "--layers 1 --hidden 32 --batch-size 16 --bptt 20 --epochs 2 --decay-after 1 --quiet"
    r = invoke("train", "--data", data, *opts.split(), "--optimizer", "adam", "--lr", 0.01,
               "--softmax", "adaptive", "--cutoffs", "2,4", "--out", tmp_path / "run")  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads(invoke("eval", tmp_path / "run", "--json").stdout)
    assert abs(result["ppl"] / true_ppl - 1) < 0.05, (result["ppl"], true_ppl)


@pytest.fixture(scope="module")
def adaptive_run(words, tmp_path_factory):
    """A small adaptive run on Zipf-distributed words over 300 types (conftest.words)."""
    out = tmp_path_factory.mktemp("adaptive") / "run"
    opts = "--layers 1 --hidden 16 --batch-size 8 --bptt 10 --max-steps 40 --quiet"
    r = invoke("train", "--data", words, *opts.split(), "--softmax", "adaptive", "--cutoffs",
               "20,100", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def test_the_checkpoint_records_the_layer_and_its_order(adaptive_run):
    c = checkpoint.load(adaptive_run)
    assert c.model.config.softmax == "adaptive" and c.model.config.cutoffs == (20, 100)
    with np.load(adaptive_run / "best.npz", allow_pickle=False) as z:
        assert z["head.W"].shape == (16, 22) and z["tail.1.W"].shape == (1, 201)
        assert "Wy" not in z.files
        order = z["order"]
    # ranked by the training split's frequency: w0 (the most frequent word) first
    assert c.vocab.itos[order[0]] == "w0" and sorted(order) == list(range(len(c.vocab)))
    info = invoke("info", adaptive_run)
    assert "adaptive softmax (cutoffs 20, 100)" in info.stdout


def test_sample_score_and_viz_work_on_it(adaptive_run, tmp_path):
    run = adaptive_run
    for args in (["--top-k", 5], ["--top-p", 0.9], ["--greedy"], ["--temperature", 0.7]):
        r = invoke("sample", run, "--seed-text", "w0 w1", "--length", 12, "--seed", 3, *args)
        assert r.exit_code == 0 and r.stdout.strip(), r.output
    text = tmp_path / "lines.txt"
    text.write_text("w0 w1 w2\nw5 w0\n")
    lines = [json.loads(x) for x in invoke("score", run, text, "--json").stdout.splitlines()]
    c = checkpoint.load(run)
    ids = np.array([c.vocab.stoi[w] for w in ["<eos>", "w5", "w0", "<eos>"]])
    logits, state = c.model.step(ids[:1], c.model.init_state(1))
    expected = logits[0, ids[1]]  # log p(w5 | <eos>): the adaptive distribution's
    for t in (1, 2):
        logits, state = c.model.step(ids[t : t + 1], state)
        expected += logits[0, ids[t + 1]]
    assert lines[1]["logprob"] == pytest.approx(expected, rel=1e-5)
    r = invoke("viz", run, "--text", "w0 w1 w2 w3 w0", "--out", tmp_path / "v.html")
    assert r.exit_code == 0, r.output


def test_extend_vocab_puts_new_words_in_the_last_cluster(adaptive_run, words, tmp_path):
    (tmp_path / "new.txt").write_text("w0 zebra w1 yak w2\n" * 100)
    source = DataSource("word", train=str(tmp_path / "new.txt"))
    old = checkpoint.load(adaptive_run, dtype="float64")
    run = init_run(adaptive_run, source, {}, {"dtype": "float64"}, tmp_path / "x",
                   extend_vocab=True)  # fmt: skip
    V = len(old.vocab)
    assert run.model.config.vocab_size == V + 2 and run.model.config.cutoffs == (20, 100)
    assert run.model.output.order[V:].tolist() == [V, V + 1]  # ranked last: the last cluster
    assert run.model.params["tail.1.W"].shape[1] == V + 2 - 100
    ids, _ = old.vocab.encode((words / "valid.txt").read_text()[:2000])
    x, y = ids[None, :-1], ids[None, 1:]
    before, _ = old.model.token_nll(x, y, old.model.init_state(1))
    after, _ = run.model.token_nll(x, y, run.model.init_state(1))
    assert np.abs(after - before).max() <= 4 * np.finfo(np.float64).eps * np.abs(before).max()


def test_extend_vocab_of_the_full_softmax_is_unchanged_by_the_split():
    """extend_vocabulary delegates the output columns to the layer: the full softmax's new
    columns are zero with a low bias, as before the adaptive softmax existed."""
    rng = np.random.default_rng(0)
    model = LanguageModel.init(ModelConfig(vocab_size=9, hidden=4), rng, "float64")
    bigger = extend_vocabulary(model, 12, rng)
    assert bigger.params["Wy"].shape == (4, 12) and not bigger.params["Wy"][:, 9:].any()
    assert (bigger.params["by"][9:] < bigger.params["by"][:9].min() - 30).all()


def test_fine_tuning_keeps_the_layer_and_refuses_to_change_it(adaptive_run, words, tmp_path):
    r = invoke("train", "--init-from", adaptive_run, "--data", words, "--max-steps", 5, "--quiet",
               "--out", tmp_path / "ft")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert checkpoint.load(tmp_path / "ft").model.config.softmax == "adaptive"
    r = invoke("train", "--init-from", adaptive_run, "--data", words, "--softmax", "full")
    assert r.exit_code == 2 and "--softmax" in r.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--cutoffs", "5"], 2, "--cutoffs sets the clusters of the adaptive softmax"),
        (["--softmax", "adaptive", "--cutoffs", "9,3"], 2, "give increasing positive numbers"),
        (["--softmax", "adaptive", "--cutoffs", "a"], 2, "not a list of whole numbers"),
        (["--softmax", "adaptive", "--cutoffs", "20,400"], 1, "every cutoff must be below"),
        (["--softmax", "adaptive"], 1, "give --cutoffs below 301"),
    ],
)
def test_bad_cutoffs_are_one_line(words, tmp_path, args, code, message):
    r = invoke("train", "--data", words, *args, "--max-steps", 1, "--out", tmp_path / "x")
    assert r.exit_code == code and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x" / "last.npz").exists()


def test_dry_run_shows_the_default_cutoffs():
    s = resolve(None, {"softmax": "adaptive"})
    assert s.values()["cutoffs"] == (2000, 10000, 50000)
    assert s.model_config(10_000).cutoffs == (2000,)
    assert s.model_config(60_000).cutoffs == (2000, 10000, 50000)


def test_bench_reports_it_on_zipf_tokens():
    r = invoke("bench", "--vocab", 3000, "--hidden", 32, "--softmax", "adaptive", "--zipf",
               "--repeats", 2, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["softmax"] == "adaptive" and out["cutoffs"] == [2000] and out["tokens"] == "zipf"
    assert out["train_tokens_per_s"] > 0
