"""The LSTM: gradient checks, the literal reference, a pinned forward, dtypes, stability."""

import numpy as np
import pytest

from lstm_lm.cells import embed_backward, sigmoid_
from lstm_lm.config import ModelConfig
from lstm_lm.gradcheck import TOLERANCE, check_gradients
from lstm_lm.literal import literal_loss_and_grads
from lstm_lm.losses import softmax_cross_entropy_
from lstm_lm.model import LanguageModel, named_views
from lstm_lm.softmax import VOCAB_CHUNK, dtop


@pytest.mark.parametrize(
    "layers,dropout,input_dropout",
    [(1, 0.0, 0.0), (2, 0.0, 0.0), (2, 0.4, 0.0), (3, 0.2, 0.0), (1, 0.0, 0.5), (2, 0.3, 0.3)],
)
def test_gradient_check(layers, dropout, input_dropout):
    """Every parameter array and the initial state (h, c of every layer), non-zero initial
    state, T = 5, fixed dropout masks: relative error < 1e-6."""
    config = ModelConfig(
        vocab_size=11, hidden=6, layers=layers, dropout=dropout, input_dropout=input_dropout
    )
    errors = check_gradients(config, batch_size=2, bptt=5, seed=layers)
    expected = (
        {f"l{k}.{w}{g}" for k in range(layers) for w in "Wb" for g in "fico"}
        | {"Wy", "by"}
        | {f"state.l{k}.{j}" for k in range(layers) for j in (0, 1)}
    )
    assert set(errors) == expected
    assert max(errors.values()) < TOLERANCE, errors


REGULARISED = [
    dict(variational=True, dropout=0.4, input_dropout=0.3),
    dict(word_dropout=0.4),
    dict(weight_drop=0.5),
    dict(variational=True, dropout=0.3, input_dropout=0.3, word_dropout=0.3, weight_drop=0.4),
]


@pytest.mark.parametrize("options", REGULARISED)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "janet"])
def test_gradient_check_of_the_2016_17_regularisers(options, cell):
    """Variational, word dropout and weight drop with fixed masks (weight drop changes the
    weights the time loop multiplies by, so its backward must mask their gradient)."""
    config = ModelConfig(vocab_size=11, hidden=5, layers=2, cell=cell, **options)
    errors = check_gradients(config, batch_size=2, bptt=5, seed=3)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("options", [dict(), dict(dropout=0.3, weight_drop=0.4, variational=True)])
def test_gradient_check_with_the_tokens_inside_each_step(options):
    """A vocabulary small beside the hidden size (char level) takes layer 0's tokens inside
    each step's product (cells.lstm_forward_tokens); its gradients check as the others."""
    config = ModelConfig(vocab_size=3, hidden=32, layers=2, **options)
    m = LanguageModel.init(config, np.random.default_rng(0), "float64")
    assert m._tokens_in_step(np.zeros((5, 2), int), None)
    errors = check_gradients(config, batch_size=2, bptt=5, seed=5)
    assert max(errors.values()) < TOLERANCE, errors


def test_gradient_check_catches_a_weight_drop_backward_left_out(monkeypatch):
    import lstm_lm.model

    monkeypatch.setattr(lstm_lm.model, "weight_drop_backward", lambda dWh, cache: dWh)
    errors = check_gradients(ModelConfig(vocab_size=7, hidden=4, layers=1, weight_drop=0.5))
    assert errors["l0.Wf"] > TOLERANCE


def test_gradient_check_catches_a_wrong_backward(broken_lstm_backward):
    """The check can fail: break one term of the backward and it must notice."""
    errors = check_gradients(ModelConfig(vocab_size=7, hidden=4, layers=1), bptt=3)
    assert errors["l0.Wf"] > TOLERANCE


def random_model(rng, layers, dropout=0.0, V=7, H=5, input_dropout=0.0, **more):
    config = ModelConfig(
        vocab_size=V, hidden=H, layers=layers, dropout=dropout, input_dropout=input_dropout, **more
    )
    m = LanguageModel.init(config, rng, "float64")
    for p in m.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    return m


@pytest.mark.parametrize(
    "layers,dropout,input_dropout,more",
    [(1, 0.0, 0.0, {}), (2, 0.3, 0.0, {}), (2, 0.3, 0.4, {})]
    + [(2, o.pop("dropout", 0.0), o.pop("input_dropout", 0.0), o) for o in map(dict, REGULARISED)],
)
def test_fast_path_equals_literal_formulation(layers, dropout, input_dropout, more):
    rng = np.random.default_rng(5)
    m = random_model(rng, layers, dropout, input_dropout=input_dropout, **more)
    B, T, H = 3, 4, 5
    x, y = rng.integers(0, 7, (B, T)), rng.integers(0, 7, (B, T))
    state = [(rng.normal(size=(B, H)), rng.normal(size=(B, H))) for _ in range(layers)]
    masks = m.draw_masks(T, B, rng)
    r = m.loss_and_grads(x, y, state, masks=masks, scale=3.0)
    P = {k: v.copy() for k, v in m.named_arrays().items()}
    loss, G, final, dstate0 = literal_loss_and_grads(P, layers, x, y, state, masks, 3.0)
    fast = {k: v.copy() for k, v in named_views(m.config, r.grads).items()}
    assert abs(loss - r.loss) < 1e-10
    for k in G:
        np.testing.assert_allclose(fast[k], G[k], rtol=0, atol=1e-10, err_msg=k)
    for a, b in zip(final, r.state):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-10)
    for a, b in zip(dstate0, r.dstate0):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-10)


def test_pinned_forward_names_the_gates():
    """One step of a 1-unit LSTM with a distinct weight per gate, computed by hand from the
    design's equations: a swapped gate order changes the result."""
    m = LanguageModel.init(
        ModelConfig(vocab_size=2, hidden=1, layers=1), np.random.default_rng(0), "float64"
    )
    A = m.named_arrays()
    # rows [h; x0; x1]; token 1 is the input, h0 = 0.5, c0 = -0.25
    for g, (wh, wx) in {
        "f": (0.1, 0.2),
        "i": (-0.3, 0.4),
        "o": (0.5, -0.6),
        "c": (0.7, 0.8),
    }.items():
        A[f"l0.W{g}"][:, 0] = [wh, 0.0, wx]
        A[f"l0.b{g}"][0] = 0.05
    A["Wy"][...] = [[1.0, -1.0]]
    A["by"][...] = 0.0
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    h0, c0 = 0.5, -0.25
    f, i = sig(0.1 * h0 + 0.2 + 0.05), sig(-0.3 * h0 + 0.4 + 0.05)
    o, g = sig(0.5 * h0 - 0.6 + 0.05), np.tanh(0.7 * h0 + 0.8 + 0.05)
    c = f * c0 + i * g
    h = o * np.tanh(c)
    logits, state = m.step(np.array([1]), [(np.array([[h0]]), np.array([[c0]]))])
    assert state[0][0][0, 0] == pytest.approx(h, abs=1e-14)
    assert state[0][1][0, 0] == pytest.approx(c, abs=1e-14)
    np.testing.assert_allclose(logits[0], [h, -h], atol=1e-14)
    assert h == pytest.approx(0.1375630, abs=1e-7)  # the number itself, pinned


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_are_kept(dtype):
    rng = np.random.default_rng(0)
    m = LanguageModel.init(ModelConfig(vocab_size=13, hidden=4, layers=2, dropout=0.3), rng, dtype)
    x = rng.integers(0, 13, (2, 3))
    r = m.loss_and_grads(x, x, m.init_state(2), rng=rng, scale=3.0)
    assert all(g.dtype == np.dtype(dtype) for g in r.grads.values())
    assert all(s.dtype == np.dtype(dtype) for layer in r.state + r.dstate0 for s in layer)
    assert all(p.dtype == np.dtype(dtype) for p in m.params.values())


def test_initial_loss_is_log_vocab():
    """A fresh small-init model predicts nearly uniformly: loss ~ ln V."""
    rng = np.random.default_rng(0)
    m = LanguageModel.init(ModelConfig(vocab_size=500, hidden=16, layers=2, init_scale=0.01), rng)
    x = rng.integers(0, 500, (4, 10))
    assert m.loss_and_grads(x, x, m.init_state(4)).loss == pytest.approx(np.log(500), rel=1e-3)


def test_stable_for_huge_values():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        a = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
        np.testing.assert_allclose(sigmoid_(a.copy()), [0, 0, 0.5, 1, 1], atol=1e-30)
        logits = np.array([[1e4, 0.0, -1e4], [3e38, 3e38, 0.0]], np.float32)
        nll = softmax_cross_entropy_(logits, np.array([0, 1]), dscale=1.0)
        np.testing.assert_allclose(nll, [0.0, np.log(2)], atol=1e-6)
        assert np.isfinite(logits).all()


def test_embed_backward_is_a_scatter_add():
    rng = np.random.default_rng(0)
    tokens = np.array([[3, 1], [3, 0], [1, 3]])
    d = rng.normal(size=(3, 2, 4))
    rows, drows = embed_backward(d, tokens)
    dense = np.zeros((5, 4))
    np.add.at(dense, tokens.ravel(), d.reshape(-1, 4))
    assert rows.tolist() == [0, 1, 3]
    np.testing.assert_allclose(drows, dense[rows])


def test_state_is_carried_between_windows():
    """Two windows with the state carried give the same loss as one window over both."""
    rng = np.random.default_rng(2)
    m = random_model(rng, 2)
    x, y = rng.integers(0, 7, (2, 8)), rng.integers(0, 7, (2, 8))
    whole = m.loss_and_grads(x, y, m.init_state(2)).loss
    a = m.loss_and_grads(x[:, :5], y[:, :5], m.init_state(2))
    b = m.loss_and_grads(x[:, 5:], y[:, 5:], a.state)
    assert (a.loss * 5 + b.loss * 3) / 8 == pytest.approx(whole, abs=1e-12)


def test_threaded_softmax_is_identical():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (37, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 37)
    a, b = logits.copy(), logits.copy()
    with ThreadPoolExecutor(3) as pool:
        nll_threaded = softmax_cross_entropy_(a, targets, 0.5, pool, chunks=3)
    nll = softmax_cross_entropy_(b, targets, 0.5)
    assert (nll == nll_threaded).all() and (a == b).all()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(nll, -np.log(p[np.arange(37), targets]), rtol=1e-5)


def test_evaluation_nll_shifts_only_the_rows_that_need_it():
    """Without dscale (evaluation) a row's log-sum-exp is taken unshifted unless its max is
    far from 0: the NLL equals the float64 log-softmax for ordinary rows, rows that would
    overflow, rows that would underflow to nothing, and over the threads' chunks."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (70, 300))
    logits[5] += 500.0  # exp overflows float32 unshifted
    logits[6] -= 500.0  # every term underflows unshifted
    logits[7, 3] = 61.0  # just beyond the no-shift range
    logits[8, 3] = 59.0  # just within it: terms up to e^59
    targets = rng.integers(0, 300, 70)
    shifted = logits - logits.max(1, keepdims=True)
    want = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(70), targets]
    x = logits.astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        nll = softmax_cross_entropy_(x.copy(), targets, None)
        with ThreadPoolExecutor(2) as pool:
            nll_threaded = softmax_cross_entropy_(x.copy(), targets, None, pool, chunks=2)
    assert nll.dtype == np.float64 and np.isfinite(nll).all()
    np.testing.assert_allclose(nll, want, rtol=1e-5, atol=1e-4)
    assert (nll == nll_threaded).all()


def test_the_gradient_into_the_top_layer_summed_by_blocks_of_words():
    """dtop sums dlogits Wy^T over VOCAB_CHUNK words at a time: the product, to float32
    rounding, for vocabularies of one block and of several, the last one partial."""
    rng = np.random.default_rng(0)
    for V in (50, VOCAB_CHUNK, 2 * VOCAB_CHUNK + 7):
        dlogits = rng.normal(size=(30, V)).astype(np.float32)
        Wy = rng.normal(size=(16, V)).astype(np.float32)
        exact = dlogits.astype(np.float64) @ Wy.T.astype(np.float64)
        got = dtop(dlogits, Wy)
        assert got.shape == (30, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
