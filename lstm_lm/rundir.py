"""The run directory: what `lstm-lm train` writes and every other command reads. Every
module asks here for its files; none spells their names.

    runs/<name>/            default_out(): runs/ptb, runs/ptb-char, runs/<data>, runs/<data>-2
        best.npz            BEST: the checkpoint with the lowest valid loss so far
        last.npz            LAST: the newest (at every evaluation, every --save-every minutes)
        metrics.jsonl       METRICS: one JSON line per evaluation, the checkpoints' history
        tokens.json         TOKENS: the token cache's record (lstm_lm.cache)
        tokens.SPLIT.npy    tokens_path(): each split's token ids, memory-mapped
        .NAME.XXXX.tmp      a file being written (lstm_lm.atomic); left over only by a crash

A checkpoint named by its directory is its best.npz, or last.npz where there is none
(`resolve`); a run resumes from the one furthest along (`newest`). A directory holding
either checkpoint holds a run (`saved`), which a new run never overwrites (`check_free`).
"""

from __future__ import annotations

from pathlib import Path

from lstm_lm import LMError
from lstm_lm.archive import read_meta
from lstm_lm.data import STDIN, DataSource

RUNS = Path("runs")  # where runs go without --out
BEST, LAST = "best.npz", "last.npz"
METRICS = "metrics.jsonl"
TOKENS = "tokens.json"
OLD_TOKENS = "tokens.npz"  # an older cache format (ids not memory-mappable), removed on rewrite


def tokens_path(run_dir: Path, split: str) -> Path:
    """A split's cached token ids."""
    return Path(run_dir) / f"tokens.{split}.npy"


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run directory: its best.npz, or last.npz where there is no best."""
    path = Path(path)
    if path.is_dir() and not saved(path):
        if any((path / name).exists() for name in (METRICS, TOKENS)):
            raise LMError(f"{path}: the run has no checkpoint yet (it saves one at its first "
                          "evaluation and every --save-every minutes)")  # fmt: skip
        raise LMError(f"{path}: a directory without a checkpoint (best.npz or last.npz); "
                      "give a run directory of lstm-lm train or a .npz")  # fmt: skip
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


def check_free(out: str | Path, fix: str = "choose another --out") -> None:
    """LMError if `out` already holds a run (a new run or a copy never overwrites one)."""
    if saved(out):
        raise LMError(f"{out} already holds a run; {fix}")


def run_of(checkpoint_file: Path) -> Path | None:
    """The run directory a checkpoint file lies in (it holds metrics.jsonl), else None: a
    checkpoint copied elsewhere has no token cache beside it."""
    run_dir = Path(checkpoint_file).parent
    return run_dir if (run_dir / METRICS).exists() else None


def newest(run_dir: str | Path) -> Path:
    """The checkpoint of a run directory that is furthest along (last.npz on a tie): after a
    crash, best.npz can be newer than last.npz."""
    run_dir = Path(run_dir)
    found = [run_dir / n for n in (LAST, BEST) if (run_dir / n).exists()]
    if not found:
        raise LMError(f"{run_dir}: holds no checkpoint (best.npz or last.npz) to resume")
    return max(found, key=lambda p: read_meta(p)["train_state"]["step"])


def default_out(source: DataSource, name: str | None = None) -> Path:
    """runs/<name> (default name: `ptb`, the data directory's or file's name, or `stdin`; with
    `-char` at char level), or runs/<name>-2, -3, ... when that holds files already."""
    if name is None and source.ptb_dir is not None:
        name = "ptb"
    elif name is None:
        d, f = source.data_dir, source.train
        name = Path(d).name if d is not None else "stdin" if f == STDIN else Path(f).stem
    if source.level == "char" and name != "char":
        name += "-char"
    out, n = RUNS / name, 2
    while out.exists() and any(out.iterdir()):
        out, n = RUNS / f"{name}-{n}", n + 1
    return out
