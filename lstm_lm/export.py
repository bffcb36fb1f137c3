"""Export to safetensors, the weights format other frameworks load (PyTorch, JAX, ...).

The file holds the parameters under their contract names (`l0.Wf`, ..., `Wy`, `by`; rows of
every input weight ordered [h; x]) and, as JSON strings in its metadata, the model and
training configuration, the vocabulary, the data source and the training progress: what
`eval`, `sample`, `score` and `info` need, but not the optimiser state, so training cannot be
resumed from it. Needs the optional `safetensors` package (`pip install "lstm-lm[export]"`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lstm_lm import LMError
from lstm_lm.atomic import write_atomic

if TYPE_CHECKING:  # checkpoint reads exported files through this module
    from lstm_lm.checkpoint import Checkpoint

META_KEYS = ("format", "version", "lstm_lm", "config", "train_config", "vocab", "data")


def _library():
    try:
        import safetensors.numpy
    except ImportError:
        raise LMError(
            "safetensors files need the safetensors package: pip install 'lstm-lm[export]' "
            '(or pip install ".[export]" in a checkout)'
        ) from None
    return safetensors


def export(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write the checkpoint's model as a .safetensors file (atomically)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in ckpt.model.saved_arrays().items()}
    meta = {k: ckpt.meta[k] for k in META_KEYS if k in ckpt.meta}
    meta["train_state"] = {k: v for k, v in ckpt.train_state.items() if k != "rng"}
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    payload = _library().numpy.save(arrays, metadata)
    write_atomic(path, payload, fix="choose another OUT")
    return Path(path)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the JSON header (as a checkpoint's) of a file written by `export`."""
    safetensors = _library()
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except Exception as e:  # OSError, ValueError or the library's own SafetensorError
        raise LMError(f"{path}: not a readable safetensors file ({e})") from None
    return arrays, meta
