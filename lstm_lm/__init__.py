"""lstm-lm: a from-scratch NumPy LSTM language model.

    model = lstm_lm.load("runs/small")
    print(model.generate("the company said", length=30, seed=0))

The library is usable without the CLI: `data` loads corpora, `model` holds the network,
`train` fits it and `evaluation` scores it, `runs` plans and prepares a run (new, resumed
or fine-tuned) in a run directory (`rundir`), `checkpoint` saves and loads it, `sampling`
generates text, `score` scores lines as sentences, `export` writes safetensors for other
frameworks. docs/design.md draws the modules.
"""

__version__ = "0.1.0"


class LMError(Exception):
    """An error the user can fix (bad file, bad value, missing data): one clear line."""


class OptionError(LMError):
    """Settings that do not go together, or a value out of range: the command line's usage
    error (the CLI exits 2 for it, 1 for any other LMError)."""


from lstm_lm.api import Model, load  # noqa: E402 - after the error types, which api imports

__all__ = ["LMError", "Model", "OptionError", "load", "__version__"]
