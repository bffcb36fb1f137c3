"""The token ids of a run's corpus, kept beside it (`tokens.npz` in the run directory), so
that `--resume` and `eval` of a large corpus do not tokenise it again.

The file holds each split's ids and, as JSON, the data source, the vocabulary and every text
file's path, size and SHA-256; it is used only while all of those still match (the hashes
read each file once, which is many times faster than tokenising it), and written again
otherwise. Loaded with numpy.load(allow_pickle=False), written atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lstm_lm import LMError
from lstm_lm.data import Corpus, DataSource, Vocab
from lstm_lm.download import Log, Progress, sha256_file

CACHE = "tokens.npz"  # in a run directory
VERSION = 1


def load_corpus(
    source: DataSource,
    run_dir: str | Path | None,
    log: Log | None = None,
    progress: Progress | None = None,
    vocab: Vocab | None = None,
    keep: bool = True,
) -> Corpus:
    """`source.load(...)`, from the run directory's cache where it still matches the files
    (and, given a `vocab`, was encoded with it), else tokenised and, with `keep`, cached
    there (a run that is still to be accepted caches it with `save` once it is)."""
    t0, path = time.perf_counter(), None if run_dir is None else Path(run_dir) / CACHE
    corpus = _read(path, source, vocab) if path is not None and path.exists() else None
    if corpus is None:
        corpus = source.load(log, progress, vocab=vocab)
        if keep and run_dir is not None:
            save(run_dir, corpus, given_vocab=vocab is not None)
    corpus.seconds = time.perf_counter() - t0
    return corpus


def save(run_dir: str | Path, corpus: Corpus, given_vocab: bool = False) -> None:
    """Cache a corpus's token ids in a run directory (not one read from standard input)."""
    if corpus.files and not corpus.cached:
        _write(Path(run_dir) / CACHE, corpus, given_vocab)


def _read(path: Path, source: DataSource, vocab: Vocab | None) -> Corpus | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError):
        return None  # unreadable or not ours: tokenise again
    if meta.get("version") != VERSION or meta.get("source") != source.to_json():
        return None
    cached = Vocab.from_json(meta["vocab"])
    if meta["given_vocab"] != (vocab is not None) or (vocab is not None and vocab != cached):
        return None
    for f in meta["files"]:
        p = Path(f["path"])
        if not p.is_file() or p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
            return None
    return Corpus(cached, arrays["train"], arrays["valid"], arrays.get("test"), meta["name"],
                  source, meta["notes"], meta["unknown"], meta["files"], cached=True)  # fmt: skip


def _write(path: Path, corpus: Corpus, given_vocab: bool) -> None:
    from lstm_lm.checkpoint import write_atomic  # checkpoint imports this module

    meta = {
        "version": VERSION,
        "source": corpus.source.to_json(),
        "vocab": corpus.vocab.to_json(),
        "given_vocab": given_vocab,
        "files": corpus.files,
        "name": corpus.name,
        "notes": corpus.notes,
        "unknown": corpus.unknown,
    }
    splits = {"train": corpus.train, "valid": corpus.valid}
    if corpus.test is not None:
        splits["test"] = corpus.test
    try:  # streamed to the file: a gigabyte of ids is not held twice
        write_atomic(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **splits))
    except LMError:
        pass  # a cache that cannot be written costs time later, nothing else
