"""What the `lstm-lm` command shows: consoles, progress, tables, curves, output lines.

Rendering only: every function here takes what the library returned and turns it into text;
none loads, computes or decides anything.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from lstm_lm import checkpoint
from lstm_lm.losses import bits_per_char, perplexity
from lstm_lm.memory import fmt_bytes
from lstm_lm.runs import Run
from lstm_lm.score import LineScore
from lstm_lm.train import Since


class Consoles:
    """Results to stdout; progress to stderr (silent with --quiet); errors and closing
    lines to stderr always. No wrapping: a line stays a line in a log file."""

    def __init__(self, quiet: bool = False):
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # a pipe or a file: tables as wide as they need
            self.out.width = 160
        self.log = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)


def fmt_ppl(ppl: float) -> str:
    return f"{ppl:,.2f}" if ppl < 1e6 else f"{ppl:.3g}"


class FetchView(contextlib.AbstractContextManager):
    """Renders a PTB fetch: its log lines, and a progress bar once bytes flow."""

    def __init__(self, console: Console):
        self.console, self.tasks = console, {}
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        )
        self.hooks = {"log": console.print, "progress": self.progress}

    def progress(self, name: str, done: int, total: int | None) -> None:
        if not self.tasks:
            self.bar.start()  # only once something is fetched: nothing to draw otherwise
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total)
        self.bar.update(self.tasks[name], completed=done)

    def __exit__(self, *exc):
        if self.tasks:
            self.bar.stop()


# Without a terminal (a log file, a pipe), training prints a progress line this often.
PROGRESS_SECONDS = 30.0


class WorkProgress(contextlib.AbstractContextManager):
    """Progress of a long pass (an evaluation, gradient statistics, a tuning grid) called as
    progress(done, total): a bar on a terminal, elsewhere a line every PROGRESS_SECONDS;
    nothing for a pass done within the first PROGRESS_SECONDS."""

    def __init__(self, console: Console, what: str, unit: str = "tokens"):
        self.console, self.what, self.unit = console, what, unit
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=True)  # fmt: skip
        self.task, self.start = None, time.monotonic()
        self.last = self.start

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.start < 2 or self.console.quiet:  # a short pass shows nothing
            return
        if self.console.is_terminal:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task(self.what, total=total)
            self.bar.update(self.task, completed=done, total=total)
        elif now - self.last >= PROGRESS_SECONDS:
            left = (total - done) * (now - self.start) / max(done, 1)
            self.console.print(
                f"{self.what}: {done:,}/{total:,} {self.unit} "
                f"({100 * done / max(total, 1):.0f}%), {fmt_duration(left)} left"
            )
            self.last = now

    def __exit__(self, *exc):
        if self.task is not None:
            self.bar.stop()


class TrainView:
    """Renders training events: one progress bar for the whole run (on a terminal; elsewhere a
    plain line every PROGRESS_SECONDS), a line per evaluation, a sample at each epoch end (the
    text `sample()` returns), and the summary at the end."""

    def __init__(self, con: Consoles, run: Run, as_json: bool, sample: Callable[[], str]):
        self.con, self.run, self.as_json, self.sample = con, run, as_json, sample
        self.bar = Progress(  # fits 80 columns: epoch, bar, steps, ppl, tok/s, time left
            TextColumn("{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TextColumn("{task.fields[left]}"),
            console=con.log,
            transient=True,
        )
        self.task, self.reason = None, ""
        self.lines = not con.log.is_terminal and not con.log.quiet
        self.since, self.clock, self.tokens = Since(), time.monotonic(), 0  # at the last step
        self.started = (time.monotonic(), 0)  # this invocation's first step: clock, step

    def __call__(self, ev):
        getattr(self, f"on_{ev.kind}", lambda ev: None)(ev)

    def on_start(self, ev):
        self.since, self.clock, self.tokens = Since(), time.monotonic(), ev.state.tokens
        self.started = (self.clock, ev.state.step)

    def on_step(self, ev):
        if self.lines:
            self.progress_line(ev)
        else:
            self.update_bar(ev)

    def progress_line(self, ev):
        """A plain line (step, epoch, train ppl, tok/s, time left) at most every
        PROGRESS_SECONDS."""
        st, since, now = ev.state, self.since, time.monotonic()
        since.add(ev.loss, st.tokens - self.tokens, now - self.clock)
        self.clock, self.tokens = now, st.tokens
        if since.seconds < PROGRESS_SECONDS:
            return
        self.con.log.print(
            f"step {st.step:,}/{ev.total:,}  epoch {st.epoch - 1 + st.window / ev.windows:.2f}  "
            f"train ppl {fmt_ppl(perplexity(since.mean_loss))}  "
            f"{since.tokens_per_s:,.0f} tok/s  {self.time_left(ev, since.seconds, since.steps)}"
        )
        self.since = Since()

    def update_bar(self, ev):
        st = ev.state
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=ev.total, completed=st.step - 1, info="",
                                          left="")  # fmt: skip
        info = f"ppl {fmt_ppl(perplexity(ev.loss))}  {st.tokens / max(st.elapsed, 1e-9):,.0f} tok/s"
        clock, step = self.started
        left = self.time_left(ev, time.monotonic() - clock, st.step - step)
        epoch = f"epoch {st.epoch}/{self.run.config.epochs}"
        self.bar.update(self.task, completed=st.step, total=ev.total, description=epoch,
                        info=info, left=left)  # fmt: skip

    def time_left(self, ev, seconds: float, steps: int) -> str:
        """The time to the run's end at `steps` steps in `seconds`, or to --max-minutes."""
        left = (ev.total - ev.state.step) * seconds / max(steps, 1)
        if self.run.config.max_minutes is not None:
            left = min(left, max(0.0, 60 * self.run.config.max_minutes - ev.state.elapsed))
        return f"{fmt_duration(left)} left"

    def on_eval(self, ev):
        m = ev.metrics
        if self.as_json:
            self.con.out.print(json.dumps(m))
        bpc = f"  valid bpc {m['valid_bpc']:.3f}" if "valid_bpc" in m else ""
        self.con.log.print(
            f"epoch {m['epoch']:.2f}  step {m['step']:,}  train ppl {fmt_ppl(m['train_ppl'])}  "
            f"valid ppl {fmt_ppl(m['valid_ppl'])}{bpc}  lr {m['lr']:.3g}  "
            f"{m['tokens_per_s']:,.0f} tok/s  {m['elapsed'] / 60:.1f} min"
            + (f"  (averaged since step {ev.state.asgd_from:,})" if ev.state.asgd_from else "")
        )

    def on_epoch_end(self, ev):
        self.con.log.print(f"[dim]sample: {self.sample()}[/]")

    def on_end(self, ev):
        self.stop_bar()
        self.reason, st = ev.reason, ev.state
        if st.history:
            self.con.log.print(summary_table(st.history, st.best_valid))
        limit = f" (--{self.reason} reached)" if self.reason.startswith("max-") else ""
        best = "no evaluation yet"
        if st.history:
            bpc = bits_per_char(st.best_valid, self.run.corpus.vocab.level)
            best = f"best valid ppl {fmt_ppl(perplexity(st.best_valid))}"
            best += f" ({bpc:.3f} bpc)" if bpc is not None else ""
        go_on = f"; go on: lstm-lm train --resume {self.run.out}" if limit else ""
        self.con.err.print(
            f"{'stopped' if self.reason == 'interrupted' else 'done'}: step {st.step:,}{limit}, "
            f"{best}, {st.elapsed / 60:.1f} min; checkpoints in {self.run.out}{go_on}"
        )

    def stop_bar(self):
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()
            self.task = None


def fmt_duration(seconds: float) -> str:
    """40 s, 12 min, 3 h 05 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def summary_table(history: list[dict], best_valid: float) -> Table:
    """A row per evaluation; the best (the one in best.npz) marked."""
    char = all("valid_bpc" in m for m in history)
    table = Table(title="training summary", caption="* best.npz")
    for col in ("", "epoch", "step", "train ppl", "valid ppl", *["valid bpc"] * char, "tok/s"):
        table.add_column(col, justify="right")
    for m in history:
        best = "*" if m["valid_loss"] == best_valid else ""
        bpc = [f"{m['valid_bpc']:.3f}"] if char else []
        table.add_row(
            best,
            f"{m['epoch']:.2f}",
            f"{m['step']:,}",
            fmt_ppl(m["train_ppl"]),
            fmt_ppl(m["valid_ppl"]),
            *bpc,
            f"{m['tokens_per_s']:,.0f}",
            style="bold" if best else None,
        )
    return table


def regularisers(c) -> str:
    """A model config's dropout of every kind and activation penalties: "dropout 0.2, input
    dropout 0.2, ..., variational, AR 2, TAR 1"."""
    parts = [f"dropout {c.dropout:g}"]
    for name in ("input_dropout", "word_dropout", "weight_drop"):
        if getattr(c, name):
            parts.append(f"{name.replace('_', ' ')} {getattr(c, name):g}")
    parts += ["variational"] * c.variational
    parts += [f"{name.upper()} {getattr(c, name):g}" for name in ("ar", "tar") if getattr(c, name)]
    return ", ".join(parts)


def output_layer(c) -> str:
    """A model config's output layer, where it is not the full softmax: ", adaptive softmax
    (cutoffs 2,000, 10,000)" or ", tied embeddings"."""
    if c.tied:
        return ", tied embeddings"
    if c.softmax == "full":
        return ""
    return f", adaptive softmax (cutoffs {', '.join(f'{n:,}' for n in c.cutoffs or ())})"


def lr_schedule(tc) -> str:
    """How the lr changes over the run's epochs."""
    if tc.lr_decay == 1 or tc.decay_after >= tc.epochs:
        return "constant"
    return f"x{tc.lr_decay:g} per epoch after {tc.decay_after}"


def asgd(tc) -> str:
    """When --asgd starts averaging."""
    after = f", or after epoch {tc.asgd_after}" if tc.asgd_after else ""
    return f"ASGD (patience {tc.asgd_patience}{after})"


def describe(run: Run) -> str:
    c, tc, corpus = run.model.config, run.config, run.corpus
    size = sum(f["size"] for f in corpus.files)
    loaded = f"{fmt_bytes(size)} of text, " if size else ""
    loaded += "token ids from the cache" if corpus.cached else "tokenised"
    return (
        f"{c.cell} {c.layers} x {c.hidden}, vocab {c.vocab_size:,}{output_layer(c)}, "
        f"{run.model.num_params():,} parameters; {len(corpus.train):,} training tokens "
        f"({loaded} in {corpus.seconds:.1f} s); "
        f"batch {tc.batch_size} x bptt {tc.bptt}, {tc.optimizer} lr {tc.lr:g}"
        + (f" + {asgd(tc)}" if tc.asgd else "")
        + ", "
        + regularisers(c)
        + (f"; {run.group.size} processes" if run.group is not None and run.group.size > 1 else "")
        + f" -> {run.out}"
    )


def nothing_to_do(run: Run, reason: str) -> str:
    """Why a resumed run has no step left, and the option that gives it more."""
    st, tc, out = run.resume.train_state, run.config, run.out
    how = f"lstm-lm train --resume {out}"
    if reason == "finished":
        return (f"nothing to do: {out} finished its {tc.epochs} epochs at step {st['step']:,}; "
                f"to train on, give more: {how} --epochs N (N > {tc.epochs})")  # fmt: skip
    if reason == "max-steps":
        return (f"nothing to do: {out} is at step {st['step']:,}, its --max-steps; "
                f"to go on: {how} --max-steps N (N > {tc.max_steps})")  # fmt: skip
    if reason == "max-tokens":
        return (f"nothing to do: {out} has trained on {st['tokens']:,} tokens, its --max-tokens; "
                f"to go on: {how} --max-tokens N (N > {tc.max_tokens})")  # fmt: skip
    return (f"nothing to do: {out} has trained {st['elapsed'] / 60:.1f} minutes, its "
            f"--max-minutes; to go on: {how} --max-minutes M (M > {tc.max_minutes:g})")  # fmt: skip


def info_json(c: checkpoint.Checkpoint, path) -> dict:
    """What `info` shows, for scripts."""
    st, best = c.train_state, c.train_state.get("best_valid")
    best = best if best is not None and math.isfinite(best) else None
    return {
        "path": str(path),
        "format_version": c.meta["version"],
        "lstm_lm": c.meta.get("lstm_lm"),
        "level": c.vocab.level,
        "vocab_size": len(c.vocab),
        "parameters": c.model.num_params(),
        "config": asdict(c.model.config),
        "train_config": asdict(c.train_config),
        "data": c.meta["data"],
        "progress": {
            "step": st["step"],
            "epoch": st["epoch"],
            "window": st["window"],
            "tokens": st["tokens"],
            "elapsed": st["elapsed"],
            "best_valid_loss": best,
            "best_valid_ppl": None if best is None else perplexity(best),
            "best_valid_bpc": None if best is None else bits_per_char(best, c.vocab.level),
        },
        "history": st.get("history", []),
    }


def warn_unknown(con: Consoles, vocab, unknown: list[str]) -> None:
    if unknown:
        what = "words map to <unk>" if "<unk>" in vocab.stoi else "tokens are skipped"
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        con.err.print(f"[yellow]warning: {len(unknown)} unknown {what}: {shown}[/]")


def score_line(s: LineScore, log10: bool, as_json: bool, per_token: bool) -> str:
    """One output line: tab-separated log-probability, tokens, perplexity, text (then the
    token log-probabilities), or a JSON object."""
    base = math.log(10) if log10 else 1.0
    if as_json:
        obj = {
            "line": s.text,
            "tokens": s.tokens,
            "logprob": s.logprob / base,
            "ppl": s.ppl,
            "bpc": s.bpc,
            "unknown": s.unknown,
        }
        if per_token:
            obj["token_logprobs"] = [lp / base for lp in s.token_logprobs]
        return json.dumps(obj)
    fields = [f"{s.logprob / base:.6f}", str(s.tokens), f"{s.ppl:.4f}", s.text]
    if per_token:
        fields.append(" ".join(f"{lp / base:.6f}" for lp in s.token_logprobs))
    return "\t".join(fields)


def info_rows(c: checkpoint.Checkpoint) -> list[tuple[str, str]]:
    st, m, tc, vocab = c.train_state, c.model.config, c.train_config, c.vocab
    best, bpc = st["best_valid"], None
    if best is not None and np.isfinite(best):
        bpc = bits_per_char(best, vocab.level)
        best = fmt_ppl(perplexity(best)) + (f" ({bpc:.3f} bpc)" if bpc is not None else "")
    data = c.meta["data"]
    return [
        (
            "model",
            f"{m.cell} {m.layers} x {m.hidden}{output_layer(m)}, {regularisers(m)}"
            + f", init ±{m.init_scale:g}"
            + (f", forget bias {m.forget_bias:g}" if m.forget_bias else ""),
        ),
        (
            "vocabulary",
            f"{len(vocab):,} ({vocab.level} level" + (", PTB chars)" if vocab.ptb_chars else ")"),
        ),
        ("parameters", f"{c.model.num_params():,}"),
        (
            "training",
            f"batch {tc.batch_size} x bptt {tc.bptt}, {tc.optimizer} lr {tc.lr:g} "
            f"({lr_schedule(tc)}), clip {tc.clip:g}, "
            f"seed {tc.seed}"
            + (f", token rows lr x{tc.token_lr_scale:g}" if tc.token_lr_scale != 1 else "")
            + (f", {asgd(tc)}" if tc.asgd else "")
            + (f", averaging since step {st['asgd_from']:,}" if st.get("asgd_from") else ""),
        ),
        (
            "progress",
            f"step {st['step']:,}, {st['epoch'] - 1} of {tc.epochs} epochs done"
            + (f" and {st['window']:,} windows" if st["window"] else "")
            + f", {st['tokens']:,} tokens, {st['elapsed'] / 60:.1f} min",
        ),
        ("best valid ppl", best if isinstance(best, str) else "-"),
        ("data", data.get("dir") or data.get("train") or data.get("data")),
    ]


def learning_curve(history: list[dict], width: int = 40) -> str:
    """Valid perplexity by evaluation as horizontal bars spanning the range of the values
    (the lowest a bar of one block, the highest one of `width`), under column headings."""
    ppl = [h["valid_ppl"] for h in history]
    lo, hi = min(ppl), max(ppl)
    bpc = all("valid_bpc" in h for h in history)
    value = "valid ppl (bpc)" if bpc else "valid ppl"
    scale = f"{fmt_ppl(lo)} .. {fmt_ppl(hi)}"
    lines = [f"  {'epoch':>7}  {'step':>9}  {value:>18}  {scale}"]
    for h, p in zip(history, ppl):
        shown = fmt_ppl(p) + (f" ({h['valid_bpc']:.3f})" if bpc else "")
        blocks = 1 + round((width - 1) * (p - lo) / (hi - lo)) if hi > lo else width
        lines.append(f"  {h['epoch']:7.2f}  {h['step']:9,}  {shown:>18}  {'█' * blocks}")
    return "\n".join(lines)


def settings_table(values: dict, origins: dict) -> Table:
    """train --dry-run: every setting, its value and where the value comes from."""
    table = Table(title="lstm-lm train --dry-run: nothing was loaded or written")
    for col in ("setting", "value", "from"):
        table.add_column(col)
    for k, v in values.items():
        table.add_row(k.replace("_", "-"), str(v), origins[k])
    return table


def eval_table(path, result: dict, streams: int) -> Table:
    table = Table(title=str(path))
    row = {
        "split": result["split"],
        "streams": str(streams),
        "tokens": f"{result['tokens']:,}",
        "nll (nats/token)": f"{result['nll']:.4f}",
        "perplexity": fmt_ppl(result["ppl"]),
    }
    if result["bpc"] is not None:
        row["bits/char"] = f"{result['bpc']:.4f}"
    for col in row:
        table.add_column(col, justify="right")
    table.add_row(*row.values())
    return table


def tune_table(what: str, rows: list[dict], best: dict) -> Table:
    """--tune's grid: a row per setting, the model alone first, the best marked."""
    keys = ("theta", "lambda") if what == "cache" else ("lr", "decay")
    table = Table(title=f"--tune {what} on valid")
    for col in ("", *keys, "perplexity"):
        table.add_column(col, justify="right")
    for r in rows:
        cells = ["-" if r[k] is None else f"{r[k]:g}" for k in keys]
        table.add_row("*" if r is best else "", *cells, fmt_ppl(r["ppl"]))
    return table


def gradcheck_table(config, bptt: int, errors: dict, tolerance: float) -> Table:
    c = config
    table = Table(
        title=f"gradient check: {c.cell} {c.layers} x {c.hidden}, T {bptt}, "
        f"V {c.vocab_size}{output_layer(c)}, {regularisers(c)}"
    )
    table.add_column("array")
    table.add_column("max relative error", justify="right")
    table.add_column("")
    for name, err in errors.items():
        table.add_row(name, f"{err:.2e}", "[green]ok[/]" if err < tolerance else "[red]FAIL[/]")
    return table


def bench_table(results: list[dict]) -> Table:
    table = Table(title="lstm-lm bench (median of timed steps)")
    columns = ["formulation", "model", "B x T", "params", "train tok/s", "eval tok/s"]
    ranks = results[0].get("procs", 1) > 1
    for col in columns + ["processes", "bytes/step"] * ranks:
        table.add_column(col, justify="right")
    for r in results:
        eval_rate = f"{r['eval_tokens_per_s']:,.0f}" if r["eval_tokens_per_s"] else "-"
        row = [
            r["cell"],
            f"{r['layers']} x {r['hidden']}, V {r['vocab']:,}"
            + (f", adaptive {','.join(map(str, r['cutoffs']))}" if r.get("cutoffs") else "")
            + (", Zipf" if r.get("tokens") == "zipf" else ""),
            f"{r['batch_size']} x {r['bptt']}",
            f"{r['params']:,}",
            f"{r['train_tokens_per_s']:,.0f}",
            eval_rate,
        ]
        if ranks:
            row += [str(r.get("procs", 1)), f"{r.get('bytes_per_step', 0):,}"]
        table.add_row(*row)
    return table


def profile_table(result: dict, p: dict) -> Table:
    """One training step of `result`'s configuration, part by part (bench.profile)."""
    n = result["threads"]
    caption = (
        f"GEMM ceiling {p['gemm_gflops']:,.0f} GFLOP/s "
        f"(2048 x 2048 x 2048 {result['dtype']} on {n} thread{'s' * (n != 1)})"
    )
    if result["procs"] > 1:
        caption += f"; each of {result['procs']} processes, on its block of the batch"
    table = Table(
        title=f"one training step of {result['cell']} {result['layers']} x {result['hidden']}, "
        f"V {result['vocab']:,}, B {result['batch_size']}, T {result['bptt']}: "
        f"{p['step_ms']:.1f} ms",
        caption=caption,
    )
    for col in ["part", "ms", "share", "GEMM GFLOP", "ms at the ceiling"]:
        table.add_column(col, justify="left" if col == "part" else "right")
    for part in p["parts"]:
        floor = 1e3 * part["gflop"] / p["gemm_gflops"]
        table.add_row(
            part["part"],
            f"{part['ms']:.2f}",
            f"{part['ms'] / p['step_ms']:.0%}",
            f"{part['gflop']:.3f}" if part["gflop"] else "-",
            f"{floor:.2f}" if part["gflop"] else "-",
        )
    return table


def feature_table(a) -> Table:
    """viz: the units that follow each feature of the text best (viz.Analysis)."""
    table = Table(title="units that follow features of the text (Pearson r over it)")
    for col in ("feature", "best unit", "r", "next"):
        table.add_column(col, justify="right" if col == "r" else "left")
    name = lambda k, s, u: f"layer {k} unit {u} ({s})"  # noqa: E731
    for feature in a.r:
        (k, s, u, r), *rest = a.ranking(feature, 3)
        table.add_row(feature, name(k, s, u), f"{r:+.2f}",
                      ", ".join(f"{name(*x[:3])} {x[3]:+.2f}" for x in rest))  # fmt: skip
    for feature in a.absent:
        table.add_row(feature, "[dim]not in this text[/]", "", "")
    return table
