"""Training with truncated BPTT, and exact evaluation.

`fit` walks the windows of the training stream with the hidden state carried (detached)
from one window to the next, evaluates on valid at every epoch end (and every
`eval_every` steps), and, given a run directory, writes best.npz, last.npz and
metrics.jsonl there. It never prints: progress goes to an `on_event` callback.
Everything that decides the next step (parameters, optimiser memory, RNG state, epoch,
window, hidden state) is saved, so a resumed run is bit-identical to an uninterrupted one.

The objective is the loss summed over the T steps of a window and averaged over the
batch (Zaremba et al. 2014), i.e. `scale = T` times the mean per-token NLL.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError, checkpoint
from lstm_lm.config import TrainConfig
from lstm_lm.data import Corpus, batchify, check_fits, num_windows, window
from lstm_lm.model import LanguageModel
from lstm_lm.optim import OPTIMIZERS, clip_global_norm_

LN2 = math.log(2)


def evaluate(
    model: LanguageModel, ids: np.ndarray, batch_size: int = 1, bptt: int = 35
) -> tuple[float, int]:
    """Summed NLL (nats) and number of targets over a whole stream, the state carried
    across windows. With batch size 1 every token but the first is a target; with B > 1
    the len(ids) % B tokens of the remainder are dropped."""
    data = batchify(ids, batch_size)
    state = model.init_state(batch_size)
    total, count = 0.0, 0
    for i in range(num_windows(data, bptt)):
        x, y = window(data, i, bptt)
        nll, state = model.nll(x, y, state)
        total += nll
        count += y.size
    return total, count


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint (JSON)."""

    step: int = 0
    epoch: int = 1  # the epoch being trained (1-based)
    window: int = 0  # next window of that epoch
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training and evaluation, resumes included
    best_valid: float = math.inf
    rng: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # the metrics of every evaluation


@dataclass
class Event:
    kind: str  # "start" | "step" | "eval" | "epoch_end" | "end"
    state: TrainState
    lr: float = 0.0
    loss: float = 0.0  # "step": this window's mean NLL
    metrics: dict | None = None  # "eval": the metrics.jsonl line
    reason: str = ""  # "end": finished | max-steps | max-tokens | interrupted
    windows: int = 0  # windows per epoch


class Diverged(LMError):
    pass


def metrics_line(
    state: TrainState,
    lr: float,
    train_loss: float,
    valid_loss: float,
    tokens_per_s: float,
    level: str,
    windows: int,
) -> dict:
    """One line of metrics.jsonl (and of `train --json`)."""
    epoch = state.epoch - 1 + state.window / windows
    line = {
        "step": state.step,
        "epoch": round(epoch, 4),
        "lr": lr,
        "train_loss": train_loss,
        "train_ppl": math.exp(min(train_loss, 700)),
        "valid_loss": valid_loss,
        "valid_ppl": math.exp(min(valid_loss, 700)),
        "tokens_per_s": round(tokens_per_s, 1),
        "elapsed": round(state.elapsed, 2),
    }
    if level == "char":
        line["valid_bpc"] = valid_loss / LN2
    return line


def fit(
    model: LanguageModel,
    corpus: Corpus,
    tc: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    data_source: dict | None = None,
    resume: checkpoint.Checkpoint | None = None,
    rng: np.random.Generator | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainState:
    """Train `model` on `corpus.train` following `tc`; see the module docstring.
    `rng` (default: seeded with tc.seed) draws the dropout masks; on resume its state is
    restored from the checkpoint."""
    emit = on_event or (lambda e: None)
    should_stop = should_stop or (lambda: False)
    B, T = tc.batch_size, tc.bptt
    check_fits(corpus.train, B, T, "the training split")
    data = batchify(corpus.train, B)
    n_windows = num_windows(data, T)
    valid_B = min(B, max(1, len(corpus.valid) // (T + 1)))
    optimizer = OPTIMIZERS[tc.optimizer](model.params)
    rng = rng if rng is not None else np.random.default_rng(tc.seed)
    st, hidden = TrainState(), model.init_state(B)
    if resume is not None:
        st = TrainState(**resume.train_state)
        rng.bit_generator.state = st.rng
        optimizer.load_state_dict(resume.optimizer)
        if st.window > 0 and resume.state is not None:
            hidden = resume.state
    run_dir = Path(run_dir) if run_dir is not None else None
    source = data_source or {}

    def save(name: str) -> None:
        if run_dir is not None:
            st.rng = rng.bit_generator.state
            checkpoint.save(
                run_dir / name,
                model,
                corpus.vocab,
                tc,
                asdict(st),
                source,
                optimizer.state_dict(),
                hidden if st.window > 0 else None,
            )

    def done() -> str:
        if st.epoch > tc.epochs:
            return "finished"
        if tc.max_steps is not None and st.step >= tc.max_steps:
            return "max-steps"
        if tc.max_tokens is not None and st.tokens >= tc.max_tokens:
            return "max-tokens"
        return ""

    def run_eval(lr: float) -> None:
        nonlocal loss_sum, loss_n, train_time, train_tokens
        t0 = time.perf_counter()
        nll, n = evaluate(model, corpus.valid, valid_B, T)
        st.elapsed += time.perf_counter() - t0
        train_loss = loss_sum / max(loss_n, 1)
        line = metrics_line(
            st,
            lr,
            train_loss,
            nll / n,
            train_tokens / max(train_time, 1e-9),
            corpus.vocab.level,
            n_windows,
        )
        st.history.append(line)
        loss_sum = loss_n = train_tokens = 0
        train_time = 0.0
        if run_dir is not None:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
        if nll / n < st.best_valid:
            st.best_valid = nll / n
            save("best.npz")
        emit(Event("eval", st, lr, metrics=line, windows=n_windows))

    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").touch()
        except OSError as e:
            raise LMError(
                f"cannot write to run directory {run_dir}: {e.strerror}; choose another --out"
            ) from None
    loss_sum, loss_n, train_time, train_tokens = 0.0, 0, 0.0, 0
    emit(Event("start", st, tc.lr_at(st.epoch), windows=n_windows))
    reason = done()
    while not reason:
        lr = tc.lr_at(st.epoch)
        t0 = time.perf_counter()
        x, y = window(data, st.window, T)
        r = model.loss_and_grads(x, y, hidden, rng=rng, scale=float(x.shape[1]))
        norm = clip_global_norm_(r.grads, tc.clip, r.rows)
        if not (math.isfinite(r.loss) and math.isfinite(norm)):
            raise Diverged(
                f"the loss became {'nan' if math.isnan(r.loss * norm) else 'inf'} "
                f"at step {st.step + 1}; "
                "training stopped and the saved checkpoints were kept; try a lower --lr or --clip"
            )
        model.scale_token_grads_(r.grads, tc.token_lr_scale)
        optimizer.step(model.params, r.grads, lr, r.rows)
        hidden = r.state
        dt = time.perf_counter() - t0
        st.step += 1
        st.window += 1
        st.tokens += x.size
        st.elapsed += dt
        train_time += dt
        train_tokens += x.size
        loss_sum += r.loss * x.size
        loss_n += x.size
        emit(Event("step", st, lr, loss=r.loss, windows=n_windows))
        if (
            st.window == n_windows
        ):  # the next epoch starts afresh: checkpoints saved now resume there
            st.epoch += 1
            st.window = 0
            hidden = model.init_state(B)
            run_eval(lr)
            emit(Event("epoch_end", st, lr, windows=n_windows))
            save("last.npz")
        elif tc.eval_every and st.step % tc.eval_every == 0:
            run_eval(lr)
        reason = done() or ("interrupted" if should_stop() else "")
    if loss_n and st.window > 0:  # stopped mid-epoch: evaluate what was trained
        run_eval(tc.lr_at(st.epoch))
    save("last.npz")
    emit(Event("end", st, tc.lr_at(min(st.epoch, tc.epochs)), reason=reason, windows=n_windows))
    return st
