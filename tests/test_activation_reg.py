"""AR and TAR (Merity et al. 2017): the pair's gradient, its values, and the model's."""

import numpy as np
import pytest

import lstm_lm.model
from lstm_lm.activation_reg import ar_tar_backward, ar_tar_forward
from lstm_lm.config import ModelConfig
from lstm_lm.gradcheck import TOLERANCE, check_gradients, entries, max_relative_error
from lstm_lm.model import LanguageModel


@pytest.mark.parametrize("alpha,beta", [(2.0, 0.0), (0.0, 1.0), (1.5, 0.7)])
@pytest.mark.parametrize("mask_steps", [None, 1, 4])
def test_pair_gradient(alpha, beta, mask_steps):
    """Centered differences in float64 of the penalty against the backward's dhs, with no
    mask, a variational (1, B, H) one and a per-step (T, B, H) one."""
    rng = np.random.default_rng(0)
    T, B, H = 4, 3, 5
    hs = rng.normal(size=(T, B, H))
    mask = None if mask_steps is None else (rng.random((mask_steps, B, H)) > 0.4) / 0.6
    _, cache = ar_tar_forward(hs, mask, alpha, beta)
    dhs = np.full_like(hs, 0.25)  # the backward adds into what is there
    ar_tar_backward(3.0, cache, dhs)
    dhs -= 0.25
    loss = lambda: 3.0 * ar_tar_forward(hs, mask, alpha, beta)[0]  # noqa: E731
    err = max_relative_error(loss, hs, dhs, entries(hs.shape, rng, 60))
    assert err < TOLERANCE


def test_values():
    """AR is the mean square of the dropped output, TAR of the step-to-step change; a
    one-step window has no change; both off: 0 and no gradient."""
    hs = np.arange(12, dtype=np.float64).reshape(3, 2, 2)  # (T, B, H)
    mask = np.array([[[2.0, 0.0], [0.0, 2.0]]])  # (1, B, H)
    assert ar_tar_forward(hs, mask, 1.0, 0.0)[0] == pytest.approx(np.mean((hs * mask) ** 2))
    assert ar_tar_forward(hs, None, 0.0, 1.0)[0] == pytest.approx(16.0)  # h_t - h_{t-1} = 4
    assert ar_tar_forward(hs[:1], mask, 0.0, 5.0)[0] == 0.0
    penalty, cache = ar_tar_forward(hs, mask, 0.0, 0.0)
    dhs = np.ones_like(hs)
    ar_tar_backward(7.0, cache, dhs)
    assert penalty == 0.0 and (dhs == 1).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "options",
    [
        dict(ar=2.0),
        dict(tar=1.0),
        dict(ar=2.0, tar=1.0, dropout=0.4, variational=True, weight_drop=0.3),
    ],
)
def test_model_gradient_check(cell, options):
    """The whole model's gradients of NLL + penalties, fixed masks, T = 5."""
    config = ModelConfig(vocab_size=11, hidden=5, layers=2, cell=cell, **options)
    errors = check_gradients(config, batch_size=2, bptt=5, seed=4)
    assert max(errors.values()) < TOLERANCE, errors


def test_gradient_check_catches_a_penalty_left_out_of_the_backward(monkeypatch):
    monkeypatch.setattr(lstm_lm.model, "ar_tar_backward", lambda dpenalty, cache, dhs: None)
    errors = check_gradients(ModelConfig(vocab_size=7, hidden=4, layers=1, ar=2.0, tar=1.0))
    assert errors["Wy"] < TOLERANCE  # the softmax's gradient does not see the penalties
    assert errors["l0.Wf"] > TOLERANCE


def test_the_penalty_is_not_in_the_loss_or_in_evaluation():
    """Result.loss stays the NLL (what perplexity is computed from); the penalty is reported
    beside it, and the model evaluates the same with or without it."""
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 9, (2, 6)), rng.integers(0, 9, (2, 6))
    plain = LanguageModel.init(ModelConfig(vocab_size=9, hidden=4), rng, "float64")
    reg = LanguageModel(ModelConfig(vocab_size=9, hidden=4, ar=2.0, tar=1.0), plain.params)
    a = plain.loss_and_grads(x, y, plain.init_state(2))
    b = reg.loss_and_grads(x, y, reg.init_state(2))
    assert a.penalty == 0.0 and b.penalty > 0 and a.loss == b.loss
    assert plain.nll(x, y, plain.init_state(2))[0] == reg.nll(x, y, reg.init_state(2))[0]
