"""Files written so that a crash, a kill or a full disk at any moment leaves the old file
intact: a temporary file beside the target (`.NAME.XXXX.tmp`), fsync, rename, fsync of the
directory. Every file lstm-lm writes goes through here; it imports nothing of the package
but its error type.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from lstm_lm import LMError

TMP_SUFFIX = ".tmp"  # of a file being written; renamed to its name once complete


def write_atomic(path: str | Path, payload, fix: str = "choose another --out") -> None:
    """Write bytes (or what `payload(file)` writes, for what is too large to hold twice)
    under `path` so that a crash, a kill or a full disk at any moment leaves the old file
    intact: a temporary file beside it, fsync, rename. LMError on failure, naming the file
    (and, for a full disk, the space it needs)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide checkpoints from other users
        with os.fdopen(fd, "wb") as f:
            f.write(payload) if isinstance(payload, bytes) else payload(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            need = f"{len(payload):,} bytes" if isinstance(payload, bytes) else "more space"
            raise LMError(
                f"cannot write {path}: no space left on the device ({need} needed, {free:,} "
                f"free); free some space or {fix}; the previous file is intact"
            ) from None
        raise LMError(f"cannot write {path}: {e.strerror}; {fix}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | Path) -> None:
    """Delete the temporary files a killed writer left behind in `directory`."""
    for f in Path(directory).glob(f".*{TMP_SUFFIX}"):
        f.unlink(missing_ok=True)
