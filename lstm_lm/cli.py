"""The `lstm-lm` command: a thin Click layer over the library.

Each command parses its options, calls the library and renders what comes back: results to
stdout, progress and messages to stderr. Errors a user can fix are LMError -> one line,
exit 1; bad option values are usage errors, exit 2. Options that several commands share
are declared once, in OPTIONS, and attached with `@options(...)`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import math
import os
import signal
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
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

from lstm_lm import LMError, __version__, checkpoint
from lstm_lm.bench import bench as run_bench
from lstm_lm.bench import bench_literal
from lstm_lm.cells import CELL_TYPES
from lstm_lm.config import DTYPES, LEVELS, PRESETS, RESUMABLE, ModelConfig, Settings, resolve
from lstm_lm.data import DataSource, read_text
from lstm_lm.download import DEFAULT_DEST, MIRROR_ENV, fetch_ptb
from lstm_lm.export import export
from lstm_lm.gradcheck import TOLERANCE, check_gradients
from lstm_lm.losses import bits_per_char, perplexity
from lstm_lm.optim import OPTIMIZERS
from lstm_lm.sampling import DEFAULT_LENGTH, encode_seed, generate
from lstm_lm.score import LineScore, score_lines, split_lines
from lstm_lm.train import Run, default_out, evaluate, new_run, resume_run

Pos = click.IntRange(min=1)
Prob = click.FloatRange(0, 1, max_open=True)
Positive = click.FloatRange(min=0, min_open=True)


class Consoles:
    """Results to stdout; progress to stderr (silent with --quiet); errors and closing
    lines to stderr always. No wrapping: a line stays a line in a log file."""

    def __init__(self, quiet: bool = False):
        self.out = Console(highlight=False, soft_wrap=True)
        self.log = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)


def library_errors(fn):
    """One line and an honest exit code for what a user can cause: the library's LMError and
    exhausted memory (exit 1), output that cannot be written (a full disk: exit 1; a reader
    that went away, as with `| head`: silently), Ctrl-C (exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()
            return result
        except LMError as e:
            raise click.ClickException(str(e)) from None
        except MemoryError as e:
            raise click.ClickException(f"out of memory ({e}); use a smaller model") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            if e.filename is not None:  # not an output stream
                raise
            _silence_stdout()
            if e.errno == errno.EPIPE:
                sys.exit(1)
            raise click.ClickException(f"cannot write the output: {e.strerror}") from None

    return wrapper


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush of what is
    still buffered does not fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (as under CliRunner)
        pass


def usage_errors(fn, *args):
    """fn(*args), an LMError in it being a usage error (exit 2): options that do not go
    together or a value out of range."""
    try:
        return fn(*args)
    except LMError as e:
        raise click.UsageError(str(e)) from None


def given(name: str) -> bool:
    """Whether the user gave an option, rather than it taking its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT)


def refuse_together(first: str, second: str, why: str) -> None:
    """A usage error naming both options when the user gave both."""
    if given(first) and given(second):
        ctx = click.get_current_context()
        flag = {p.name: p.opts[0] for p in ctx.command.params}
        raise click.UsageError(f"{flag[first]} does not go with {flag[second]}: {why}")


def fmt_ppl(ppl: float) -> str:
    return f"{ppl:,.2f}" if ppl < 1e6 else f"{ppl:.3g}"


CKPT_HELP = ("CKPT is a checkpoint (.npz) or a run directory, which means its best.npz "
             "(or last.npz where there is no best.npz).")  # fmt: skip


def open_checkpoint(con: Consoles, ckpt: Path) -> checkpoint.Checkpoint:
    """Load CKPT, saying which file a run directory resolved to."""
    path = checkpoint.resolve_path(ckpt)
    if path != ckpt:
        con.log.print(f"using {path}")
    return checkpoint.load(path)


# --- options shared by train, bench and gradcheck ------------------------------------------

# fmt: off
OPTIONS = {
    "preset": dict(type=click.Choice(list(PRESETS)), help="Named configuration (default: small, "
                   "or char with --level char); explicit options override it."),
    "level": dict(type=click.Choice(LEVELS), help="Token level (default: word)."),
    "cell": dict(type=click.Choice(list(CELL_TYPES)), help="Recurrent cell."),
    "layers": dict(type=Pos, help="Recurrent layers."),
    "hidden": dict(type=Pos, help="Units per layer."),
    "dropout": dict(type=Prob, help="Dropout on the input of every layer above the first and "
                    "of the softmax."),
    "input_dropout": dict(type=Prob, help="Dropout on the one-hot token's rows of layer 0 "
                          "(an embedding's dropout)."),
    "init_scale": dict(type=Positive, help="Weights uniform in +-this."),
    "forget_bias": dict(type=float, help="Initial forget-gate bias."),
    "chrono": dict(type=click.IntRange(min=3),
                   help="JANET: chrono-initialise bf for dependencies up to T steps."),
    "batch_size": dict(type=Pos, help="Parallel streams (B)."),
    "bptt": dict(type=Pos, help="Steps per truncated-BPTT window (T)."),
    "epochs": dict(type=Pos),
    "lr": dict(type=Positive, help="Learning rate."),
    "lr_decay": dict(type=click.FloatRange(0, 1, min_open=True),
                     help="Factor per epoch after --decay-after."),
    "decay_after": dict(type=click.IntRange(min=0), help="Epochs at constant lr before decay."),
    "optimizer": dict(type=click.Choice(list(OPTIMIZERS))),
    "clip": dict(type=click.FloatRange(min=0), help="Max global gradient norm (0: off)."),
    "token_lr_scale": dict(type=Positive,
                           help="Learning-rate multiplier for the one-hot token rows (SGD)."),
    "seed": dict(type=click.IntRange(min=0), help="Random seed."),
    "dtype": dict(type=click.Choice(DTYPES)),
    "max_steps": dict(type=Pos, help="Stop at this optimisation step of the whole run."),
    "max_tokens": dict(type=Pos, help="Stop after this many training tokens of the whole run."),
    "eval_every": dict(type=Pos, help="Also evaluate on valid every N steps."),
    "save_every": dict(type=click.FloatRange(min=0), metavar="MINUTES", help="Also save "
                       "last.npz this often (it is saved at every evaluation; 0: only then)."),
}
# fmt: on
MODEL = (
    "cell",
    "layers",
    "hidden",
    "dropout",
    "input_dropout",
    "init_scale",
    "forget_bias",
    "chrono",
)
STEP = ("batch_size", "bptt", "optimizer", "lr", "clip", "token_lr_scale", "seed", "dtype")
SCHEDULE = (
    "epochs",
    "lr_decay",
    "decay_after",
    "max_steps",
    "max_tokens",
    "eval_every",
    "save_every",
)


def options(*names: str, shown: Settings | None = None, **defaults):
    """Attach the named shared options. Keyword arguments give this command's defaults;
    `shown`: settings whose values the help shows as the defaults (and where they come from)."""

    def attach(fn):
        for name in reversed(names):
            spec = dict(OPTIONS[name])
            if name in defaults:
                spec.update(default=defaults[name], show_default=True)
            elif shown is not None and shown.values().get(name) is not None:
                value, origin = shown.values()[name], shown.origins[name]
                where = f"{origin.split()[1]}: " if origin.startswith("preset") else "default "
                spec["help"] = (spec.get("help", "") + f" ({where}{value})").lstrip()
            fn = click.option("--" + name.replace("_", "-"), name, **spec)(fn)
        return fn

    return attach


def presets_epilog() -> str:
    """What each preset sets, for `train --help`."""
    lines = ["\b", "Presets (explicit options override what they set):"]
    for name, values in PRESETS.items():
        text = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
        lines += textwrap.wrap(f"{name}: {text}", 96, initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False)  # fmt: skip
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lstm-lm")
def main():
    """lstm-lm: a from-scratch NumPy LSTM language model (word and character level, PTB)."""


# --- download ----------------------------------------------------------------------------


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


@main.command()
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEST,
    show_default=True,
    help="Directory to put the PTB files in.",
)
@click.option(
    "--mirror",
    envvar=MIRROR_ENV,
    help="Local directory, file:// or http(s):// URL "
    f"holding the three files (env {MIRROR_ENV}). Default: the canonical GitHub URLs.",
)
@library_errors
def download(dest, mirror):
    """Fetch the Penn TreeBank and verify its checksums."""
    con = Consoles()
    with FetchView(con.err) as fetch:
        fetch_ptb(dest, mirror, **fetch.hooks)
    con.err.print(f"[green]PTB ready in {dest} (checksums verified)[/]")


# --- train -------------------------------------------------------------------------------


class TrainView:
    """Renders training events: one progress bar for the whole run, a line per evaluation, a
    sample at each epoch end, and the summary at the end."""

    def __init__(self, con: Consoles, run: Run, as_json: bool):
        self.con, self.run, self.as_json = con, run, as_json
        self.rng = np.random.default_rng(run.config.seed + 1)  # for the epoch-end samples
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                            console=con.log, transient=True)  # fmt: skip
        self.task, self.reason = None, ""

    def __call__(self, ev):
        getattr(self, f"on_{ev.kind}", lambda ev: None)(ev)

    def on_step(self, ev):
        st = ev.state
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=ev.total, completed=st.step - 1, info="")
        info = (f"loss {ev.loss:.3f}  ppl {fmt_ppl(perplexity(ev.loss))}  lr {ev.lr:.3g}  "
                f"{st.tokens / max(st.elapsed, 1e-9):,.0f} tok/s")  # fmt: skip
        epoch = f"epoch {st.epoch}/{self.run.config.epochs}"
        self.bar.update(self.task, completed=st.step, total=ev.total, description=epoch, info=info)

    def on_eval(self, ev):
        m = ev.metrics
        if self.as_json:
            self.con.out.print(json.dumps(m))
        bpc = f"  valid bpc {m['valid_bpc']:.3f}" if "valid_bpc" in m else ""
        self.con.log.print(
            f"epoch {m['epoch']:.2f}  step {m['step']:,}  train ppl {fmt_ppl(m['train_ppl'])}  "
            f"valid ppl {fmt_ppl(m['valid_ppl'])}{bpc}  lr {m['lr']:.3g}  "
            f"{m['tokens_per_s']:,.0f} tok/s  {m['elapsed'] / 60:.1f} min"
        )

    def on_epoch_end(self, ev):
        vocab = self.run.corpus.vocab
        seed, _ = encode_seed(vocab, None)
        ids = generate(self.run.model, seed, DEFAULT_LENGTH[vocab.level], self.rng)
        self.con.log.print(f"[dim]sample: {vocab.decode(list(ids)).strip()}[/]")

    def on_end(self, ev):
        self.stop_bar()
        self.reason, st = ev.reason, ev.state
        if st.history:
            self.con.log.print(summary_table(st.history, st.best_valid))
        bpc = bits_per_char(st.best_valid, self.run.corpus.vocab.level) if st.history else None
        self.con.err.print(
            f"{'stopped' if self.reason == 'interrupted' else 'done'}: step {st.step:,}, "
            f"best valid ppl {fmt_ppl(perplexity(st.best_valid)) if st.history else '-'}"
            + (f" ({bpc:.3f} bpc)" if bpc is not None else "")
            + f", {st.elapsed / 60:.1f} min; checkpoints in {self.run.out}"
        )

    def stop_bar(self):
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()
            self.task = None


def summary_table(history: list[dict], best_valid: float) -> Table:
    """A row per evaluation; the best (the one in best.npz) marked."""
    char = all("valid_bpc" in m for m in history)
    table = Table(title="training summary", caption="* best.npz")
    for col in ("", "epoch", "step", "train ppl", "valid ppl", *["valid bpc"] * char, "tok/s"):
        table.add_column(col, justify="right")
    for m in history:
        best = "*" if m["valid_loss"] == best_valid else ""
        bpc = [f"{m['valid_bpc']:.3f}"] if char else []
        table.add_row(best, f"{m['epoch']:.2f}", f"{m['step']:,}", fmt_ppl(m["train_ppl"]),
                      fmt_ppl(m["valid_ppl"]), *bpc, f"{m['tokens_per_s']:,.0f}",
                      style="bold" if best else None)  # fmt: skip
    return table


@contextlib.contextmanager
def stop_on_signal(con: Consoles):
    """Yields `asked()`: the first Ctrl-C (or SIGTERM) asks training to stop after the
    current step and save; a second one aborts."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        con.err.print(
            "[yellow]stopping after this step and saving (Ctrl-C again to abort without saving)[/]"
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def data_source(level, data, train, valid, test, max_vocab, min_count) -> DataSource:
    """The data options as a DataSource: PTB (fetched into dataset/ptb) unless given."""
    ptb_dir = DEFAULT_DEST if data is None and train is None else None
    return usage_errors(DataSource, level, ptb_dir, data, train, valid, test, max_vocab,
                        min_count or 1)  # fmt: skip


def resume_changes(opts: dict) -> dict:
    """The options a resumed run may change; a usage error naming any other that was given."""
    others = sorted("--" + k.replace("_", "-") for k, v in opts.items()
                    if v is not None and k not in RESUMABLE)  # fmt: skip
    if others:
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise click.UsageError(
            f"--resume continues the saved configuration and data; only {allowed} may change "
            f"(got {', '.join(others)})"
        )
    return {k: v for k, v in opts.items() if v is not None}


DATA_OPTIONS = ("data", "train", "valid", "test", "max_vocab", "min_count")


def new_settings(opts: dict) -> tuple[Settings, DataSource, str | None]:
    """The train command's options resolved: settings, data source and the preset named."""
    where = {k: opts.pop(k) for k in DATA_OPTIONS}
    preset = opts.pop("preset")
    settings = usage_errors(resolve, preset, opts)
    return settings, data_source(settings.level, **where), preset


def plan_table(opts: dict, out: Path | None, resume: Path | None) -> Table:
    """Every setting of the run that train would start, and where its value comes from."""
    table = Table(title="lstm-lm train --dry-run: nothing was loaded or written")
    for col in ("setting", "value", "from"):
        table.add_column(col)
    out_origin = "option" if out is not None else "default"
    if resume is None:
        settings, source, preset = new_settings(opts)
        values, origins = settings.values(), settings.origins
        out = out or default_out(source, preset)
    else:
        changes = resume_changes(opts)
        path = checkpoint.newest(resume) if resume.is_dir() else resume
        c = checkpoint.load(path)
        model = {k: v for k, v in asdict(c.model.config).items() if k != "vocab_size"}
        values = {"level": c.vocab.level, **model, **asdict(c.train_config), **changes}
        origins = {k: "option" if k in changes else f"the run ({path})" for k in values}
        source, out = DataSource.from_json(c.meta["data"]), out or path.parent
    for k, v in values.items():
        table.add_row(k.replace("_", "-"), str(v), origins[k])
    where = source.ptb_dir and f"PTB in {source.ptb_dir}" or source.data_dir or source.train
    table.add_row("data", str(where), "option" if source.ptb_dir is None else "default")
    table.add_row("out", str(out), out_origin)
    return table


def describe(run: Run) -> str:
    c, tc = run.model.config, run.config
    return (
        f"{c.cell} {c.layers} x {c.hidden}, vocab {c.vocab_size:,}, "
        f"{run.model.num_params():,} parameters; {len(run.corpus.train):,} training tokens; "
        f"batch {tc.batch_size} x bptt {tc.bptt}, {tc.optimizer} lr {tc.lr:g}, "
        f"dropout {c.dropout:g}"
        + (f", input dropout {c.input_dropout:g}" if c.input_dropout else "")
        + f" -> {run.out}"
    )


def start(con: Consoles, opts: dict, out: Path | None, resume: Path | None) -> Run:
    """The run to train: resumed, or new from the options (data fetched and loaded)."""
    with FetchView(con.log) as fetch:
        if resume is not None:
            run = resume_run(resume, resume_changes(opts), out, **fetch.hooks)
            st = run.resume.train_state
            con.log.print(f"resuming {run.out} at step {st['step']:,} (epoch {st['epoch']})")
        else:
            settings, source, preset = new_settings(opts)
            run = new_run(settings, source, out, name=preset, **fetch.hooks)
    for note in run.corpus.notes:
        con.log.print(f"[yellow]{note}[/]")
    return run


@main.command(epilog=presets_epilog())
@options("preset", "level")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Directory with train.txt, "
    "valid.txt, test.txt (or ptb.*.txt). Default: PTB, downloaded on first use.",
)
@click.option("--train", type=click.Path(path_type=Path), help="Training text file (-: stdin).")
@click.option(
    "--valid",
    type=click.Path(path_type=Path),
    help="Validation text file (default: the last 10%% of --train).",
)
@click.option("--test", type=click.Path(path_type=Path), help="Test text file.")
@click.option("--max-vocab", type=Pos, help="Keep the N most frequent types, <unk> for the rest.")
@click.option("--min-count", type=Pos, show_default="1", help="Drop types seen fewer times.")
@options(*MODEL, *STEP, *SCHEDULE, shown=resolve())
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (default: runs/<name>).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue a run: its directory (its newest checkpoint) or a checkpoint.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print every setting and where it comes from, then exit."
)
@click.option("--quiet", is_flag=True, help="Print only errors and the final line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per evaluation on stdout.")
@library_errors
def train(out, resume, dry_run, quiet, as_json, **opts):
    """Train a language model (PTB word level by default). The defaults shown are the small
    preset's, the one used without --preset (char with --level char)."""
    con = Consoles(quiet)
    if dry_run:
        con.out.print(plan_table(opts, out, resume))
        return
    run = start(con, opts, out, resume)
    con.log.print(describe(run))
    view = TrainView(con, run, as_json)
    with stop_on_signal(con) as asked:
        try:
            run.fit(on_event=view, should_stop=asked)
        except KeyboardInterrupt:
            view.stop_bar()
            con.err.print(f"aborted; {run.out} holds what was saved last: "
                          f"lstm-lm train --resume {run.out}")  # fmt: skip
            sys.exit(130)
        finally:
            view.stop_bar()
    if view.reason == "interrupted":
        con.err.print(f"resume with: lstm-lm train --resume {run.out}")
        sys.exit(130)


# --- eval --------------------------------------------------------------------------------


def warn_unknown(con: Consoles, vocab, unknown: list[str]) -> None:
    if unknown:
        what = "words map to <unk>" if "<unk>" in vocab.stoi else "tokens are skipped"
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        con.err.print(f"[yellow]warning: {len(unknown)} unknown {what}: {shown}[/]")


@main.command("eval", epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option(
    "--file",
    "text_file",
    type=click.Path(path_type=Path),
    help="Evaluate on this text file instead of a split (-: stdin).",
)
@click.option(
    "--batch-size", type=Pos, default=1, show_default=True, help="Streams (1: exact, >1: faster)."
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"split", "tokens", "nll", "ppl", "bpc"}.'
)
@library_errors
def eval_cmd(ckpt, split, text_file, batch_size, as_json):
    """Perplexity (and bits per character) of a checkpoint on a split or a file."""
    con = Consoles()
    refuse_together("split", "text_file", "--file evaluates that file instead of a split")
    c = open_checkpoint(con, ckpt)
    if text_file is not None:
        ids, unknown = c.vocab.encode(read_text(text_file))
        warn_unknown(con, c.vocab, unknown)
        name = str(text_file)
    else:
        with FetchView(con.log) as fetch:
            ids, name = getattr(c.load_corpus(**fetch.hooks), split), split
        if ids is None:
            raise LMError(f"the run's data has no {split} split; use --split valid or --file FILE")
    if len(ids) // batch_size < 2:
        raise LMError(f"{name}: too few tokens ({len(ids)}) for batch size {batch_size}")
    nll, n = evaluate(c.model, ids, batch_size, c.train_config.bptt)
    bpc = bits_per_char(nll / n, c.vocab.level)
    result = {"split": name, "tokens": n, "nll": nll / n, "ppl": perplexity(nll / n), "bpc": bpc}
    if as_json:
        con.out.print(json.dumps(result))
        return
    table = Table(title=str(checkpoint.resolve_path(ckpt)))
    row = {"split": name, "tokens": f"{n:,}", "nll (nats/token)": f"{result['nll']:.4f}",
           "perplexity": fmt_ppl(result["ppl"])}  # fmt: skip
    if bpc is not None:
        row["bits/char"] = f"{bpc:.4f}"
    for col in row:
        table.add_column(col, justify="right")
    table.add_row(*row.values())
    con.out.print(table)


# --- sample ------------------------------------------------------------------------------


@main.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option("--seed-text", help="Text to prime the model with.")
@click.option(
    "--seed-file",
    type=click.Path(path_type=Path),
    help="Prime with the contents of a file (-: stdin).",
)
@click.option(
    "--length",
    type=Pos,
    help=f"Tokens to generate (default: "
    f"{DEFAULT_LENGTH['char']} chars or {DEFAULT_LENGTH['word']} words).",
)
@click.option("--temperature", type=Positive, default=1.0, show_default=True)
@click.option("--top-k", type=Pos, help="Draw from the K most likely tokens only.")
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    help="Draw from the smallest set of most likely tokens whose probability reaches P (nucleus).",
)
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--num", type=Pos, default=1, show_default=True, help="Number of samples.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed, for a reproducible sample.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the samples to this file (with their separators) instead of stdout.",
)
@library_errors
def sample(ckpt, seed_text, seed_file, length, temperature, top_k, top_p, greedy, num, seed, out):
    """Prime with text, then generate."""
    con = Consoles()
    refuse_together("seed_text", "seed_file", "give the seed one way")
    for option in ("top_k", "top_p", "temperature"):
        refuse_together("greedy", option, "--greedy always takes the most likely token")
    if seed_text is not None and not seed_text.strip():
        raise click.BadParameter("the seed text is empty", param_hint="--seed-text")
    c = open_checkpoint(con, ckpt)
    text = read_text(seed_file) if seed_file is not None else seed_text or ""
    seed_ids, unknown = encode_seed(c.vocab, text or None)
    warn_unknown(con, c.vocab, unknown)
    rng = np.random.default_rng(seed)
    samples = []  # with --out: written at the end, whole
    for k in range(num):
        header = [f"--- sample {k + 1}\n"] if num > 1 else []
        ids = generate(c.model, seed_ids, length or DEFAULT_LENGTH[c.vocab.level], rng,
                       temperature, top_k, greedy, top_p)  # fmt: skip
        pieces = c.vocab.pieces(ids, line_start=not text or text.endswith("\n"))
        if out:
            samples += [*header, text, *pieces, "\n"]
            continue
        for line in header:
            con.log.print(f"[dim]{line.strip()}[/]")
        for piece in itertools.chain([text], pieces, ["\n"]):  # as it is generated
            sys.stdout.write(piece)
            sys.stdout.flush()
    if out:
        checkpoint.write_atomic(out, "".join(samples).encode(), fix="choose another --out")
        con.log.print(f"wrote {num} sample{'s' * (num > 1)} to {out}")


# --- score and export ---------------------------------------------------------------------


def score_line(s: LineScore, log10: bool, as_json: bool, per_token: bool) -> str:
    """One output line: tab-separated log-probability, tokens, perplexity, text (then the
    token log-probabilities), or a JSON object."""
    base = math.log(10) if log10 else 1.0
    if as_json:
        obj = {"line": s.text, "tokens": s.tokens, "logprob": s.logprob / base, "ppl": s.ppl,
               "unknown": s.unknown}  # fmt: skip
        if per_token:
            obj["token_logprobs"] = (s.token_logprobs / base).tolist()
        return json.dumps(obj)
    fields = [f"{s.logprob / base:.6f}", str(s.tokens), f"{s.ppl:.4f}", s.text]
    if per_token:
        fields.append(" ".join(f"{lp:.6f}" for lp in s.token_logprobs / base))
    return "\t".join(fields)


@main.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--log10", is_flag=True, help="Base-10 log-probabilities (as rescoring takes them).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line: {"line", "tokens", "logprob", "ppl", "unknown"}.',
)
@click.option("--per-token", is_flag=True, help="Add each token's log-probability.")
@click.option(
    "--batch-size",
    type=Pos,
    default=64,
    show_default=True,
    help="Lines scored together (of similar lengths).",
)
@library_errors
def score(ckpt, file, log10, as_json, per_token, batch_size):
    """Score each line of FILE (-: stdin) as a sentence: one output line per input line, in
    order, with its log-probability (natural log), tokens scored (its closing <eos>
    included), perplexity and text, tab-separated. A summary goes to stderr."""
    con = Consoles()
    c = open_checkpoint(con, ckpt)
    lines = split_lines(read_text(file))
    scores = score_lines(c.model, c.vocab, lines, batch_size, c.train_config.bptt)
    for s in scores:  # plain writes: a line of text is not markup
        sys.stdout.write(score_line(s, log10, as_json, per_token) + "\n")
    tokens = sum(s.tokens for s in scores)
    unknown = sorted({u for s in scores for u in s.unknown})
    con.log.print(f"{len(scores):,} lines, {tokens:,} tokens, perplexity "
                  f"{fmt_ppl(perplexity(-sum(s.logprob for s in scores) / tokens))}"
                  + (f"; {len(unknown):,} unknown types" if unknown else ""))  # fmt: skip


@main.command("export", epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@library_errors
def export_cmd(ckpt, out):
    """Write the model of CKPT to OUT.safetensors for other frameworks: the parameters by
    their contract names, the configuration and vocabulary in the metadata. eval, sample,
    score and info read such a file too. Needs the export extra (pip install "lstm-lm[export]")."""
    con = Consoles()
    if out.suffix != ".safetensors":
        raise click.BadParameter(f"{out} does not end in .safetensors", param_hint="OUT")
    c = open_checkpoint(con, ckpt)
    export(c, out)
    con.log.print(f"wrote {out}: {c.model.num_params():,} parameters, {len(c.vocab):,} types")


# --- info --------------------------------------------------------------------------------


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
            f"{m.cell} {m.layers} x {m.hidden}, dropout {m.dropout:g}"
            + (f", input dropout {m.input_dropout:g}" if m.input_dropout else "")
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
            f"(x{tc.lr_decay:g} per epoch after {tc.decay_after}), clip {tc.clip:g}, "
            f"seed {tc.seed}"
            + (f", token rows lr x{tc.token_lr_scale:g}" if tc.token_lr_scale != 1 else ""),
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


@main.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@library_errors
def info(ckpt):
    """Configuration, size, progress and learning curve of a checkpoint."""
    con = Consoles()
    c = open_checkpoint(con, ckpt)
    table = Table(title=str(checkpoint.resolve_path(ckpt)), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in info_rows(c):
        table.add_row(k, str(v))
    con.out.print(table)
    if c.train_state.get("history"):
        con.out.print("learning curve: valid perplexity at each evaluation")
        con.out.print(learning_curve(c.train_state["history"]))


# --- gradcheck and bench -------------------------------------------------------------------


@main.command()
@options(
    "cell",
    "layers",
    "hidden",
    "bptt",
    "dropout",
    "input_dropout",
    "seed",
    cell="lstm",
    layers=2,
    hidden=6,
    bptt=5,
    dropout=0.0,
    input_dropout=0.0,
    seed=0,
)
@click.option("--vocab", "vocab_size", type=click.IntRange(min=2), default=11, show_default=True)
@library_errors
def gradcheck(cell, layers, hidden, bptt, dropout, input_dropout, seed, vocab_size):
    """Check the hand-written backward against numerical gradients (float64)."""
    con = Consoles()
    config = usage_errors(ModelConfig, vocab_size, hidden, layers, cell, dropout, input_dropout)
    errors = check_gradients(config, bptt=bptt, seed=seed)
    table = Table(
        title=f"gradient check: {cell} {layers} x {hidden}, T {bptt}, V {vocab_size}, "
        f"dropout {dropout:g}" + (f", input dropout {input_dropout:g}" if input_dropout else "")
    )
    table.add_column("array")
    table.add_column("max relative error", justify="right")
    table.add_column("")
    for name, err in errors.items():
        table.add_row(name, f"{err:.2e}", "[green]ok[/]" if err < TOLERANCE else "[red]FAIL[/]")
    con.out.print(table)
    worst = max(errors.values())
    if worst >= TOLERANCE:
        con.err.print(
            f"[red]gradient check failed: largest relative error {worst:.2e} >= {TOLERANCE:g}[/]"
        )
        sys.exit(1)
    con.err.print(f"[green]all {len(errors)} arrays within {TOLERANCE:g} (largest {worst:.2e})[/]")


@main.command()
@options("preset", "level", *MODEL, *STEP)
@click.option(
    "--vocab",
    "vocab_size",
    type=click.IntRange(min=2),
    help="Vocabulary size (default: 10,000 words, 50 at char level).",
)
@click.option("--repeats", type=Pos, default=10, show_default=True)
@click.option(
    "--literal", is_flag=True, help="Also time the literal per-token batch-1 formulation (slow)."
)
@click.option("--json", "as_json", is_flag=True)
@library_errors
def bench(vocab_size, repeats, literal, as_json, **settings):
    """Training and evaluation tokens/s of a configuration (default: the small preset, 2 x 200,
    B 20, T 20) on synthetic tokens."""
    con = Consoles()
    resolved = usage_errors(resolve, settings.pop("preset"), settings)
    config = resolved.model_config(vocab_size or (50 if resolved.level == "char" else 10_000))
    tc = resolved.train
    con.log.print(
        f"timing {config.cell} {config.layers} x {config.hidden}, "
        f"V {config.vocab_size:,}, B {tc.batch_size}, T {tc.bptt} ..."
    )
    results = [run_bench(config, tc, repeats=repeats)]
    if literal:
        con.log.print("timing the literal formulation ...")
        results.append(
            bench_literal(ModelConfig(config.vocab_size, config.hidden, config.layers), tc.bptt)
        )
    if as_json:
        con.out.print(json.dumps(results if literal else results[0]))
        return
    table = Table(title="lstm-lm bench (median of timed steps)")
    for col in ("formulation", "model", "B x T", "params", "train tok/s", "eval tok/s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["cell"],
            f"{r['layers']} x {r['hidden']}, V {r['vocab']:,}",
            f"{r['batch_size']} x {r['bptt']}",
            f"{r['params']:,}",
            f"{r['train_tokens_per_s']:,.0f}",
            f"{r['eval_tokens_per_s']:,.0f}" if r["eval_tokens_per_s"] else "-",
        )
    con.out.print(table)
