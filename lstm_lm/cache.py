"""The token ids of a run's corpus, kept beside it in the run directory (lstm_lm.rundir),
so that `--resume` and `eval` of a large corpus start at once instead of tokenising it again.

    tokens.train.npy, tokens.valid.npy, tokens.test.npy   each split's ids (uint8/uint16/...)
    tokens.json                                           the data source, the vocabulary and
                                                          every text file's path, size,
                                                          modification time and SHA-256
The ids are memory-mapped (numpy.load(mmap_mode="r")): a gigabyte of them is read as the
windows reach it, not at the start. The cache is used while the source and vocabulary match
and every file has the size and modification time it had when it was tokenised; a file whose
size or time differs, or every file with `verify`, is hashed again, and the cache is used only
if the hash still matches. Written atomically, the JSON last: a cache cut short by a crash
does not match, and is written again.

The same files under the user's cache directory (LSTM_LM_CACHE, else $XDG_CACHE_HOME/lstm-lm or
~/.cache/lstm-lm), in tokens/KEY/, KEY a hash of the data source (its files and tokeniser
settings) and of a given vocabulary: a new run on a corpus an earlier run tokenised the same
way reads its ids from there (and links them into its own directory) instead of tokenising
it again. An entry is written to a directory of its own and renamed into place whole, so two
runs writing at once leave one complete entry; one whose files changed is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from lstm_lm import LMError
from lstm_lm.atomic import TMP_SUFFIX, write_atomic
from lstm_lm.checkpoint import Checkpoint
from lstm_lm.data import STDIN, Corpus, DataSource, Vocab
from lstm_lm.download import Log, Progress, sha256_file
from lstm_lm.rundir import OLD_TOKENS, TOKENS, tokens_path

VERSION = 2
SPLITS = ("train", "valid", "test")


def load(
    source: DataSource,
    run_dir: str | Path | None,
    log: Log | None = None,
    progress: Progress | None = None,
    vocab: Vocab | None = None,
    keep: bool = True,
    verify: bool = False,
) -> Corpus:
    """`source.load(...)`, from the run directory's cache where it still matches the files
    (and, given a `vocab`, was encoded with it), else tokenised and, with `keep`, cached
    there (a run that is still to be accepted caches it with `save` once it is). `verify`:
    hash every file, even where its size and modification time match."""
    t0 = time.perf_counter()
    found = None if run_dir is None else _read(Path(run_dir), source, vocab, verify)
    shared = shared_entry(source, vocab)
    if found is None and shared is not None:
        found = _read(shared, source, vocab, verify)
    if found is None:
        found = source.load(log, progress, vocab=vocab)
        if shared is not None and found.files:
            _publish(shared, found, given_vocab=vocab is not None)
    if keep and run_dir is not None:
        save(run_dir, found, given_vocab=vocab is not None)
    found.seconds = time.perf_counter() - t0
    return found


def shared_root() -> Path:
    """The user's cache directory of lstm-lm."""
    if root := os.environ.get("LSTM_LM_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lstm-lm"


def shared_entry(source: DataSource, vocab: Vocab | None) -> Path | None:
    """Where the shared cache keeps the ids of this source tokenised this way (None for
    standard input, which is read once)."""
    if STDIN in (source.train, source.valid, source.test):
        return None
    key = {"version": VERSION, "source": source.to_json(),
           "vocab": None if vocab is None else vocab.to_json()}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return shared_root() / "tokens" / digest


def _publish(entry: Path, corpus: Corpus, given_vocab: bool) -> None:
    """Write the corpus's ids as the shared cache's entry: into a directory of their own,
    renamed into place whole (an entry that no longer matches its files is replaced)."""
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        _write(tmp, corpus, given_vocab)
        if not (tmp / TOKENS).exists():
            return  # could not be written: nothing to publish
        if entry.exists():  # out of date (the files changed): set aside, then replaced
            old = entry.with_name(f".{entry.name}.{os.getpid()}.old")
            os.rename(entry, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, entry)
    except OSError:
        pass  # another run published it first, or the cache is not writable: no harm
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trained_on(ckpt: Checkpoint, run_dir: str | Path | None = None, log: Log | None = None,
               progress: Progress | None = None, keep: bool = True,
               verify: bool = False) -> Corpus:  # fmt: skip
    """The data a checkpoint's model was trained on, loaded again (from `run_dir`'s cache
    where it still matches); an LMError if its vocabulary is no longer the model's (the files
    changed). A model fine-tuned from another (`--init-from`) encodes its data with its own
    vocabulary, as it did when it trained."""
    source = DataSource.from_json(ckpt.meta["data"])
    if ckpt.train_state.get("init_from"):
        return load(source, run_dir, log, progress, ckpt.vocab, keep, verify)
    found = load(source, run_dir, log, progress, keep=keep, verify=verify)
    if found.vocab != ckpt.vocab:
        raise LMError(
            f"the vocabulary of the data ({len(found.vocab)} types) does not match the "
            f"checkpoint's ({len(ckpt.vocab)}): the training files changed since the run"
        )
    return found


def save(run_dir: str | Path, corpus: Corpus, given_vocab: bool = False) -> None:
    """Cache a corpus's token ids in a run directory (not one read from standard input):
    linked from the shared cache where they were read from there, else written."""
    run_dir = Path(run_dir)
    if not corpus.files or corpus.cached_in == str(run_dir.absolute()):
        return
    if corpus.cached_in is not None and _link(Path(corpus.cached_in), run_dir):
        return
    _write(run_dir, corpus, given_vocab)


def _link(source: Path, run_dir: Path) -> bool:
    """Hard links (copies across file systems) of a cache's files in a run directory, the
    JSON last; whether that worked."""
    names = [p.name for p in source.glob("tokens.*.npy")] + [TOKENS]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TOKENS).unlink(missing_ok=True)
        for name in names:
            target = run_dir / name
            target.unlink(missing_ok=True)
            try:
                os.link(source / name, target)
            except OSError:
                shutil.copyfile(source / name, target)
        return True
    except OSError:
        return False


def unchanged(f: dict, verify: bool) -> bool:
    """Whether a text file is still what a cache record says: the same size and modification
    time (or, where the time differs or with `verify`, the same SHA-256)."""
    p = Path(f["path"])
    try:
        st = p.stat()
    except OSError:
        return False
    if st.st_size != f["size"]:
        return False
    if st.st_mtime_ns == f.get("mtime_ns") and not verify:
        return True
    return sha256_file(p) == f["sha256"]


def _read(run_dir: Path, source: DataSource, vocab: Vocab | None, verify: bool):
    try:
        meta = json.loads((run_dir / TOKENS).read_text())
        if meta.get("version") != VERSION or meta.get("source") != source.to_json():
            return None
        cached = Vocab.from_json(meta["vocab"])
        if meta["given_vocab"] != (vocab is not None) or (vocab is not None and vocab != cached):
            return None
        if not all(unchanged(f, verify) for f in meta["files"]):
            return None
        ids = {s: np.load(tokens_path(run_dir, s), mmap_mode="r", allow_pickle=False)
               for s in meta["lengths"]}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, unreadable or not ours: tokenise again
    if any(len(ids[s]) != n for s, n in meta["lengths"].items()):
        return None
    spelled = meta.get("spelled")  # absent from caches written before it was kept
    return Corpus(cached, ids["train"], ids["valid"], ids.get("test"), meta["name"], source,
                  meta["notes"], meta["unknown"], meta["files"],
                  None if spelled is None else [tuple(x) for x in spelled], cached=True,
                  cached_in=str(run_dir.absolute()))  # fmt: skip


def _write(run_dir: Path, corpus: Corpus, given_vocab: bool) -> None:
    splits = {s: getattr(corpus, s) for s in SPLITS if getattr(corpus, s) is not None}
    meta = {
        "version": VERSION,
        "source": corpus.source.to_json(),
        "vocab": corpus.vocab.to_json(),
        "given_vocab": given_vocab,
        "files": corpus.files,
        "lengths": {s: len(ids) for s, ids in splits.items()},
        "name": corpus.name,
        "notes": corpus.notes,
        "unknown": corpus.unknown,
        "spelled": corpus.spelled,
    }
    try:
        (run_dir / TOKENS).unlink(missing_ok=True)  # no JSON describing half-written ids
        for s, ids in splits.items():  # streamed to the file: a gigabyte is not held twice
            write_atomic(tokens_path(run_dir, s), lambda f, ids=ids: np.save(f, ids))
        write_atomic(run_dir / TOKENS, json.dumps(meta).encode())
        (run_dir / OLD_TOKENS).unlink(missing_ok=True)
    except (LMError, OSError):
        pass  # a cache that cannot be written costs time later, nothing else
