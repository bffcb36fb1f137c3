"""The dropout masks of a window: shapes, rates, scaling, what each kind shares."""

import numpy as np
import pytest

from lstm_lm.config import ModelConfig
from lstm_lm.dropout import Masks, drawn, weight_drop_backward, weight_drop_forward
from lstm_lm.gradcheck import TOLERANCE, max_relative_error


def config(**options):
    return ModelConfig(vocab_size=300, hidden=40, layers=2, **options)


def test_nothing_is_drawn_without_dropout():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert drawn(config(), 5, 3, rng, "float32") == Masks.none(2)
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("variational", [False, True])
def test_shapes_rates_and_scaling(variational):
    c = config(dropout=0.3, input_dropout=0.2, word_dropout=0.25, weight_drop=0.4,
               variational=variational)  # fmt: skip
    T, B, H, G = 50, 64, 40, 160
    m = drawn(c, T, B, np.random.default_rng(0), "float32")
    steps = 1 if variational else T
    assert m.tokens.shape == (steps, B, G) and m.tokens.dtype == np.float32
    assert [a.shape for a in m.layers] == [(steps, B, H)] * 2
    assert m.words.shape == (300,) and [a.shape for a in m.recurrent] == [(H, G)] * 2
    for a, p in ((m.tokens, 0.2), (m.layers[0], 0.3), (m.words, 0.25), (m.recurrent[1], 0.4)):
        assert set(np.unique(a)) == {0, np.float32(1 / (1 - p))}
        assert abs((a == 0).mean() - p) < 0.06


def test_a_dropped_word_loses_every_occurrence_and_variational_masks_hold_for_the_window():
    c = config(input_dropout=0.5, word_dropout=0.5, variational=True)
    m = drawn(c, 6, 4, np.random.default_rng(1), "float64")
    tokens = np.random.default_rng(2).integers(0, 300, (6, 4))
    rows = np.broadcast_to(m.token_rows(tokens), (6, 4, 160))
    dropped = m.words[tokens] == 0
    assert dropped.any() and (rows[dropped] == 0).all()
    kept = ~dropped
    # the same input-dropout mask at every step of a stream, scaled by 2 x 2
    for t, b in zip(*np.nonzero(kept)):
        assert (rows[t, b] == m.tokens[0, b] * 2).all()


def test_masks_of_a_block_of_streams():
    c = config(dropout=0.5, input_dropout=0.5, weight_drop=0.5)
    m = drawn(c, 4, 6, np.random.default_rng(0), "float32")
    block = m.streams(slice(2, 4))
    assert (block.tokens == m.tokens[:, 2:4]).all() and (
        block.layers[1] == m.layers[1][:, 2:4]
    ).all()
    assert block.recurrent is m.recurrent


def test_weight_drop_pair_gradient():
    rng = np.random.default_rng(0)
    Wh, mask = rng.normal(size=(4, 12)), (rng.random((4, 12)) > 0.5) * 2.0
    dout = rng.normal(size=(4, 12))
    out, cache = weight_drop_forward(Wh, mask)
    dWh = weight_drop_backward(dout, cache)
    loss = lambda: float((weight_drop_forward(Wh, mask)[0] * dout).sum())  # noqa: E731
    assert max_relative_error(loss, Wh, dWh, list(np.ndindex(*Wh.shape))) < TOLERANCE
    assert weight_drop_forward(Wh, None)[0] is Wh
