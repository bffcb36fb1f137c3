"""Reading a checkpoint's .npz safely: its arrays and its JSON header, every way a damaged or
foreign file can fail turned into one LMError naming the file. Loaded with
numpy.load(allow_pickle=False): an archive holding pickled objects is refused, nothing in it
is executed. `lstm_lm.checkpoint` builds the model from what this returns.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from lstm_lm import LMError

FORMAT = "lstm-lm"
VERSION = 1


def read_arrays(path: Path, only: str | None = None) -> dict[str, np.ndarray]:
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


def read_meta(path: str | Path) -> dict:
    """The JSON header of a checkpoint file alone, without its arrays."""
    path = Path(path)
    return pop_meta(path, read_arrays(path, only="meta"))


def pop_meta(path: Path, arrays: dict[str, np.ndarray]) -> dict:
    """The header taken out of `arrays` (its 0-d string "meta"), checked."""
    if "meta" not in arrays:
        raise LMError(f"{path}: an .npz, but not an lstm-lm checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as e:
        raise LMError(f"{path}: not an lstm-lm checkpoint (bad header: {e})") from None
    return check_meta(path, meta)


def check_meta(path: Path, meta) -> dict:
    """A header of our format and of a version this lstm-lm reads, else LMError."""
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
