"""GRU, vanilla RNN and JANET: the LSTM's checks for each, the layer API, the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_lm import checkpoint
from lstm_lm.cells import (
    ONE_HOT_ROWS,
    embed_backward,
    layer_backward,
    layer_forward,
    layer_init,
    lstm_forward,
    swap_last,
    transposed,
)
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig
from lstm_lm.gradcheck import TOLERANCE, check_gradients, entries, max_relative_error
from lstm_lm.model import LanguageModel

GATES = {"lstm": "fico", "gru": "zrn", "rnn": "h", "janet": "fc"}
N_STATE = {"lstm": 2, "gru": 1, "rnn": 1, "janet": 1}


@pytest.mark.parametrize("cell", ["gru", "rnn", "janet"])
@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (2, 0.3)])
def test_gradient_check(cell, layers, dropout):
    errors = check_gradients(
        ModelConfig(vocab_size=11, hidden=6, layers=layers, dropout=dropout, cell=cell),
        bptt=5,
        seed=layers,
    )
    expected = (
        {f"l{k}.{w}{g}" for k in range(layers) for w in "Wb" for g in GATES[cell]}
        | {"Wy", "by"}
        | {f"state.l{k}.0" for k in range(layers)}
    )
    assert set(errors) == expected
    assert max(errors.values()) < TOLERANCE, errors


def one_unit_model(cell, weights):
    """A 1-unit, 2-token model; weights: gate -> (w_h, w_x for token 1, bias)."""
    m = LanguageModel.init(
        ModelConfig(vocab_size=2, hidden=1, layers=1, cell=cell),
        np.random.default_rng(0),
        "float64",
    )
    A = m.named_arrays()
    for g, (wh, wx, b) in weights.items():
        A[f"l0.W{g}"][:, 0] = [wh, 0.0, wx]
        A[f"l0.b{g}"][0] = b
    return m


sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731


@pytest.mark.parametrize("cell", ["gru", "rnn", "janet"])
def test_pinned_step_follows_the_equations(cell):
    """One step from h0 = 0.5 on token 1, computed by hand from the issue's equations."""
    w = {
        "z": (0.1, 0.2, 0.05),
        "r": (-0.3, 0.4, 0.05),
        "n": (0.5, -0.6, 0.05),
        "h": (0.7, 0.8, -0.1),
        "f": (0.3, -0.2, 0.1),
        "c": (0.6, 0.9, -0.05),
    }
    m = one_unit_model(cell, {g: w[g] for g in GATES[cell]})
    h0 = 0.5
    if cell == "rnn":
        h = np.tanh(0.7 * h0 + 0.8 - 0.1)
    elif cell == "gru":
        z, r = sig(0.1 * h0 + 0.2 + 0.05), sig(-0.3 * h0 + 0.4 + 0.05)
        n = np.tanh(0.5 * (r * h0) - 0.6 + 0.05)  # reset applied before the matmul
        h = (1 - z) * n + z * h0
    else:
        s, g = 0.3 * h0 - 0.2 + 0.1, np.tanh(0.6 * h0 + 0.9 - 0.05)
        h = sig(s) * h0 + (1 - sig(s - 1.0)) * g  # beta = 1
    _, state = m.step(np.array([1]), [(np.array([[h0]]),)])
    assert state[0][0][0, 0] == pytest.approx(h, abs=1e-14)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "janet"])
def test_layer_api_gradients(cell):
    """The dense, batch-major layer: gradients of every input, weight and initial state."""
    rng = np.random.default_rng(1)
    B, T, D, H = 2, 4, 3, 5
    W, b = layer_init(cell, D, H, rng, 0.5)
    b[...] = rng.uniform(-0.5, 0.5, b.shape)
    x = rng.normal(size=(B, T, D))
    state = tuple(rng.normal(size=(B, H)) for _ in range(N_STATE[cell]))
    C, Cs = rng.normal(size=(B, T, H)), [rng.normal(size=(B, H)) for _ in state]

    def loss():
        hs, sT, _ = layer_forward(cell, x, state, W, b)
        return float((hs * C).sum() + sum((s * c).sum() for s, c in zip(sT, Cs)))

    hs, _, cache = layer_forward(cell, x, state, W, b)
    assert hs.shape == (B, T, H)
    dx, dW, db, dstate0 = layer_backward(C, tuple(Cs), cache)
    for arr, grad in [(W, dW), (b, db), (x, dx), *zip(state, dstate0)]:
        assert max_relative_error(loss, arr, grad, entries(arr.shape, rng, 40)) < TOLERANCE


def test_chrono_initialisation():
    m = LanguageModel.init(
        ModelConfig(vocab_size=5, hidden=50, layers=1, cell="janet", chrono=100),
        np.random.default_rng(0),
    )
    bf = m.named_arrays()["l0.bf"]
    assert (bf >= 0).all() and (bf <= np.log(99) + 1e-6).all() and bf.std() > 0.3


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("cell", ["gru", "rnn", "janet"])
def test_cells_through_the_cli(cell, markov_corpus, tmp_path):
    data, _ = markov_corpus
    out = tmp_path / cell
    opts = "--layers 2 --hidden 8 --max-steps 15 --batch-size 8 --bptt 10 --quiet"
    r = invoke("train", "--data", data, "--cell", cell, "--out", out, *opts.split())
    assert r.exit_code == 0, r.output
    c = checkpoint.load(out)
    assert c.model.config.cell == cell
    with np.load(out / "last.npz", allow_pickle=False) as z:
        assert {f"l1.W{g}" for g in GATES[cell]} <= set(z.files)
    # eval of the saved checkpoint reproduces the loss measured in training (same batch of 8
    # streams, same windows): the cell's gate blocks survive the checkpoint in their order
    r = invoke("eval", out, "--split", "valid", "--batch-size", 8, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["nll"] == pytest.approx(c.train_state["best_valid"], rel=1e-12)
    r = invoke("sample", out, "--seed-text", "a", "--length", 5, "--seed", 0)
    assert r.exit_code == 0 and len(r.stdout.split()) == 6
    r = invoke("bench", "--cell", cell, "--vocab", 50, "--hidden", 8, "--repeats", 2, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["cell"] == cell


def test_chrono_needs_janet():
    r = invoke("train", "--cell", "lstm", "--chrono", 50)
    assert r.exit_code == 2 and "Error: --chrono needs --cell janet" in r.output


@pytest.mark.parametrize("vocab", [20, 5_000])  # few distinct tokens (one-hot GEMM), many (sort)
def test_token_rows_gradient_sums_each_tokens_positions(vocab):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, (40, 25))  # T x B: 1,000 positions
    dxproj = rng.standard_normal((40, 25, 12))
    rows, drows = embed_backward(dxproj, tokens)
    assert (len(rows) <= ONE_HOT_ROWS) == (vocab == 20)  # both ways are exercised
    dense = np.zeros((vocab, 12))
    np.add.at(dense, tokens.ravel(), dxproj.reshape(-1, 12))
    np.testing.assert_array_equal(rows, np.unique(tokens))
    np.testing.assert_allclose(drows, dense[rows], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (5, 20), (64, 256), (130, 520), (20, 1024), (9, 2048)])
def test_transposed_is_a_contiguous_copy_of_the_transpose(shape):
    W = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    WT = transposed(W)
    assert WT.flags.c_contiguous and WT.dtype == W.dtype
    np.testing.assert_array_equal(WT, W.T)


# (3, 32, 2048) float32 has rows 8 KiB apart, the padded way; (2, 1024, 5) float64 columns 8 KiB
# apart on the way back; the others the straight copy.
@pytest.mark.parametrize(
    "shape,dtype",
    [((3, 32, 2048), np.float32), ((2, 1024, 5), np.float64), ((4, 20, 800), np.float32),
     ((1, 1, 3), np.float64)],
)  # fmt: skip
def test_swap_last_is_a_contiguous_copy_of_the_swap(shape, dtype):
    a = np.random.default_rng(0).normal(size=shape).astype(dtype)
    b = swap_last(a)
    assert b.flags.c_contiguous and b.dtype == a.dtype
    np.testing.assert_array_equal(b, a.transpose(0, 2, 1))
    np.testing.assert_array_equal(swap_last(b), a)


def test_lstm_cache_is_batch_major_over_feature_major_storage():
    """viz reads the cache as (T, B, .); the backward takes the feature-major arrays under it."""
    rng = np.random.default_rng(0)
    T, B, H = 3, 2, 4
    hs, (hT, cT), cache = lstm_forward(
        rng.normal(size=(T, B, 4 * H)), (rng.normal(size=(B, H)), rng.normal(size=(B, H))),
        rng.normal(size=(H, 4 * H)),
    )  # fmt: skip
    assert cache.h.shape == cache.c.shape == (T + 1, B, H) and cache.act.shape == (T, B, 4 * H)
    assert cache.act.transpose(0, 2, 1).flags.c_contiguous
    np.testing.assert_array_equal(hs, cache.h[1:])
    np.testing.assert_array_equal(hT, cache.h[T])
    np.testing.assert_array_equal(cT, cache.c[T])
    np.testing.assert_array_equal(cache.tanh_c, np.tanh(cache.c[1:]))


@pytest.mark.parametrize("T", [1, 7])
def test_lstm_forward_tokens_is_the_gather_then_the_loop(T):
    """The tokens inside each step's product: the outputs, the final state and the cache of
    the row gather then the loop, to float64 rounding, and the backward the same from it."""
    from lstm_lm.cells import embed_forward, lstm_backward, lstm_forward, lstm_forward_tokens

    rng = np.random.default_rng(0)
    V, H, B = 5, 8, 3
    Wx, Wh = rng.normal(size=(V, 4 * H)), rng.normal(size=(H, 4 * H))
    b = rng.normal(size=4 * H)
    tokens = rng.integers(0, V, (T, B))
    state0 = (rng.normal(size=(B, H)), rng.normal(size=(B, H)))
    want = lstm_forward(embed_forward(tokens, Wx, b), state0, Wh)
    got = lstm_forward_tokens(tokens, Wx, b, state0, Wh)
    for w, g in zip([want[0], *want[1], *want[2][:4]], [got[0], *got[1], *got[2][:4]]):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    dhs = rng.normal(size=(T, B, H))
    for w, g in zip(
        lstm_backward(dhs, (None, None), want[2]), lstm_backward(dhs, (None, None), got[2])
    ):
        for wa, ga in zip(w if isinstance(w, tuple) else [w], g if isinstance(g, tuple) else [g]):
            np.testing.assert_allclose(ga, wa, rtol=1e-10, atol=1e-12)
