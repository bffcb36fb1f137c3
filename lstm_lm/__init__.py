"""lstm-lm: a from-scratch NumPy LSTM language model.

The library is usable without the CLI: `data` loads corpora, `model` holds the network,
`train` fits and evaluates it, `runs` prepares a run (new, resumed or fine-tuned),
`checkpoint` saves and loads it, `sampling` generates text, `score` scores lines as
sentences, `export` writes safetensors for other frameworks.
"""

__version__ = "0.1.0"


class LMError(Exception):
    """An error the user can fix (bad file, bad value, missing data): one clear line."""
