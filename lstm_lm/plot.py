"""Learning curves of one or several runs from their metrics.jsonl: train and valid
perplexity (bits per character for char-level runs) against steps, tokens, minutes or
epochs, the best validation point of each run marked. Needs matplotlib (the `plot` extra).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lstm_lm import LMError
from lstm_lm.atomic import write_atomic
from lstm_lm.rundir import METRICS

X_AXES = {"step": "step", "tokens": "tokens", "minutes": "elapsed", "epoch": "epoch"}
INSTALL = "pip install 'lstm-lm[plot]' (in a checkout: pip install '.[plot]')"


def read_metrics(run: str | Path) -> list[dict]:
    """The evaluations of a run directory, in order; LMError where there are none."""
    path = Path(run) / METRICS
    if not path.is_file():
        raise LMError(f"{run}: no {METRICS}; give a run directory written by lstm-lm train")
    try:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except ValueError as e:
        raise LMError(f"{path}: not a metrics file ({e})") from None
    if not lines:
        raise LMError(f"{path}: no evaluation yet; plot the run once it has evaluated")
    return lines


def readable(runs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """The runs that have evaluations to plot, and why each other one has none; LMError
    when none has any."""
    good, skipped = [], []
    for run in runs:
        try:
            read_metrics(run)
            good.append(Path(run))
        except LMError as e:
            skipped.append(str(e))
    if not good:
        raise LMError("; ".join(skipped))
    return good, skipped


def learning_curves(runs: list[str | Path], x: str = "step"):
    """A matplotlib Figure: per run, a train and a valid line (their gid `RUN:train`,
    `RUN:valid`) and a marker on the best valid point (gid `RUN:best`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise LMError(f"lstm-lm plot needs matplotlib: {INSTALL}") from None
    histories = {str(r): read_metrics(r) for r in runs}
    char = all("valid_bpc" in h[0] for h in histories.values())
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for i, (run, history) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        xs = [_x(m, x) for m in history]
        for split, style in (("train", ":"), ("valid", "-")):
            ys = [_y(m, split, char) for m in history]
            ax.plot(xs, ys, style, color=colour, gid=f"{run}:{split}", label=f"{run} ({split})")
        best = min(range(len(history)), key=lambda k: history[k]["valid_loss"])
        ax.plot([xs[best]], [_y(history[best], "valid", char)], "o", color=colour,
                gid=f"{run}:best")  # fmt: skip
    ax.set_xlabel({"minutes": "minutes", "tokens": "training tokens"}.get(x, x))
    ax.set_ylabel("bits per character" if char else "perplexity")
    if not char:  # perplexities span decades: 1, 2 and 5 of each, written out
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(title="dotted: train, solid: valid, dot: best valid", fontsize="small")
    return fig


def _x(m: dict, x: str) -> float:
    value = m[X_AXES[x]]
    return value / 60 if x == "minutes" else value


def _y(m: dict, split: str, char: bool) -> float:
    loss = m[f"{split}_loss"]
    return loss / math.log(2) if char else math.exp(min(loss, 700.0))


def save(fig, out: str | Path) -> Path:
    """Write the figure as PNG or SVG, by the name's suffix."""
    out = Path(out)
    if out.suffix not in (".png", ".svg"):
        raise LMError(f"{out}: give a name ending in .png or .svg")
    write_atomic(out, lambda f: fig.savefig(f, format=out.suffix[1:], dpi=120))
    return out
