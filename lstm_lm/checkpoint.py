"""Checkpoints: one .npz of plain arrays plus JSON, written atomically, never unpickled.

Layout of the archive:
    l{k}.W{gate}, l{k}.b{gate}, Wy, by   parameters by their contract names
    meta                                   JSON (0-d string): format, version, model and
                                           training config, vocabulary, data source,
                                           training state (step, epoch, window, lr,
                                           best valid loss, RNG state, history)
    opt.*                                  optimiser state (moments, step count)
    state.l{k}.{j}                         recurrent state carried into the next window
Loaded with numpy.load(allow_pickle=False): an archive holding pickled objects is refused.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstm_lm import LMError, __version__, cache
from lstm_lm.atomic import write_atomic
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.data import Corpus, DataSource, Vocab
from lstm_lm.download import Log, Progress
from lstm_lm.model import LanguageModel

FORMAT = "lstm-lm"
VERSION = 1
BEST, LAST = "best.npz", "last.npz"  # in a run directory: lowest valid loss; newest


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

    def load_corpus(self, log: Log | None = None, progress: Progress | None = None,
                    run_dir: str | Path | None = None, keep: bool = True,
                    verify: bool = False) -> Corpus:  # fmt: skip
        """The data the model was trained on, loaded again (from the run directory's cache
        of token ids where it still matches); an LMError if its vocabulary is no longer the
        model's (the files changed). A model fine-tuned from another (`--init-from`) encodes
        its data with its own vocabulary, as it did when it trained. `verify`: hash the files
        against the cache even where their sizes and times match (cache.load_corpus)."""
        source = DataSource.from_json(self.meta["data"])
        if self.train_state.get("init_from"):
            return cache.load_corpus(source, run_dir, log, progress, self.vocab, keep, verify)
        corpus = cache.load_corpus(source, run_dir, log, progress, keep=keep, verify=verify)
        if corpus.vocab != self.vocab:
            raise LMError(
                f"the vocabulary of the data ({len(corpus.vocab)} types) does not match the "
                f"checkpoint's ({len(self.vocab)}): the training files changed since the run"
            )
        return corpus


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


def resolve_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory: its best.npz, or last.npz where there is no best."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST if (path / BEST).exists() else path / LAST
    if not path.exists():
        raise LMError(
            f"{path}: no such checkpoint; give a .npz written by lstm-lm train or its run directory"
        )
    return path


def saved(run_dir: str | Path) -> bool:
    """Whether a run directory holds a checkpoint."""
    return any((Path(run_dir) / n).exists() for n in (LAST, BEST))


def newest(run_dir: str | Path) -> Path:
    """The checkpoint of a run directory that is furthest along (last.npz on a tie): after a
    crash, best.npz can be newer than last.npz."""
    run_dir = Path(run_dir)
    found = [run_dir / n for n in (LAST, BEST) if (run_dir / n).exists()]
    if not found:
        raise LMError(f"{run_dir}: holds no checkpoint (best.npz or last.npz) to resume")
    return max(found, key=lambda p: read_meta(p)["train_state"]["step"])


def read_meta(path: str | Path) -> dict:
    """The JSON header of a checkpoint file alone, without its arrays."""
    path = Path(path)
    return _read_meta(path, _read_arrays(path, only="meta"))


def _read_arrays(path: Path, only: str | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz (or the one named `only`, if there), refusing pickled objects;
    LMError for anything else."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise LMError(f"{path}: not an .npz archive; is this an lstm-lm checkpoint?")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if only is None or k == only}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise LMError(
                f"{path}: holds pickled objects, which lstm-lm refuses to load (nothing was "
                "executed); use a checkpoint written by lstm-lm train"
            ) from None
        raise LMError(f"{path}: corrupted checkpoint ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise LMError(
            f"{path}: truncated or corrupted checkpoint ({e}); use another one, "
            "e.g. best.npz or last.npz of the run"
        ) from None
    except Exception as e:  # noqa: BLE001 - damaged bytes reach NumPy's header parser
        # (an array header with flipped bytes raised tokenize.TokenError from it): whatever a
        # damaged file makes it raise, the user gets one line
        raise LMError(
            f"{path}: corrupted checkpoint ({type(e).__name__}: {e}); use another one, "
            "e.g. best.npz or last.npz of the run"
        ) from None


def _read_meta(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    if "meta" not in arrays:
        raise LMError(f"{path}: an .npz, but not an lstm-lm checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as e:
        raise LMError(f"{path}: not an lstm-lm checkpoint (bad header: {e})") from None
    return _check_meta(path, meta)


def _check_meta(path: Path, meta) -> dict:
    ok = isinstance(meta, dict) and meta.get("format") == FORMAT
    if not (ok and isinstance(meta.get("version", 0), int)):
        raise LMError(
            f"{path}: not an lstm-lm checkpoint (bad header: wrong format tag or version)"
        )
    if meta.get("version", 0) > VERSION:
        raise LMError(
            f"{path}: written by a newer lstm-lm (format {meta['version']}); upgrade lstm-lm"
        )
    return meta


def _state(arrays: dict[str, np.ndarray], name: str, hidden: int, dtype) -> np.ndarray:
    """A carried state array (B, H), checked."""
    a = arrays.get(name)
    if a is None or a.ndim != 2 or a.shape[1] != hidden:
        raise LMError(f"{name} is missing or not (B, {hidden})")
    return a.astype(dtype)


def load(path: str | Path, dtype=None) -> Checkpoint:
    """Read and validate a checkpoint (a file, or a run directory: see resolve_path), or a
    model exported to .safetensors (lstm_lm.export); every problem is an LMError naming the
    file, a NaN or inf in any array among them."""
    path = resolve_path(path)
    if path.suffix == ".safetensors":
        from lstm_lm import export  # an optional extra: imported only for such files

        arrays, meta = export.read(path)
        meta = _check_meta(path, meta)
    else:
        arrays = _read_arrays(path)
        meta = _read_meta(path, arrays)
    try:
        config = ModelConfig(**meta["config"])
        vocab = Vocab.from_json(meta["vocab"])
        # lstm-lm 0.1.0 also kept the token level in the training config; the vocabulary has it
        train_config = TrainConfig(
            **{k: v for k, v in meta["train_config"].items() if k != "level"}
        )
    except (ValueError, KeyError, TypeError, LMError) as e:
        raise LMError(f"{path}: not an lstm-lm checkpoint (bad header: {e})") from None
    for name, a in arrays.items():  # parameters, optimiser state, carried hidden state
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise LMError(
                f"{path}: {name} holds NaN or inf values (weights of a run that diverged); "
                "use a checkpoint saved before that, e.g. the run's best.npz"
            )
    if len(vocab) != config.vocab_size:
        raise LMError(
            f"{path}: vocabulary has {len(vocab)} entries but the model expects {config.vocab_size}"
        )
    try:
        model = LanguageModel.from_named(config, arrays, dtype or train_config.dtype)
        state = None
        if "state.l0.0" in arrays:
            H, n = config.hidden, model.cell.n_state
            state = [tuple(_state(arrays, f"state.l{k}.{j}", H, model.dtype) for j in range(n))
                     for k in range(config.layers)]  # fmt: skip
    except (
        LMError,
        ValueError,
        TypeError,
    ) as e:  # a missing array, or one of another shape or kind
        raise LMError(f"{path}: {e}; not a complete lstm-lm checkpoint") from None
    optimizer = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    return Checkpoint(model, vocab, train_config, meta, optimizer, state)
