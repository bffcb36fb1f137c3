"""Sampling draws from exactly the distribution it promises: softmax(logits / T), cut to the K
most likely tokens or to the nucleus of probability P, for fixed logits, checked by a
chi-square goodness-of-fit test on many seeded draws; through `draw`, through a model whose
logits are known, and through `lstm-lm sample --temperature / --top-k / --top-p`."""

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import checkpoint
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.data import DataSource, Vocab
from lstm_lm.model import LanguageModel
from lstm_lm.sampling import draw, generate

LOGITS = np.array([2.0, 0.5, -1.0, 1.2, 0.0, -0.4, 1.9, -2.5])  # (V,) no two equal
DRAWS = 20_000
# chi-square with at most 7 degrees of freedom exceeds 35 with probability below 1e-5: a
# correct sampler fails this bound for one seed in 100,000; each wrong one below, by far
CHI2_BOUND = 35.0


def expected(logits: np.ndarray, T: float = 1.0, K: int | None = None,
             P: float | None = None) -> np.ndarray:  # fmt: skip
    """The promised distribution, computed from its definition: softmax(logits / T); only
    the K largest logits; then only the fewest most likely tokens whose probability
    reaches P; renormalised after each cut."""
    p = np.exp(logits / T - np.max(logits / T))
    p /= p.sum()
    order = np.argsort(-logits)  # most likely first (temperature keeps the order)
    if K is not None:
        p[order[K:]] = 0
        p /= p.sum()
    if P is not None:
        cumulative = np.cumsum(p[order])
        keep = int(np.argmax(cumulative >= P - 1e-12)) + 1  # the first prefix that reaches P
        p[order[keep:]] = 0
        p /= p.sum()
    return p


def chi2(counts: np.ndarray, p: np.ndarray) -> float:
    """Pearson's statistic of the counts against p; inf when a token outside p's support
    was drawn."""
    n = counts.sum()
    if np.any(counts[p == 0] > 0):
        return float("inf")
    support = p > 0
    e = n * p[support]
    return float(np.sum((counts[support] - e) ** 2 / e))


CASES = [
    dict(T=1.0), dict(T=0.5), dict(T=2.0), dict(T=0.7, K=3), dict(K=1), dict(K=5),
    dict(P=0.5), dict(P=0.9), dict(T=1.5, P=0.8), dict(T=0.8, K=4, P=0.7),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}{v}" for k, v in c.items()))
def test_draw_follows_the_promised_distribution(case):
    T, K, P = case.get("T", 1.0), case.get("K"), case.get("P")
    rng = np.random.default_rng(0)
    ids = [draw(LOGITS, rng, T, K, P) for _ in range(DRAWS)]
    counts = np.bincount(ids, minlength=len(LOGITS))
    p = expected(LOGITS, T, K, P)
    assert chi2(counts, p) < CHI2_BOUND, (counts, np.round(DRAWS * p))


def test_the_check_catches_the_planted_mistakes():
    """The mistakes the test above exists for fail it: logits * T for logits / T, a top-k
    that keeps K - 1 tokens, a nucleus one token short."""
    rng = np.random.default_rng(0)
    for T in (0.5, 2.0):
        counts = np.bincount([draw(LOGITS * T, rng) for _ in range(DRAWS)], minlength=8)
        assert chi2(counts, expected(LOGITS, T)) > 10 * CHI2_BOUND
    for K in (2, 5):
        counts = np.bincount([draw(LOGITS, rng, top_k=K - 1) for _ in range(DRAWS)], minlength=8)
        assert chi2(counts, expected(LOGITS, K=K)) > 10 * CHI2_BOUND
    short = expected(LOGITS, P=0.9)
    short[np.argsort(-LOGITS)[int(np.count_nonzero(short)) - 1]] = 0  # the nucleus less one
    counts = np.bincount([draw(LOGITS, rng, top_p=0.9) for _ in range(DRAWS)], minlength=8)
    assert chi2(counts, short / short.sum()) == float("inf")


def test_greedy_and_the_limits():
    rng = np.random.default_rng(0)
    assert {draw(LOGITS, rng, greedy=True) for _ in range(50)} == {0}
    assert {draw(LOGITS, rng, top_k=1) for _ in range(200)} == {0}
    assert {draw(LOGITS, rng, 1e-3) for _ in range(200)} == {0}  # T -> 0: the argmax
    counts = np.bincount([draw(LOGITS, rng, 1e4) for _ in range(DRAWS)], minlength=8)
    assert chi2(counts, np.full(8, 1 / 8)) < CHI2_BOUND  # T -> inf: uniform


def constant_model(logits: np.ndarray) -> LanguageModel:
    """A model whose next-token logits are `logits` whatever it has read: every weight zero,
    the output bias the logits."""
    config = ModelConfig(vocab_size=len(logits), hidden=4, layers=1)
    model = LanguageModel.init(config, np.random.default_rng(0), "float64")
    for a in model.params.values():
        a[...] = 0
    model.params["by"][...] = logits
    return model


def test_generate_draws_each_token_from_the_promised_distribution():
    model = constant_model(LOGITS)
    for T, K, P in ((1.0, None, None), (0.5, 3, None), (2.0, None, 0.8)):
        ids = list(generate(model, np.array([0]), DRAWS, np.random.default_rng(1), T, K,
                            top_p=P))  # fmt: skip
        counts = np.bincount(ids, minlength=len(LOGITS))
        assert chi2(counts, expected(LOGITS, T, K, P)) < CHI2_BOUND


@pytest.mark.parametrize("options, T, K, P", [
    ([], 1.0, None, None),
    (["--temperature", "0.5"], 0.5, None, None),
    (["--temperature", "2"], 2.0, None, None),
    (["--top-k", "3"], 1.0, 3, None),
    (["--top-p", "0.8", "--temperature", "1.5"], 1.5, None, 0.8),
])  # fmt: skip
def test_the_sample_command_draws_what_its_options_say(tmp_path, options, T, K, P):
    words = tuple(f"w{i}" for i in range(len(LOGITS)))
    path = tmp_path / "constant.npz"
    checkpoint.save(path, constant_model(LOGITS), Vocab(words, "word"), TrainConfig(),
                    {"step": 0}, DataSource("word", train=str(tmp_path / "t.txt")))  # fmt: skip
    r = CliRunner().invoke(main, ["sample", str(path), "--seed-text", "w0", "--length",
                                  str(DRAWS // 4), "--seed", "3", *options])  # fmt: skip
    assert r.exit_code == 0, r.output
    drawn = Counter(r.stdout.split()[1:])  # after the seed word
    counts = np.array([drawn[w] for w in words])
    assert counts.sum() == DRAWS // 4
    assert chi2(counts, expected(LOGITS, T, K, P)) < CHI2_BOUND, json.dumps(dict(drawn))
