"""Presets, overrides and validation: what `resolve` makes of the options."""

import pytest

from lstm_lm import LMError
from lstm_lm.config import PRESETS, TrainConfig, resolve


def test_default_preset_is_small_or_char_by_level():
    assert resolve().preset == "small" and resolve().level == "word"
    s = resolve(None, {"level": "char"})
    assert (s.preset, s.level, s.model["hidden"], s.train.optimizer) == (
        "char",
        "char",
        512,
        "adam",
    )


def test_overrides_win_and_none_means_not_given():
    s = resolve("seed", {"hidden": 12, "lr": None, "batch_size": 5})
    assert s.model["hidden"] == 12 and s.model["layers"] == 1
    assert s.train == TrainConfig(**{k: v for k, v in PRESETS["seed"].items() if k in {
        "batch_size", "bptt", "epochs", "lr", "lr_decay", "decay_after", "clip", "token_lr_scale"
    }} | {"batch_size": 5})  # fmt: skip
    assert s.model_config(100).vocab_size == 100


def test_word_level_with_the_char_preset():
    s = resolve("char", {"level": "word"})
    assert (s.preset, s.level) == ("char", "word")


@pytest.mark.parametrize("preset,overrides,message", [
    ("huge", {}, "unknown preset 'huge'; choose one of seed, small"),
    (None, {"level": "byte"}, "--level must be one of word, char"),
    (None, {"hidden": 0}, "--hidden must be at least 1"),
    (None, {"cell": "lstm", "chrono": 50}, "--chrono needs --cell janet"),
    (None, {"lr_decay": 1.5}, r"--lr-decay must be in \(0, 1\]"),
    (None, {"colour": "red"}, "unknown settings: colour"),
])  # fmt: skip
def test_bad_settings_are_refused_before_any_data_loads(preset, overrides, message):
    with pytest.raises(LMError, match=message):
        resolve(preset, overrides)


def test_medium_vd_is_the_recorded_runs_command():
    # examples/results/medium-vd was trained as `--preset laptop` with these options; the
    # preset must stay that run, setting for setting.
    recorded = resolve("laptop", dict(hidden=650, epochs=40, dropout=0.5, input_dropout=0.4,
                                      weight_drop=0.3, asgd_after=30))  # fmt: skip
    assert resolve("medium-vd").values() == recorded.values()
