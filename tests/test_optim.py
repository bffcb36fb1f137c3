"""Optimisers and clipping, dense and on sparse rows."""

import numpy as np
import pytest

from lstm_lm.optim import ASGD, SGD, Adagrad, Adam, clip_global_norm_
from lstm_lm.train import stalled


def params_and_grads(rng, sparse=True):
    p = {
        "W": rng.normal(size=(6, 3)).astype(np.float32),
        "b": rng.normal(size=3).astype(np.float32),
    }
    g = {"W": np.zeros((6, 3), np.float32), "b": rng.normal(size=3).astype(np.float32)}
    rows = np.array([1, 4])
    g["W"][rows] = rng.normal(size=(2, 3))
    return p, g, ({"W": rows} if sparse else None)


def test_clip_global_norm():
    g = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([[4.0]], np.float32)}
    assert clip_global_norm_(g, 10.0) == pytest.approx(5.0)
    assert g["a"][0] == 3.0  # under the limit: untouched
    assert clip_global_norm_(g, 1.0) == pytest.approx(5.0)
    assert np.sqrt((g["a"] ** 2).sum() + (g["b"] ** 2).sum()) == pytest.approx(1.0)
    assert g["a"].dtype == np.float32


@pytest.mark.parametrize("cls", [SGD, Adagrad, Adam])
def test_sparse_rows_match_dense(cls):
    rng = np.random.default_rng(0)
    p1, g1, rows = params_and_grads(rng)
    p2, g2 = {k: v.copy() for k, v in p1.items()}, {k: v.copy() for k, v in g1.items()}
    o1, o2 = cls(p1), cls(p2)
    for _ in range(3):
        a, b = {k: v.copy() for k, v in g1.items()}, {k: v.copy() for k, v in g2.items()}
        assert clip_global_norm_(a, 0.5, rows) == pytest.approx(clip_global_norm_(b, 0.5))
        o1.step(p1, a, 0.1, rows)
        o2.step(p2, b, 0.1)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-6)
        assert p1[k].dtype == np.float32


def test_sgd_step():
    p, g = {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -1.0])}
    SGD(p).step(p, g, 0.1)
    np.testing.assert_allclose(p["w"], [0.95, 2.1])


def test_adam_first_step_moves_by_lr():
    p, g = {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -3.0])}
    Adam(p).step(p, g, 0.01)
    np.testing.assert_allclose(p["w"], [0.99, 2.01], rtol=1e-6)


def test_adagrad_accumulates():
    p = {"w": np.array([0.0])}
    opt = Adagrad(p)
    opt.step(p, {"w": np.array([2.0])}, 1.0)
    opt.step(p, {"w": np.array([2.0])}, 1.0)
    assert p["w"][0] == pytest.approx(-1.0 - 2.0 / np.sqrt(8.0), rel=1e-6)


@pytest.mark.parametrize("cls", [SGD, Adagrad, Adam])
def test_state_dict_round_trip(cls):
    rng = np.random.default_rng(1)
    p, g, _ = params_and_grads(rng, sparse=False)
    opt = cls(p)
    opt.step(p, {k: v.copy() for k, v in g.items()}, 0.1)
    fresh = cls({k: v.copy() for k, v in p.items()})
    fresh.load_state_dict({k: v.copy() for k, v in opt.state_dict().items()})
    pa, pb = {k: v.copy() for k, v in p.items()}, {k: v.copy() for k, v in p.items()}
    opt.step(pa, {k: v.copy() for k, v in g.items()}, 0.1)
    fresh.step(pb, {k: v.copy() for k, v in g.items()}, 0.1)
    for k in p:
        assert (pa[k] == pb[k]).all()


def test_token_lr_scale_multiplies_only_the_token_rows_update():
    from lstm_lm.config import ModelConfig
    from lstm_lm.model import LanguageModel

    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, (2, 3))
    moved = []
    for factor in (1.0, 10.0):
        m = LanguageModel.init(
            ModelConfig(vocab_size=9, hidden=4, layers=1), np.random.default_rng(1), "float64"
        )
        before = {k: v.copy() for k, v in m.params.items()}
        r = m.loss_and_grads(x, x, m.init_state(2))
        m.scale_token_grads_(r, factor)
        SGD(m.params).step(m.params, r.grads, 0.1, r.rows)
        moved.append({k: m.params[k] - before[k] for k in before})
    H = 4
    np.testing.assert_allclose(moved[1]["l0.W"][H:], 10 * moved[0]["l0.W"][H:], rtol=1e-9)
    h_rows = moved[1]["l0.W"][:H], moved[0]["l0.W"][:H]
    np.testing.assert_allclose(*h_rows, rtol=1e-12)  # the h rows' update is not scaled
    np.testing.assert_allclose(moved[1]["Wy"], moved[0]["Wy"], rtol=1e-12)
    assert np.abs(moved[0]["l0.W"][H:]).sum() > 0


@pytest.mark.parametrize("cls", [SGD, Adagrad, Adam])
@pytest.mark.parametrize("sparse", [True, False])
def test_step_never_writes_the_gradients(cls, sparse):
    """The model reuses its gradient buffer and relies on the rows a window did not touch
    staying zero: an optimiser that wrote its update there fed it back as a gradient."""
    rng = np.random.default_rng(1)
    p, g, rows = params_and_grads(rng, sparse)
    before = {k: v.copy() for k, v in g.items()}
    opt = cls(p)
    for _ in range(2):
        opt.step(p, g, 0.1, rows)
    for k in g:
        assert g[k].tobytes() == before[k].tobytes(), k


def test_asgd_averages_the_iterates_from_its_start_and_swaps_them_in_for_evaluation():
    rng = np.random.default_rng(2)
    p, g, rows = params_and_grads(rng)
    opt, iterates = ASGD(p), []
    for t in range(6):
        if t == 2:
            opt.start_averaging()
            iterates.append({k: v.copy() for k, v in p.items()})
        opt.step(p, {k: v * (t + 1) for k, v in g.items()}, 0.1, rows)
        if opt.avg is not None:
            iterates.append({k: v.copy() for k, v in p.items()})
    assert opt.n == len(iterates) == 5
    before = {k: v.copy() for k, v in p.items()}
    with opt.averaged():
        for k in p:
            np.testing.assert_allclose(p[k], np.mean([it[k] for it in iterates], 0), rtol=1e-6)
        state, saved = opt.state_dict(), {k: v.copy() for k, v in p.items()}
    assert all(p[k].tobytes() == before[k].tobytes() for k in p)  # the iterate is back
    assert all(state[f"iterate.{k}"].tobytes() == before[k].tobytes() for k in p)
    # a checkpoint: the model is the average, the optimiser state the iterate
    q = {k: v.copy() for k, v in saved.items()}
    again = ASGD(q)
    again.load_state_dict(state)
    assert again.n == 5 and all(q[k].tobytes() == before[k].tobytes() for k in q)
    with again.averaged():
        assert all(q[k].tobytes() == saved[k].tobytes() for k in q)


@pytest.mark.parametrize("restart_at", [None, 3, 5])
def test_asgd_averages_rows_a_step_leaves_alone_lazily_and_exactly(restart_at):
    """Rows moved by some steps and not others (and a dense step between): the mean of the
    iterates, row by row, as if every row were averaged at every step; a checkpoint taken
    meanwhile resumes to the same bits."""
    rng = np.random.default_rng(3)
    p = {"W": rng.normal(size=(8, 3)), "b": rng.normal(size=3)}  # float64: exact means
    moved = [[1, 4], [0, 1], None, [6], [4, 7], [], [1]]  # None: a dense step
    grads = []
    for r in moved:
        g = {"W": np.zeros((8, 3)), "b": rng.normal(size=3)}
        g["W"][slice(None) if r is None else r] = rng.normal(size=(8 if r is None else len(r), 3))
        grads.append((g, None if r is None else {"W": np.array(r, np.int64)}))
    opt, iterates = ASGD(p), []
    opt.start_averaging()
    iterates.append({k: v.copy() for k, v in p.items()})
    for t, (g, rows) in enumerate(grads):
        if t == restart_at:  # a checkpoint and a fresh optimiser from it
            with opt.averaged():
                saved, state = {k: v.copy() for k, v in p.items()}, opt.state_dict()
            p = {k: v.copy() for k, v in saved.items()}
            opt = ASGD(p)
            opt.load_state_dict(state)
        opt.step(p, g, 0.1, rows)
        iterates.append({k: v.copy() for k, v in p.items()})
    assert "W" in opt.since and "b" not in opt.since  # W averaged lazily, b whole
    with opt.averaged():
        for k in p:
            np.testing.assert_allclose(p[k], np.mean([it[k] for it in iterates], 0), rtol=1e-12)
        final = {k: v.copy() for k, v in p.items()}
    if restart_at is not None:  # resumed: the same bits as without the restart
        straight = ASGD(q := {k: v.copy() for k, v in iterates[0].items()})
        straight.start_averaging()
        for g, rows in grads:
            straight.step(q, g, 0.1, rows)
        with straight.averaged():
            assert all(q[k].tobytes() == final[k].tobytes() for k in q)


def test_sgd_evaluates_its_own_parameters():
    p, _, _ = params_and_grads(np.random.default_rng(0))
    with SGD(p).averaged():
        pass


@pytest.mark.parametrize(
    "losses, loss, patience, expected",
    [
        ([5.0, 4.0, 3.0], 3.5, 1, False),  # worse than the last, not than 4.0 before it
        ([5.0, 4.0, 3.0], 4.5, 1, True),  # worse than the best before the last one
        ([5.0, 4.0, 3.0], 5.5, 3, False),  # too few evaluations to tell
        ([5.0, 4.0, 3.0, 3.1], 4.2, 2, True),
        ([5.0, 4.0, 3.0, 3.1], 3.9, 2, False),
    ],
)
def test_the_non_monotone_trigger(losses, loss, patience, expected):
    assert stalled(losses, loss, patience) is expected
