"""Evaluation that adapts to the text: the neural cache (`eval --cache`) and dynamic
evaluation (`eval --dynamic`) against references written token by token, known answers,
exactness when switched off, only past tokens, and the CLI around them."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module

from lstm_lm import checkpoint
from lstm_lm.adapt import Cache, Dynamic, evaluate_adapted, rms_path
from lstm_lm.cache import trained_on
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig
from lstm_lm.dropout import Masks
from lstm_lm.dynamic import gradient_rms
from lstm_lm.evaluation import evaluate
from lstm_lm.model import LanguageModel
from lstm_lm.neural_cache import NeuralCache


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def random_model(tied=False, V=20, H=12, seed=0):
    rng = np.random.default_rng(seed)
    m = LanguageModel.init(ModelConfig(vocab_size=V, hidden=H, layers=2, tied=tied), rng,
                           "float64")  # fmt: skip
    for p in m.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    return m


def cache_reference(model, ids, N, theta, lam):
    """The cache's NLL at batch 1, one position at a time, straight from the formula."""
    x, y = ids[None, :-1], ids[None, 1:]
    nll, top, _ = model.token_nll_and_top(x, y, model.init_state(1))
    nll, top, y = nll[0], top[0], y[0]
    total = nll[0]
    for t in range(1, len(y)):
        past = slice(max(0, t - N), t)
        w = np.exp(theta * top[past] @ top[t] - (theta * top[past] @ top[t]).max())
        p_cache = w[y[past] == y[t]].sum() / w.sum()
        total += -np.log((1 - lam) * np.exp(-nll[t]) + lam * p_cache)
    return total


@pytest.mark.parametrize("N, bptt", [(1, None), (7, 3), (50, 64), (100, None), (5000, None)])
def test_cache_is_the_formula(N, bptt):
    """Windows shorter and longer than the cache, a cache longer than the text."""
    m = random_model()
    ids = np.random.default_rng(1).integers(0, 20, 1201)
    c = Cache(N, 0.7, 0.3)
    got, n = evaluate_adapted(m, ids, 1, c) if bptt is None else (None, None)
    if bptt is not None:  # the same through windows of bptt steps
        from lstm_lm.adapt import cached_scorer

        cache = NeuralCache(1, N, 12, 0.7, 0.3, np.float64)
        got, n = evaluate(m, ids, 1, bptt=bptt, scorer=cached_scorer(m, cache))
    assert n == 1200
    assert got == pytest.approx(cache_reference(m, ids, N, 0.7, 0.3), rel=1e-12)


def test_each_stream_has_its_own_cache():
    """At batch 3 each stream's score is the formula over that stream's text alone."""
    m = random_model()
    ids = np.random.default_rng(2).integers(0, 20, 601)  # 3 rows of 200 targets
    got, n = evaluate_adapted(m, ids, 3, Cache(30, 1.0, 0.5))
    assert n == 600
    # the rows after the first start primed with the text before them (their state): the
    # reference sees that context's tokens too, but scores and caches only the row's own
    x = ids[None, :-1]
    ref = 0.0
    for b in range(3):
        rows = slice(200 * b, 200 * (b + 1) + 1)
        seg = ids[rows]
        state = m.init_state(1)
        if b:  # the same priming as evaluate: up to 256 tokens of the text before the row
            state = m.advance(x[:, max(0, 200 * b - 256) : 200 * b], state)
        nll, top, _ = m.token_nll_and_top(seg[None, :-1], seg[None, 1:], state)
        nll, top, y = nll[0], top[0], seg[1:]
        ref += nll[0]
        for t in range(1, len(y)):
            past = slice(max(0, t - 30), t)
            s = top[past] @ top[t]
            w = np.exp(s - s.max())
            ref += -np.log(0.5 * np.exp(-nll[t]) + 0.5 * w[y[past] == y[t]].sum() / w.sum())
    assert got == pytest.approx(ref, rel=1e-12)


def test_a_constant_state_makes_a_unigram_cache():
    """A model whose top layer's output is the same at every position (zero recurrent
    weights and biases: h = 0): every past pair weighs the same, so p_cache(w) is w's share
    of the last N tokens: worked out from counts alone."""
    m = random_model()
    for k, p in m.params.items():
        if k.startswith("l"):
            p[...] = 0.0
    ids = np.random.default_rng(3).integers(0, 5, 401)
    N, lam = 40, 0.4
    got, _ = evaluate_adapted(m, ids, 1, Cache(N, 2.0, lam))
    p_model = np.exp(-m.token_nll(ids[None, :-1], ids[None, 1:], m.init_state(1))[0][0])
    y = ids[1:]
    expected = -np.log(p_model[0])
    for t in range(1, len(y)):
        window = y[max(0, t - N) : t]
        share = np.mean(window == y[t])
        expected += -np.log((1 - lam) * p_model[t] + lam * share)
    assert got == pytest.approx(expected, rel=1e-12)


def test_only_past_tokens_enter():
    """Changing the text after a position changes no score up to it (cache and dynamic)."""
    m = random_model(tied=True)
    rng = np.random.default_rng(4)
    a = rng.integers(0, 20, 301)
    b = a.copy()
    b[200:] = rng.integers(0, 20, 101)
    for cache, dyn in ((Cache(50, 1.0, 0.3), None), (None, Dynamic(0.05, 0.01, 5)),
                       (Cache(50, 1.0, 0.3), Dynamic(0.05, 0.01, 5))):  # fmt: skip
        first = [evaluate_adapted(m, t[:200], 1, cache, dyn)[0] for t in (a, b)]
        assert first[0] == first[1]
        whole = [evaluate_adapted(m, t, 1, cache, dyn)[0] for t in (a, b)]
        assert whole[0] != whole[1]


@pytest.mark.parametrize("tied", [False, True])
def test_switched_off_they_are_plain_eval(tied):
    m = random_model(tied=tied)
    ids = np.random.default_rng(5).integers(0, 20, 801)
    plain, n = evaluate(m, ids, 1)
    before = {k: p.copy() for k, p in m.params.items()}
    assert evaluate_adapted(m, ids, 1, Cache(100, 1.0, 0.0))[0] == pytest.approx(plain, rel=1e-12)
    rms = gradient_rms(m, ids, 4, 5)
    for decay in (0.0, 0.01):
        got, _ = evaluate_adapted(m, ids, 1, None, Dynamic(0.0, decay, 5), rms)
        assert got == pytest.approx(plain, rel=1e-12)
    evaluate_adapted(m, ids, 1, None, Dynamic(0.1, 0.01, 5), rms)  # adapts, then restores
    assert all(np.array_equal(before[k], m.params[k]) for k in before)


def dense_reference(m, ids, lr, decay, rms, bptt=5):
    """Krause's rule with every weight decayed at every segment (no lazy rows)."""
    theta0 = {k: p.copy() for k, p in m.params.items()}
    mean = sum(a.sum() for a in rms.values()) / sum(a.size for a in rms.values())
    step = {k: lr / (a + 1e-3) for k, a in rms.items()}
    rate = {k: np.minimum(decay * a / mean, 1.0) for k, a in rms.items()}
    state, total = m.init_state(1), 0.0
    for s in range(0, len(ids) - 1, bptt):
        x, y = ids[None, s : s + bptt], ids[None, s + 1 : s + bptt + 1]
        x = x[:, : y.shape[1]]
        r = m.loss_and_grads(x, y, state, masks=Masks.none(2))
        total += r.nll.sum()
        state = r.state
        for k, p in m.params.items():
            p += rate[k] * (theta0[k] - p) - step[k] * r.grads[k]
    for k, p in m.params.items():
        p[...] = theta0[k]
    return total


def test_lazy_decay_of_the_token_rows_is_the_dense_rule():
    """An untied model's one-hot rows decay lazily (a few are read at a time): the scores
    are those of decaying every weight at every segment."""
    m = random_model(V=60)
    ids = np.random.default_rng(6).integers(0, 60, 401)
    rms = gradient_rms(m, ids, 4, 5)
    got, _ = evaluate_adapted(m, ids, 1, None, Dynamic(0.05, 0.05, 5), rms)
    assert got == pytest.approx(dense_reference(m, ids, 0.05, 0.05, rms), rel=1e-10)


def test_dynamic_evaluation_learns_a_repeated_token():
    """A text of one token repeated: the static model gives it some fixed probability, the
    adapting one soon near certainty (a known answer: perplexity -> 1)."""
    m = random_model(tied=True)
    ids = np.full(2001, 3)
    static, n = evaluate(m, ids, 1)
    adapted, _ = evaluate_adapted(m, ids, 1, None, Dynamic(0.5, 0.0, 5))
    assert np.exp(static / n) > 2 and np.exp(adapted / n) < 1.2


def test_dynamic_evaluation_approaches_a_new_chains_true_perplexity(
    markov_chain_run, related_chain_corpus
):
    """A model of one Markov chain scoring text of a related one: adapting lowers its
    perplexity towards that chain's true perplexity, never below it by more than noise."""
    out, _ = markov_chain_run
    data, true_ppl = related_chain_corpus
    ckpt = checkpoint.load(out)
    ids, _ = ckpt.vocab.encode((data / "train.txt").read_text()[:24_000])
    rms = gradient_rms(ckpt.model, trained_on(ckpt).train, 16, 5, 20_000)
    static, n = evaluate(ckpt.model, ids, 1)
    adapted, _ = evaluate_adapted(ckpt.model, ids, 1, None, Dynamic(0.003, 0.0, 5), rms)
    static, adapted = np.exp(static / n), np.exp(adapted / n)
    assert adapted < static - 0.5 * (static - true_ppl)  # at least half the gap closed
    assert adapted > 0.97 * true_ppl, (static, adapted, true_ppl)


# --- the command ---------------------------------------------------------------------------


def test_eval_json_names_the_settings(tiny_run):
    r = invoke("eval", tiny_run, "--split", "valid", "--json", "--cache", 100, "--cache-theta",
               0.5, "--cache-lambda", 0.2)  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["cache"] == {"size": 100, "theta": 0.5, "lambda": 0.2} and "dynamic" not in out
    r = invoke("eval", tiny_run, "--split", "valid", "--json", "--dynamic")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["dynamic"]["bptt"] == 5 and out["dynamic"]["statistics"] == "training text"
    assert "cache" not in out


def test_cache_lambda_0_and_dynamic_lr_0_are_plain_eval(tiny_run):
    plain = json.loads(invoke("eval", tiny_run, "--json", "--batch-size", 1).stdout)
    for extra in (["--cache", 50, "--cache-lambda", 0], ["--dynamic", "--dynamic-lr", 0]):
        out = json.loads(invoke("eval", tiny_run, "--json", *extra).stdout)
        assert out["tokens"] == plain["tokens"]
        assert out["nll"] == pytest.approx(plain["nll"], rel=1e-6)  # float32 rounding


def test_dynamic_statistics_are_kept_beside_the_checkpoint_which_never_changes(tiny_run):
    best = tiny_run / "best.npz"
    before = best.read_bytes()
    stats = rms_path(best, 5)
    stats.unlink(missing_ok=True)
    r = invoke("eval", tiny_run, "--dynamic", "--json")
    assert r.exit_code == 0 and stats.exists() and "gradient statistics" in r.stderr
    first = stats.stat().st_mtime_ns
    r = invoke("eval", tiny_run, "--dynamic", "--json")
    assert r.exit_code == 0 and "gradient statistics" not in r.stderr
    assert stats.stat().st_mtime_ns == first  # read, not written again
    assert best.read_bytes() == before


def test_an_exported_model_without_its_training_text_takes_plain_steps(tmp_path):
    """Dynamic evaluation where the training text is gone: plain SGD steps, said so."""
    require_module("safetensors", "export")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("train", "valid"):
        (data / f"{name}.txt").write_text(" ".join(rng.choice(list("abcdef"), 2000)) + "\n")
    args = "--layers 1 --hidden 8 --batch-size 4 --bptt 5 --max-steps 5 --quiet".split()
    assert invoke("train", "--data", data, *args, "--out", tmp_path / "r").exit_code == 0
    f = tmp_path / "m.safetensors"
    assert invoke("export", tmp_path / "r", f).exit_code == 0
    text = tmp_path / "t.txt"
    text.write_text((data / "valid.txt").read_text())
    for name in ("train", "valid"):
        (data / f"{name}.txt").unlink()
    r = invoke("eval", f, "--file", text, "--dynamic", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dynamic"]["statistics"] == "none: plain SGD steps"
    assert "plain SGD steps" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cache-theta", "1"], "give --cache N"),
        (["--dynamic-lr", "0.1"], "goes with --dynamic"),
        (["--dynamic", "--batch-size", "4"], "one stream"),
        (["--tune", "cache", "--split", "test"], "valid split only"),
        (["--cache", "0"], "--cache"),
        (["--cache", "10", "--cache-lambda", "1.5"], "--cache-lambda"),
        (["--tune-tokens", "100"], "goes with --tune"),
    ],
)
def test_options_that_do_not_go_together(tiny_run, args, message):
    r = invoke("eval", tiny_run, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("what", ["cache", "dynamic"])
def test_tune_prints_the_grid_and_the_best_command(tiny_run, what):
    r = invoke("eval", tiny_run, "--tune", what, "--json", "--tune-tokens", 1500)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["split"] == "valid" and out["tune"] == what and len(out["grid"]) >= 9
    assert out["tokens"] == 1500
    assert out["best"]["ppl"] == min(g["ppl"] for g in out["grid"])
    flag = "--cache-theta" if what == "cache" else "--dynamic-lr"
    assert out["command"].startswith("lstm-lm eval ")
    if out["best"].get("theta", 1) is not None:
        assert flag in out["command"]
    r = invoke("eval", tiny_run, "--tune", what)
    assert r.exit_code == 0 and "best on valid: lstm-lm eval" in r.stdout


def test_score_reads_the_lines_as_one_document_with_a_cache_or_dynamic(tiny_run, tmp_path):
    """The same line twenty times: as sentences each scores the same; as one document with a
    cache or dynamic evaluation the repeats score better than the first, and every line's
    tokens (and closing <eos>) are counted as before."""
    f = tmp_path / "lines.txt"
    f.write_text("a b c d e f f e d c b a\n" * 20)

    def scores(*extra):
        r = invoke("score", tiny_run, f, "--json", *extra)
        assert r.exit_code == 0, r.output
        return [json.loads(line) for line in r.stdout.splitlines()]

    plain = scores()
    assert len({round(s["logprob"], 9) for s in plain}) == 1
    for extra in (["--cache", 100, "--cache-lambda", 0.5], ["--dynamic", "--dynamic-lr", 0.01]):
        doc = scores(*extra)
        assert [s["tokens"] for s in doc] == [s["tokens"] for s in plain] == [13] * 20
        assert all(s["logprob"] > doc[0]["logprob"] + 1 for s in doc[5:]), extra
    r = invoke("score", tiny_run, f, "--cache-theta", 1)
    assert r.exit_code == 2 and "give --cache N" in r.output
