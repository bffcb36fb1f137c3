"""A change that breaks learning fails CI: 300 steps of the small preset on the real PTB.

Calibrated on 2026-11-23: 300 steps of the small preset without dropout reached valid
perplexity 587 and 626 in two runs (training is chaotic enough that BLAS threading changes the
result by several percent), and 466 with the preset's dropout 0.2 (the full run reaches 100.7
after 13 epochs). An untrained model is at about 10,000 (the vocabulary size) and one that
learns nothing useful stays above 1,000, so 750 separates them with room for rounding.
"""

import math

import numpy as np

from lstm_lm.config import PRESETS, resolve
from lstm_lm.data import load_corpus
from lstm_lm.evaluation import evaluate
from lstm_lm.model import LanguageModel
from lstm_lm.train import fit

THRESHOLD = 750.0


def test_small_preset_learns_ptb(ptb_dir):
    corpus = load_corpus("word", data_dir=ptb_dir)
    settings = resolve("small", {"max_steps": 300})
    tc = settings.train
    rng = np.random.default_rng(tc.seed)
    model = LanguageModel.init(settings.model_config(len(corpus.vocab)), rng, tc.dtype)
    nll, n = evaluate(model, corpus.valid[:2000], 20, 20)
    assert n == 1999  # every token but the first
    assert nll / n > math.log(9000)  # starts near ln V
    st = fit(model, corpus, tc, rng=rng)
    assert st.step == 300
    valid_ppl = math.exp(st.history[-1]["valid_loss"])
    assert valid_ppl < THRESHOLD, valid_ppl
    assert PRESETS["small"]["hidden"] == 200  # the preset the threshold was calibrated on
