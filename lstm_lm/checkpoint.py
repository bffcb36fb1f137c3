"""Checkpoints: one .npz of plain arrays plus JSON, written atomically, never unpickled.

Layout of the archive (read safely by lstm_lm.archive):
    l{k}.W{gate}, l{k}.b{gate}, Wy, by   parameters by their contract names
    meta                                   JSON (0-d string): format, version, model and
                                           training config, vocabulary, data source,
                                           training state (step, epoch, window, lr,
                                           best valid loss, RNG state, history)
    opt.*                                  optimiser state (moments, step count)
    state.l{k}.{j}                         recurrent state carried into the next window
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstm_lm import LMError, __version__, export
from lstm_lm.archive import FORMAT, VERSION, check_meta, pop_meta, read_arrays, read_meta
from lstm_lm.atomic import write_atomic
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.data import DataSource, Vocab
from lstm_lm.model import LanguageModel
from lstm_lm.rundir import resolve


@dataclass
class Checkpoint:
    model: LanguageModel
    vocab: Vocab
    train_config: TrainConfig
    meta: dict  # the whole JSON header (data source, training state, ...)
    optimizer: dict[str, np.ndarray]
    state: list[tuple[np.ndarray, ...]] | None

    @property
    def train_state(self) -> dict:
        return self.meta["train_state"]


def save(
    path: str | Path,
    model: LanguageModel,
    vocab: Vocab,
    train_config: TrainConfig,
    train_state: dict,
    source: DataSource,
    optimizer: dict[str, np.ndarray] | None = None,
    state=None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename)."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "lstm_lm": __version__,
        "config": asdict(model.config),
        "train_config": asdict(train_config),
        "vocab": vocab.to_json(),
        "data": source.to_json(),
        "train_state": train_state,
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in model.saved_arrays().items()}
    arrays["meta"] = np.array(json.dumps(meta))
    arrays.update({f"opt.{k}": v for k, v in (optimizer or {}).items()})
    for k, layer in enumerate(state or []):
        arrays.update({f"state.l{k}.{j}": s for j, s in enumerate(layer)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())
    return path


def _state(arrays: dict[str, np.ndarray], name: str, hidden: int, dtype) -> np.ndarray:
    """A carried state array (B, H), checked."""
    a = arrays.get(name)
    if a is None or a.ndim != 2 or a.shape[1] != hidden:
        raise LMError(f"{name} is missing or not (B, {hidden})")
    return a.astype(dtype)


def header(path: str | Path) -> dict:
    """The JSON header of a checkpoint (a file or a run directory, as `load` takes), without
    building its model: what a plan needs to know of it."""
    path = resolve(path)
    if path.suffix == ".safetensors":
        return check_meta(path, export.read(path)[1])
    return read_meta(path)


def configs(path: Path, meta: dict) -> tuple[ModelConfig, TrainConfig, Vocab]:
    """The model and training configuration and the vocabulary a header describes."""
    try:
        config = ModelConfig(**meta["config"])
        vocab = Vocab.from_json(meta["vocab"])
        # the training config of older checkpoints also held the level, which the vocabulary has
        train_config = TrainConfig(
            **{k: v for k, v in meta["train_config"].items() if k != "level"}
        )
    except (ValueError, KeyError, TypeError, LMError) as e:
        raise LMError(f"{path}: not an lstm-lm checkpoint (bad header: {e})") from None
    if len(vocab) != config.vocab_size:
        raise LMError(
            f"{path}: vocabulary has {len(vocab)} entries but the model expects {config.vocab_size}"
        )
    return config, train_config, vocab


def load(path: str | Path, dtype=None) -> Checkpoint:
    """Read and validate a checkpoint (a file, or a run directory: rundir.resolve), or a
    model exported to .safetensors (lstm_lm.export); every problem is an LMError naming the
    file, a NaN or inf in any array among them."""
    path = resolve(path)
    if path.suffix == ".safetensors":
        arrays, meta = export.read(path)
        meta = check_meta(path, meta)
    else:
        arrays = read_arrays(path)
        meta = pop_meta(path, arrays)
    config, train_config, vocab = configs(path, meta)
    for name, a in arrays.items():  # parameters, optimiser state, carried hidden state
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise LMError(
                f"{path}: {name} holds NaN or inf values (weights of a run that diverged); "
                "use a checkpoint saved before that, e.g. the run's best.npz"
            )
    try:
        model = LanguageModel.from_named(config, arrays, dtype or train_config.dtype)
        state = None
        if "state.l0.0" in arrays:
            H, n = config.hidden, model.cell.n_state
            state = [tuple(_state(arrays, f"state.l{k}.{j}", H, model.dtype) for j in range(n))
                     for k in range(config.layers)]  # fmt: skip
    except (LMError, ValueError, TypeError) as e:  # an array missing or of another shape
        raise LMError(f"{path}: {e}; not a complete lstm-lm checkpoint") from None
    optimizer = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    return Checkpoint(model, vocab, train_config, meta, optimizer, state)
