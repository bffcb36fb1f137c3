"""Training with truncated BPTT.

`fit` walks the windows of the training stream with the hidden state carried (detached)
from one window to the next, evaluates on valid at every epoch end (and every
`eval_every` steps), and, given a run directory, writes best.npz, last.npz and
metrics.jsonl there. It never prints: progress goes to an `on_event` callback.
Everything that decides the next step (parameters, optimiser memory, RNG state, epoch,
window, hidden state) is saved, so a resumed run is bit-identical to an uninterrupted one.
`lstm_lm.runs` prepares what `fit` needs for a run directory (`new_run`, `resume_run`,
`init_run`); `lstm_lm.evaluation` computes the validation loss.

The objective is the loss summed over the T steps of a window and averaged over the
batch (Zaremba et al. 2014), i.e. `scale = T` times the mean per-token NLL.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lstm_lm import LMError, cache, checkpoint, dropout
from lstm_lm.atomic import remove_stale_temporaries, write_atomic
from lstm_lm.config import TrainConfig
from lstm_lm.data import (
    Corpus,
    batchify,
    check_fits,
    num_windows,
    window,
)
from lstm_lm.evaluation import evaluate, validation_batch
from lstm_lm.losses import bits_per_char, perplexity
from lstm_lm.model import LanguageModel, State
from lstm_lm.optim import ASGD, OPTIMIZERS, SGD, clip_global_norm_
from lstm_lm.parallel import Group, RanksError
from lstm_lm.rundir import BEST, LAST, METRICS


class Step(NamedTuple):
    loss: float  # the window's mean NLL per token
    norm: float  # global gradient norm before clipping
    state: State  # final state, to carry into the next window

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.norm)


def optimizer_for(tc: TrainConfig, params: dict[str, np.ndarray]) -> SGD:
    """The optimiser a training config asks for, over these parameters."""
    return (ASGD if tc.asgd else OPTIMIZERS[tc.optimizer])(params)


def step_keeps_bits(model: LanguageModel, B: int, T: int) -> bool:
    """Whether a training step over a (B, T) window gives the same bits on one BLAS thread as
    threaded: the loss, the gradients and their norm, by a model of the same configuration
    with random weights on random tokens (Threads.same_bits; the optimisers use no BLAS)."""

    @functools.cache  # built only if the answer is not known yet, then run twice
    def probe():
        rng = np.random.default_rng(0)
        p = LanguageModel.init(model.config, rng, model.dtype)
        p.cell, p.threads = model.cell, model.threads
        return p, *rng.integers(0, model.config.vocab_size, (2, B, T))

    def run():
        p, x, y = probe()
        r = p.loss_and_grads(x, y, p.init_state(B), rng=np.random.default_rng(1))
        norm = clip_global_norm_(r.grads, 0.0, r.rows)
        return [np.array([r.loss, norm]), *(g.copy() for g in r.grads.values())]

    return model.threads.same_bits(("training step", B, T), run)


def train_step(
    model: LanguageModel,
    optimizer: SGD,
    tc: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    state: State,
    lr: float,
    rng: np.random.Generator,
    group: Group | None = None,
) -> Step:
    """One optimisation step on the window x, y (B, T): forward, backward, clipping, the
    token rows' learning-rate multiplier, the update. Where the loss or the gradient is not
    finite the parameters are left as they were (`fit` stops there).
    Over a group of ranks x, y and state are this rank's block of the batch; the dropout
    masks are drawn for the whole batch and sliced, so the step does not depend on P."""
    group, masks, T, phase = group or Group(), None, x.shape[1], model.phases
    if group.size > 1 and dropout.any_drawn(model.config):
        B = x.shape[0] * group.size
        with phase("dropout masks"):
            masks = model.draw_masks(T, B, rng).streams(group.block(B))
    with (
        model.threads.training_step(lambda: step_keeps_bits(model, *x.shape)),
        np.errstate(over="ignore", invalid="ignore"),  # divergence: caught below, one line
    ):
        r = model.loss_and_grads(x, y, state, rng=rng, masks=masks, scale=T / group.size)
        with phase("sum over ranks"):
            r = model.sum_over(r, group)
        with phase("clipping"):
            norm = clip_global_norm_(r.grads, tc.clip, r.rows)
        step = Step(r.loss, norm, r.state)
        if step.finite:
            with phase("optimiser"):
                model.scale_token_grads_(r, tc.token_lr_scale)
                optimizer.step(model.params, r.grads, lr, r.rows)
    return step


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint (JSON)."""

    step: int = 0
    epoch: int = 1  # the epoch being trained (1-based)
    window: int = 0  # next window of that epoch
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training and evaluation, resumes included
    best_valid: float = math.inf
    asgd_from: int | None = None  # the step --asgd started averaging at
    init_from: dict | None = None  # the checkpoint a fine-tuned run started from
    scheduled_losses: list = field(default_factory=list)  # valid, at epoch ends / --eval-every
    rng: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # the metrics of every evaluation


@dataclass
class Event:
    kind: str  # "start" | "step" | "eval" | "epoch_end" | "end"
    state: TrainState
    lr: float = 0.0
    loss: float = 0.0  # "step": this window's mean NLL
    metrics: dict | None = None  # "eval": the metrics.jsonl line
    reason: str = ""  # "end": finished | max-steps | max-tokens | max-minutes | interrupted
    windows: int = 0  # windows per epoch
    total: int = 0  # steps the whole run will have taken when it ends (resumes included)


class Diverged(RanksError):
    """The loss or the gradient is not finite, or the loss is far worse than a uniform guess
    (every rank sees the whole batch's)."""


def diverged(loss: float, vocab_size: int, start: float | None = None) -> bool:
    """Whether a mean loss means the weights blew up rather than a slow start: not finite, or
    a perplexity max(V, 100) times a uniform guess's V (PTB words: 1e8 against 1e4; a model
    that learns anything is below V after its first steps), or than the `start` loss of a
    model that began above that (fine-tuned on text with new tokens)."""
    worst = max(math.log(vocab_size), start or 0.0) + math.log(max(vocab_size, 100))
    return not math.isfinite(loss) or loss > worst


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
        "train_ppl": perplexity(train_loss),
        "valid_loss": valid_loss,
        "valid_ppl": perplexity(valid_loss),
        "tokens_per_s": round(tokens_per_s, 1),
        "elapsed": round(state.elapsed, 2),
    }
    bpc = bits_per_char(valid_loss, level)
    if bpc is not None:
        line["valid_bpc"] = bpc
    return line


CURVE_POINTS = 5  # evaluations at least over --max-minutes (see Trainer.curve_due)


@dataclass
class Since:
    """Training since a mark (the last evaluation, for its metrics line; the last progress
    line, for the CLI's): loss summed over tokens, tokens, seconds and steps."""

    loss: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    steps: int = 0

    def add(self, loss: float, tokens: int, seconds: float) -> None:
        """A step: its mean loss per token, its tokens, its time."""
        self.loss += loss * tokens
        self.tokens += tokens
        self.seconds += seconds
        self.steps += 1

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


class Trainer:
    """One run of `fit`: the windows of the training stream in order, an evaluation at every
    epoch end (and every `eval_every` steps), checkpoints and metrics into `run_dir`."""

    def __init__(self, model, corpus, tc, run_dir=None, resume=None, rng=None, on_event=None,
                 group=None, init_from=None):  # fmt: skip
        self.model, self.corpus, self.tc = model, corpus, tc
        self.group = group or Group()
        check_fits(corpus.train, tc.batch_size, tc.bptt, "the training split")
        self.block = self.group.block(tc.batch_size)  # this rank's streams
        data = batchify(corpus.train, tc.batch_size)  # (B, N/B)
        self.windows = num_windows(data, tc.bptt)
        self.data = data[self.block]
        self.valid = corpus.valid[: tc.validation_tokens(len(corpus.valid))]
        self.valid_batch = validation_batch(tc, len(self.valid))
        self.optimizer = optimizer_for(tc, model.params)
        self.rng = rng if rng is not None else np.random.default_rng(tc.seed)
        self._emit = on_event or (lambda e: None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.st, self.hidden = TrainState(init_from=init_from), self.fresh_state()
        self.since = Since()
        self.saved_at, self.saved_step = time.monotonic(), None  # of the last last.npz
        self.evaluated_at = self.st.elapsed  # the run's time at its last evaluation
        self.resumed = resume is not None
        if resume is not None:
            self.st = TrainState(**resume.train_state)
            self.rng.bit_generator.state = self.st.rng
            self.optimizer.load_state_dict(resume.optimizer)
            if self.st.window > 0 and resume.state is not None:  # all B streams: ours
                self.hidden = [tuple(s[self.block] for s in layer) for layer in resume.state]
        self.out_of_time = self.over_budget()  # from the checkpoint: the same on every rank
        self.group.check_same("the data", [corpus.train, self.valid],
                              "give every process the same files")  # fmt: skip
        self.group.broadcast_(model.params)

    def fresh_state(self) -> State:
        return self.model.init_state(self.data.shape[0])

    def run(self, should_stop: Callable[[], bool]) -> TrainState:
        """Train until the run is finished, stopped by max_steps / max_tokens / max_minutes, or
        asked to stop; last.npz is saved at every evaluation, every `save_every` minutes and at
        the end, so a crash loses at most the work since then."""
        st, tc = self.st, self.tc
        self._prepare_run_dir()
        self.emit("start", tc.lr_at(st.epoch))
        reason = self.stop_reason()
        while not reason:
            self.step()
            # decided together: the ranks' clocks and signals do not arrive in step
            due = tc.save_every and time.monotonic() - self.saved_at >= 60 * tc.save_every
            stop, due, self.out_of_time, curve = self.group.any(
                should_stop(), due, self.over_budget(), self.curve_due()
            )
            if st.window == self.windows:  # the next epoch starts afresh: saved now, resumed there
                lr = tc.lr_at(st.epoch)
                st.epoch += 1
                st.window = 0
                self.hidden = self.fresh_state()
                self.evaluate(lr)
                self.emit("epoch_end", lr)
            elif tc.eval_every and st.step % tc.eval_every == 0:
                self.evaluate(tc.lr_at(st.epoch))
            elif curve and not self.out_of_time:  # the stop evaluates anyway
                self.evaluate(tc.lr_at(st.epoch), scheduled=False)
            elif due:
                self.save(LAST)
            reason = self.stop_reason() or ("interrupted" if stop else "")
        if reason != "interrupted" and self.since.tokens and st.window > 0:
            self.evaluate(tc.lr_at(st.epoch), scheduled=False)  # stopped mid-epoch: what it got
        if self.saved_step != st.step:  # interrupted: at once, the user is waiting
            self.save(LAST)
        self.emit("end", tc.lr_at(min(st.epoch, tc.epochs)), reason=reason)
        return st

    def emit(self, kind: str, lr: float, **fields) -> None:
        self._emit(Event(kind, self.st, lr, windows=self.windows, total=self.total, **fields))

    @property
    def total(self) -> int:
        """Steps the run will have taken when it ends."""
        tc, total = self.tc, self.tc.epochs * self.windows
        if tc.max_steps is not None:
            total = min(total, tc.max_steps)
        if tc.max_tokens is not None:
            per_step = tc.batch_size * tc.bptt  # every window's but an epoch's last
            left = -(-(tc.max_tokens - self.st.tokens) // per_step)
            total = min(total, self.st.step + left)
        return max(total, self.st.step)

    def step(self) -> None:
        """Train on the next window; stop the run if the loss or the gradient is not finite."""
        st, lr = self.st, self.tc.lr_at(self.st.epoch)
        t0 = time.perf_counter()
        x, y = window(self.data, st.window, self.tc.bptt)
        step = train_step(self.model, self.optimizer, self.tc, x, y, self.hidden, lr, self.rng,
                          self.group)  # fmt: skip
        if not step.finite:
            raise Diverged(  # on every rank: the loss is the whole batch's
                f"the loss became {'nan' if math.isnan(step.loss * step.norm) else 'inf'} "
                f"at step {st.step + 1}; training stopped{self.kept()}; try a lower --lr or --clip"
            )
        self.hidden = step.state
        dt = time.perf_counter() - t0
        tokens = x.size * self.group.size
        st.step += 1
        st.window += 1
        st.tokens += tokens
        st.elapsed += dt
        self.since.add(step.loss, tokens, dt)
        self.emit("step", lr, loss=step.loss)

    def evaluate(self, lr: float, scheduled: bool = True) -> None:
        """Validation loss: a metrics line; best.npz when it is the best so far; last.npz.
        `scheduled`: at an epoch end or --eval-every, where an uninterrupted run evaluates too
        (what --asgd's trigger may look at), not where a stopped run adds one."""
        st, since = self.st, self.since
        t0 = time.perf_counter()
        with self.optimizer.averaged():
            nll, n = evaluate(self.model, self.valid, self.valid_batch, group=self.group)
        self.group.check_same(
            "the parameters", self.model.params.values(),
            f"the run stopped at step {st.step}; its checkpoints were kept (resume from them)",
        )  # fmt: skip
        st.elapsed += time.perf_counter() - t0
        self.evaluated_at = st.elapsed
        self.stop_if_diverged("valid", nll / n)
        if scheduled:
            self.maybe_start_averaging(nll / n)
        line = metrics_line(st, lr, since.mean_loss, nll / n, since.tokens_per_s,
                            self.corpus.vocab.level, self.windows)  # fmt: skip
        st.history.append(line)
        self.since = Since()
        self._write_metrics()
        if nll / n < st.best_valid:
            st.best_valid = nll / n
            self.save(BEST)
        self.save(LAST)
        self.emit("eval", lr, metrics=line)

    def maybe_start_averaging(self, valid_loss: float) -> None:
        """Merity et al.'s non-monotone trigger for --asgd: start averaging once the
        validation loss is worse than the best one from before the last N evaluations, or
        at the end of epoch --asgd-after."""
        st, tc = self.st, self.tc
        if tc.asgd and st.asgd_from is None:
            due = tc.asgd_after is not None and st.epoch - 1 >= tc.asgd_after  # epochs done
            if due or stalled(st.scheduled_losses, valid_loss, tc.asgd_patience):
                self.optimizer.start_averaging()
                st.asgd_from = st.step
        st.scheduled_losses.append(valid_loss)

    def save(self, name: str) -> None:
        """Everything the next step depends on, as `name` in the run directory (by rank 0,
        with the hidden state of all B streams: any number of ranks can resume it)."""
        if self.since.tokens:  # saved between evaluations: not if training blew the weights up
            self.stop_if_diverged("train", self.since.mean_loss)
        if self.run_dir is None:
            return
        st = self.st
        st.rng = self.rng.bit_generator.state
        state = None
        if st.window > 0:
            state = [tuple(self.group.gather(s) for s in layer) for layer in self.hidden]
        with self.optimizer.averaged():  # the model to use; the iterate in the optimiser state
            self.group.on_main(lambda: checkpoint.save(
                self.run_dir / name, self.model, self.corpus.vocab, self.tc, asdict(st),
                self.corpus.source, self.optimizer.state_dict(), state))  # fmt: skip
        if name == LAST:
            self.saved_at, self.saved_step = time.monotonic(), st.step

    def curve_due(self) -> bool:
        """Whether a run with --max-minutes (and no --eval-every) has passed the next fifth of
        it since its last evaluation: a run stopped before its first epoch ends still has a
        learning curve (an evaluation at each fifth, while evaluations take less than one),
        and one whose epochs are shorter evaluates no more often."""
        tc = self.tc
        if tc.max_minutes is None or tc.eval_every:
            return False
        fifth = 60 * tc.max_minutes / CURVE_POINTS
        return self.st.elapsed >= (math.floor(self.evaluated_at / fifth) + 1) * fifth

    def over_budget(self) -> bool:
        """Whether this rank's clock has passed --max-minutes (the ranks decide together)."""
        limit = self.tc.max_minutes
        return limit is not None and self.st.elapsed >= 60 * limit

    def stop_if_diverged(self, split: str, loss: float) -> None:
        """Stop the run, before anything is saved, if `loss` says the weights blew up."""
        start = (self.st.init_from or {}).get("valid_loss")
        if diverged(loss, self.model.config.vocab_size, start):
            raise Diverged(  # on every rank: the losses are the whole batch's
                f"the loss diverged ({split} ppl {perplexity(loss):.1e} at step "
                f"{self.st.step:,}): lower --lr{self.kept()}"
            )

    def kept(self) -> str:
        """What a run that stops now leaves behind, for its last line."""
        if self.saved_step is None and not self.resumed:
            return "; nothing was saved yet"
        return "; the checkpoints saved before were kept"

    def stop_reason(self) -> str:
        return stop_reason(self.st, self.tc, self.out_of_time)

    def _write_metrics(self) -> None:
        """metrics.jsonl: the evaluations of the run so far (the checkpoints' history), whole
        at every instant; rewritten, so a run resumed from an older checkpoint drops the
        lines of the work it lost."""
        if self.run_dir is not None:
            lines = "".join(json.dumps(m) + "\n" for m in self.st.history)
            self.group.on_main(lambda: write_atomic(self.run_dir / METRICS, lines.encode()))

    def _prepare_run_dir(self) -> None:
        if self.run_dir is not None:
            self.group.on_main(self._make_run_dir)
            self._write_metrics()

    def _make_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LMError(
                f"cannot write to run directory {self.run_dir}: {e.strerror}; choose another --out"
            ) from None
        remove_stale_temporaries(self.run_dir)
        cache.save(self.run_dir, self.corpus, given_vocab=self.st.init_from is not None)


def stalled(losses: list[float], loss: float, patience: int) -> bool:
    """Merity et al.'s non-monotone criterion: `loss` is worse than the best of `losses`
    (the earlier evaluations) from before the last `patience` of them."""
    return len(losses) > patience and loss > min(losses[:-patience])


def stop_reason(st: TrainState, tc: TrainConfig, out_of_time: bool | None = None) -> str:
    """What ends a run that stands at `st`: "finished", "max-steps", "max-tokens",
    "max-minutes" (`out_of_time`; by default from st.elapsed), or "" while it goes on."""
    if out_of_time is None:
        out_of_time = tc.max_minutes is not None and st.elapsed >= 60 * tc.max_minutes
    if st.epoch > tc.epochs:
        return "finished"
    if tc.max_steps is not None and st.step >= tc.max_steps:
        return "max-steps"
    if tc.max_tokens is not None and st.tokens >= tc.max_tokens:
        return "max-tokens"
    return "max-minutes" if out_of_time else ""


def fit(
    model: LanguageModel,
    corpus: Corpus,
    tc: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: checkpoint.Checkpoint | None = None,
    rng: np.random.Generator | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    group: Group | None = None,
    init_from: dict | None = None,
) -> TrainState:
    """Train `model` on `corpus.train` following `tc`; see the module docstring.
    `rng` (default: seeded with tc.seed) draws the dropout masks; on resume its state is
    restored from the checkpoint. `group`: the ranks training together (default: alone).
    `init_from`: where a fine-tuned model came from, recorded in its checkpoints."""
    trainer = Trainer(model, corpus, tc, run_dir, resume, rng, on_event, group, init_from)
    return trainer.run(should_stop or (lambda: False))
