"""The `lstm-lm` command: a thin Click layer over the library.

Results go to stdout, progress and messages to stderr. Errors a user can fix are
LMError -> one line, exit 1; bad option values are usage errors, exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
from pathlib import Path

import click
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

from lstm_lm import LMError, __version__, checkpoint
from lstm_lm.bench import bench as run_bench
from lstm_lm.bench import bench_literal
from lstm_lm.config import CELLS, DTYPES, OPTIMIZERS, PRESETS, ModelConfig, TrainConfig, resolve
from lstm_lm.data import EOS, Corpus, load_corpus, read_text
from lstm_lm.download import DEFAULT_DEST, MIRROR_ENV, fetch_ptb
from lstm_lm.gradcheck import TOLERANCE, check_gradients
from lstm_lm.model import LanguageModel
from lstm_lm.sampling import generate
from lstm_lm.train import evaluate, fit

LN2 = math.log(2)
Pos = click.IntRange(min=1)


class Ctx:
    """The consoles: results to stdout, everything else to stderr."""

    def __init__(self, quiet: bool = False):
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet)


def run_library(fn):
    """Turn the library's LMError into a one-line ClickException (exit 1)."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LMError as e:
            raise click.ClickException(str(e)) from None

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lstm-lm")
def main():
    """lstm-lm: a from-scratch NumPy LSTM language model (word and character level, PTB)."""


# --- download ----------------------------------------------------------------------------


def ensure_ptb(ctx: Ctx, dest: Path = DEFAULT_DEST, mirror: str | None = None) -> Path:
    """Fetch PTB into dest unless it is already there and verified, with a progress bar."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=ctx.err,
        transient=True,
    )
    tasks = {}

    def progress(name, done, total):
        if not tasks:
            bar.start()  # only once something is fetched: nothing to draw otherwise
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done)

    try:
        return fetch_ptb(dest, mirror, log=lambda m: ctx.err.print(m), progress=progress)
    finally:
        if tasks:
            bar.stop()


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
    help=f"Local directory, file:// or http(s):// URL holding "
    f"the three files (env {MIRROR_ENV}). Default: the canonical GitHub URLs.",
)
@run_library
def download(dest, mirror):
    """Fetch the Penn TreeBank and verify its checksums."""
    ctx = Ctx()
    ensure_ptb(ctx, dest, mirror)
    ctx.err.print(f"[green]PTB ready in {dest}[/]")


# --- data for train / eval ---------------------------------------------------------------


def load_data(ctx: Ctx, source: dict) -> Corpus:
    """The corpus a data-source record (as saved in checkpoints) describes."""
    if source["kind"] == "ptb":
        ptb_dir = ensure_ptb(ctx, Path(source["dir"]))
        return load_corpus(source["level"], data_dir=ptb_dir)
    return load_corpus(
        source["level"],
        data_dir=source.get("data"),
        train=source.get("train"),
        valid=source.get("valid"),
        test=source.get("test"),
        ptb=source.get("ptb"),
        max_vocab=source.get("max_vocab"),
        min_count=source.get("min_count", 1),
    )


def data_source(level, data, train, valid, test, max_vocab, min_count) -> dict:
    absolute = lambda p: str(Path(p).resolve()) if p is not None else None  # noqa: E731
    if data is None and train is None:
        return {"kind": "ptb", "level": level, "dir": str(DEFAULT_DEST.resolve())}
    if data is not None and train is not None:
        raise click.UsageError("give either --data DIR or --train FILE, not both")
    if train is None and (valid is not None or test is not None):
        raise click.UsageError("--valid/--test need --train")
    return {
        "kind": "files",
        "level": level,
        "data": absolute(data),
        "train": absolute(train),
        "valid": absolute(valid),
        "test": absolute(test),
        "max_vocab": max_vocab,
        "min_count": min_count,
    }


# --- train -------------------------------------------------------------------------------


class TrainView:
    """Renders training events: a progress bar per epoch, a line per evaluation, samples."""

    def __init__(
        self, ctx: Ctx, model: LanguageModel, vocab, tc: TrainConfig, as_json: bool, sample_rng
    ):
        self.ctx, self.model, self.vocab, self.tc = ctx, model, vocab, tc
        self.as_json, self.rng = as_json, sample_rng
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=ctx.err,
            transient=True,
        )
        self.task = None

    def __call__(self, ev):
        st = ev.state
        if ev.kind == "step":
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task(
                    f"epoch {st.epoch}/{self.tc.epochs}",
                    total=ev.windows,
                    completed=st.window - 1,
                    info="",
                )
            info = (
                f"loss {ev.loss:.3f}  ppl {math.exp(min(ev.loss, 50)):,.1f}  lr {ev.lr:.3g}  "
                f"{st.tokens / max(st.elapsed, 1e-9):,.0f} tok/s"
            )
            self.bar.update(self.task, completed=st.window, info=info)
        elif ev.kind == "eval":
            m = ev.metrics
            if self.as_json:
                self.ctx.out.print(json.dumps(m))
            bpc = f"  valid bpc {m['valid_bpc']:.3f}" if "valid_bpc" in m else ""
            self.ctx.err.print(
                f"epoch {m['epoch']:.2f}  step {m['step']:,}  train ppl {m['train_ppl']:,.2f}  "
                f"valid ppl {m['valid_ppl']:,.2f}{bpc}  lr {m['lr']:.3g}  "
                f"{m['tokens_per_s']:,.0f} tok/s  {m['elapsed'] / 60:.1f} min"
            )
        elif ev.kind == "epoch_end":
            self.stop_bar()
            seed = np.array([self.vocab.stoi.get(EOS, 0)])
            n = 200 if self.vocab.level == "char" else 30
            text = self.vocab.decode(list(generate(self.model, seed, n, self.rng)))
            self.ctx.err.print(f"[dim]sample: {text.strip()}[/]")
        elif ev.kind == "end":
            self.stop_bar()

    def stop_bar(self):
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()
            self.task = None


def _default_out(name: str) -> Path:
    out, n = Path("runs") / name, 2
    while out.exists() and any(out.iterdir()):
        out, n = Path("runs") / f"{name}-{n}", n + 1
    return out


@main.command()
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    help="Named configuration (default: small, or "
    "char with --level char); explicit options override it.",
)
@click.option("--level", type=click.Choice(["word", "char"]), help="Token level (default: word).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Directory with train.txt, valid.txt, test.txt "
    "(or ptb.*.txt). Default: PTB, downloaded on first use.",
)
@click.option("--train", "train_file", type=click.Path(path_type=Path), help="Training text file.")
@click.option(
    "--valid",
    "valid_file",
    type=click.Path(path_type=Path),
    help="Validation text file (default: the last 10%% of --train).",
)
@click.option("--test", "test_file", type=click.Path(path_type=Path), help="Test text file.")
@click.option("--max-vocab", type=Pos, help="Keep the N most frequent types, <unk> for the rest.")
@click.option(
    "--min-count", type=Pos, default=1, show_default=True, help="Drop types seen fewer times."
)
@click.option("--cell", type=click.Choice(CELLS), help="Recurrent cell (default: lstm).")
@click.option("--layers", type=Pos)
@click.option("--hidden", type=Pos)
@click.option("--batch-size", type=Pos)
@click.option("--bptt", type=Pos, help="Steps per truncated-BPTT window.")
@click.option("--epochs", type=Pos)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True))
@click.option(
    "--lr-decay",
    type=click.FloatRange(0, 1, min_open=True),
    help="Factor per epoch after --decay-after.",
)
@click.option(
    "--decay-after", type=click.IntRange(min=0), help="Epochs at constant lr before decay."
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS))
@click.option("--clip", type=click.FloatRange(min=0), help="Max global gradient norm (0: off).")
@click.option(
    "--token-lr-scale",
    type=click.FloatRange(min=0, min_open=True),
    help="Learning-rate multiplier for the one-hot token rows (SGD).",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    help="Dropout on the input of every layer above the first and of the softmax.",
)
@click.option(
    "--input-dropout",
    type=click.FloatRange(0, 1, max_open=True),
    help="Dropout on the one-hot token's rows of layer 0 (an embedding's dropout).",
)
@click.option("--init-scale", type=click.FloatRange(min=0, min_open=True))
@click.option("--forget-bias", type=float)
@click.option(
    "--chrono",
    type=click.IntRange(min=3),
    help="JANET: chrono-initialise bf for dependencies up to T steps.",
)
@click.option("--seed", type=int)
@click.option("--dtype", type=click.Choice(DTYPES))
@click.option("--max-steps", type=Pos, help="Stop at this optimisation step of the whole run.")
@click.option(
    "--max-tokens", type=Pos, help="Stop after this many training tokens of the whole run."
)
@click.option("--eval-every", type=Pos, help="Also evaluate on valid every N steps.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (default: runs/<name>).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue a run: its directory or a checkpoint.",
)
@click.option("--quiet", is_flag=True, help="Print only errors and the final line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per evaluation on stdout.")
@run_library
def train(
    preset,
    level,
    data,
    train_file,
    valid_file,
    test_file,
    max_vocab,
    min_count,
    out,
    resume,
    quiet,
    as_json,
    **options,
):
    """Train a language model (PTB word level by default)."""
    ctx = Ctx(quiet)
    if resume is not None:
        ckpt = checkpoint.load(resume, in_dir="last.npz")
        given = {k: v for k, v in options.items() if v is not None}
        fixed = set(given) - {"epochs", "max_steps", "max_tokens", "eval_every"}
        if fixed or preset or level:
            got = ", ".join(sorted(fixed)) or preset or level
            raise click.UsageError(
                "--resume continues the saved configuration; only --epochs, --max-steps, "
                f"--max-tokens, --eval-every may change (got {got})"
            )
        tc = dataclasses.replace(ckpt.train_config, **given)
        source = ckpt.meta["data"]
        corpus = load_data(ctx, source)
        if corpus.vocab != ckpt.vocab:
            raise LMError(
                f"the vocabulary of the data ({len(corpus.vocab)} types) does not match the checkpoint's "
                f"({len(ckpt.vocab)}); resume with the data the run was trained on"
            )
        model, rng = ckpt.model, np.random.default_rng()
        out = out or checkpoint.resolve_path(resume, "last.npz").parent
        ctx.err.print(
            f"resuming {out} at step {ckpt.train_state['step']:,} (epoch {ckpt.train_state['epoch']})"
        )
    else:
        model_opts, train_opts = resolve(
            preset or ("char" if level == "char" else "small"), {**options, "level": level}
        )
        level = train_opts.get("level", "word")
        source = data_source(level, data, train_file, valid_file, test_file, max_vocab, min_count)
        tc = TrainConfig(**train_opts)
        ModelConfig(vocab_size=2, **model_opts)  # check the model options before loading any data
        corpus = load_data(ctx, source)
        for note in corpus.notes:
            ctx.err.print(f"[yellow]{note}[/]")
        rng = np.random.default_rng(tc.seed)
        model = LanguageModel.init(
            ModelConfig(vocab_size=len(corpus.vocab), **model_opts), rng, tc.dtype
        )
        name = preset or ("ptb" if source["kind"] == "ptb" else corpus.name)
        out = out or _default_out(f"{name}-{level}" if level == "char" and name != "char" else name)
        if (out / "last.npz").exists() or (out / "best.npz").exists():
            raise LMError(
                f"{out} already holds a run; continue it with --resume {out}, or choose another --out"
            )
        ckpt = None
    c = model.config
    ctx.err.print(
        f"{c.cell} {c.layers} x {c.hidden}, vocab {c.vocab_size:,}, {model.num_params():,} parameters; "
        f"{len(corpus.train):,} training tokens; batch {tc.batch_size} x bptt {tc.bptt}, "
        f"{tc.optimizer} lr {tc.lr:g}, dropout {c.dropout:g}"
        + (f", input dropout {c.input_dropout:g}" if c.input_dropout else "")
        + f" -> {out}"
    )

    stop = {"asked": False}

    def on_signal(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        ctx.err.print(
            "[yellow]stopping after this step and saving (Ctrl-C again to abort without saving)[/]"
        )

    view = TrainView(ctx, model, corpus.vocab, tc, as_json, np.random.default_rng(tc.seed + 1))
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        st = fit(
            model,
            corpus,
            tc,
            run_dir=out,
            data_source=source,
            resume=ckpt,
            rng=rng,
            on_event=view,
            should_stop=lambda: stop["asked"],
        )
    finally:
        view.stop_bar()
        for s, h in old.items():
            signal.signal(s, h)
    best = math.exp(st.best_valid) if math.isfinite(st.best_valid) else float("nan")
    if not quiet and st.history:
        table = Table(title="training summary")
        for col in ("epoch", "step", "train ppl", "valid ppl", "tok/s"):
            table.add_column(col, justify="right")
        for m in st.history:
            table.add_row(
                f"{m['epoch']:.2f}",
                f"{m['step']:,}",
                f"{m['train_ppl']:,.2f}",
                f"{m['valid_ppl']:,.2f}",
                f"{m['tokens_per_s']:,.0f}",
            )
        ctx.err.print(table)
    bpc = f" ({st.best_valid / LN2:.3f} bpc)" if corpus.vocab.level == "char" else ""
    Console(stderr=True, highlight=False).print(
        f"{'stopped' if stop['asked'] else 'done'}: step {st.step:,}, best valid ppl {best:,.2f}{bpc}, "
        f"{st.elapsed / 60:.1f} min; checkpoints in {out}"
    )
    if stop["asked"]:
        Console(stderr=True, highlight=False).print(f"resume with: lstm-lm train --resume {out}")
        sys.exit(130)


# --- eval --------------------------------------------------------------------------------


@main.command("eval")
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option(
    "--file",
    "text_file",
    type=click.Path(path_type=Path),
    help="Evaluate on this text file instead.",
)
@click.option(
    "--batch-size", type=Pos, default=1, show_default=True, help="Streams (1: exact, >1: faster)."
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"split", "tokens", "nll", "ppl", "bpc"}.'
)
@run_library
def eval_cmd(ckpt, split, text_file, batch_size, as_json):
    """Perplexity (and bits per character) of a checkpoint on a split or a file."""
    ctx = Ctx()
    c = checkpoint.load(ckpt)
    if text_file is not None:
        ids, unknown = c.vocab.encode(read_text(text_file))
        warn_unknown(ctx, c.vocab, unknown)
        name = str(text_file)
    else:
        corpus = load_data(ctx, c.meta["data"])
        if corpus.vocab != c.vocab:
            raise LMError(
                "the vocabulary of the data does not match the checkpoint's; evaluate with --file"
            )
        ids = getattr(corpus, split)
        if ids is None:
            raise LMError(f"the run's data has no {split} split; use --split valid or --file FILE")
        name = split
    if len(ids) // batch_size < 2:
        raise LMError(f"{name}: too few tokens ({len(ids)}) for batch size {batch_size}")
    nll, n = evaluate(c.model, ids, batch_size, c.train_config.bptt)
    result = {
        "split": name,
        "tokens": n,
        "nll": nll / n,
        "ppl": math.exp(nll / n),
        "bpc": nll / n / LN2 if c.vocab.level == "char" else None,
    }
    if as_json:
        ctx.out.print(json.dumps(result))
        return
    table = Table(title=f"{ckpt}")
    for col in ("split", "tokens", "nll (nats/token)", "perplexity") + (
        ("bits/char",) if result["bpc"] else ()
    ):
        table.add_column(col, justify="right")
    table.add_row(
        name,
        f"{n:,}",
        f"{result['nll']:.4f}",
        f"{result['ppl']:,.2f}",
        *([f"{result['bpc']:.4f}"] if result["bpc"] else []),
    )
    ctx.out.print(table)


def warn_unknown(ctx: Ctx, vocab, unknown: list[str]) -> None:
    if unknown:
        what = "words map to <unk>" if "<unk>" in vocab.stoi else "tokens are skipped"
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        ctx.err.print(f"[yellow]warning: {len(unknown)} unknown {what}: {shown}[/]")


# --- sample ------------------------------------------------------------------------------


@main.command()
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option("--seed-text", help="Text to prime the model with.")
@click.option(
    "--seed-file", type=click.Path(path_type=Path), help="Prime with the contents of a file."
)
@click.option("--length", type=Pos, help="Tokens to generate (default: 300 chars or 50 words).")
@click.option(
    "--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
@click.option("--top-k", type=Pos, help="Draw from the K most likely tokens only.")
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--num", type=Pos, default=1, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, help="Random seed, for a reproducible sample.")
@run_library
def sample(ckpt, seed_text, seed_file, length, temperature, top_k, greedy, num, seed):
    """Prime with text, then generate."""
    ctx = Ctx()
    c = checkpoint.load(ckpt)
    if seed_text is not None and seed_file is not None:
        raise click.UsageError("give --seed-text or --seed-file, not both")
    if seed_text is not None and not seed_text.strip():
        raise click.BadParameter("the seed text is empty", param_hint="--seed-text")
    text = read_text(seed_file) if seed_file is not None else seed_text
    vocab = c.vocab
    if text is None:
        seed_ids, text = np.array([vocab.stoi.get(EOS, 0)]), ""
    else:
        seed_ids, unknown = vocab.encode(text)
        warn_unknown(ctx, vocab, unknown)
        if len(seed_ids) == 0:
            raise LMError("no token of the seed text is in the model's vocabulary; give other text")
    length = length or (300 if vocab.level == "char" else 50)
    rng = np.random.default_rng(seed)
    for k in range(num):
        if num > 1:
            ctx.err.print(f"[dim]--- sample {k + 1}[/]")
        sys.stdout.write(text)
        after_newline = text.endswith("\n") or not text
        for tok in generate(c.model, seed_ids, length, rng, temperature, top_k, greedy):
            piece = vocab.decode([tok])
            if vocab.level == "word" and piece != "\n" and not after_newline:
                piece = " " + piece
            after_newline = piece == "\n"
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")


# --- info --------------------------------------------------------------------------------


@main.command()
@click.argument("ckpt", type=click.Path(path_type=Path))
@run_library
def info(ckpt):
    """Configuration, size, progress and learning curve of a checkpoint."""
    ctx = Ctx()
    c = checkpoint.load(ckpt)
    st, m, tc = c.train_state, c.model.config, c.train_config
    table = Table(title=str(checkpoint.resolve_path(ckpt)), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        (
            "model",
            f"{m.cell} {m.layers} x {m.hidden}, dropout {m.dropout:g}"
            + (f", input dropout {m.input_dropout:g}" if m.input_dropout else "")
            + f", init ±{m.init_scale:g}"
            + (f", forget bias {m.forget_bias:g}" if m.forget_bias else ""),
        ),
        (
            "vocabulary",
            f"{len(c.vocab):,} ({c.vocab.level} level{', PTB chars' if c.vocab.ptb_chars else ''})",
        ),
        ("parameters", f"{c.model.num_params():,}"),
        (
            "training",
            f"batch {tc.batch_size} x bptt {tc.bptt}, {tc.optimizer} lr {tc.lr:g} "
            f"(x{tc.lr_decay:g} per epoch after {tc.decay_after}), clip {tc.clip:g}, seed {tc.seed}"
            + (f", token rows lr x{tc.token_lr_scale:g}" if tc.token_lr_scale != 1 else ""),
        ),
        (
            "progress",
            f"step {st['step']:,}, {st['epoch'] - 1} of {tc.epochs} epochs done"
            + (f" and {st['window']:,} windows" if st["window"] else "")
            + f", {st['tokens']:,} tokens, {st['elapsed'] / 60:.1f} min",
        ),
        (
            "best valid ppl",
            f"{math.exp(st['best_valid']):,.2f}"
            + (f" ({st['best_valid'] / LN2:.3f} bpc)" if c.vocab.level == "char" else "")
            if st["best_valid"] is not None and math.isfinite(st["best_valid"])
            else "-",
        ),
        (
            "data",
            c.meta["data"].get("dir") or c.meta["data"].get("train") or c.meta["data"].get("data"),
        ),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    ctx.out.print(table)
    history = st.get("history") or []
    if history:
        ctx.out.print(learning_curve(history))


def learning_curve(history: list[dict], width: int = 40) -> str:
    """Valid perplexity by evaluation as horizontal bars, proportional to perplexity."""
    ppl = [h["valid_ppl"] for h in history]
    top = max(ppl)
    bpc = all("valid_bpc" in h for h in history)
    lines = ["valid perplexity" + (" (bits per character)" if bpc else "") + " by epoch"]
    for h, p in zip(history, ppl):
        value = f"{p:10,.2f}" + (f" ({h['valid_bpc']:.3f})" if bpc else "")
        lines.append(f"  {h['epoch']:6.2f}  {value}  {'█' * max(1, round(width * p / top))}")
    return "\n".join(lines)


# --- gradcheck and bench -------------------------------------------------------------------


@main.command()
@click.option("--layers", type=Pos, default=2, show_default=True)
@click.option("--hidden", type=Pos, default=6, show_default=True)
@click.option("--bptt", type=Pos, default=5, show_default=True)
@click.option(
    "--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True
)
@click.option(
    "--input-dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True
)
@click.option("--cell", type=click.Choice(CELLS), default="lstm", show_default=True)
@click.option("--vocab", "vocab_size", type=click.IntRange(min=2), default=11, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@run_library
def gradcheck(layers, hidden, bptt, dropout, input_dropout, cell, vocab_size, seed):
    """Check the hand-written backward against numerical gradients (float64)."""
    ctx = Ctx()
    config = ModelConfig(
        vocab_size=vocab_size,
        hidden=hidden,
        layers=layers,
        cell=cell,
        dropout=dropout,
        input_dropout=input_dropout,
    )
    errors = check_gradients(config, bptt=bptt, seed=seed)
    table = Table(
        title=f"gradient check: {cell} {layers} x {hidden}, T {bptt}, V {vocab_size}, dropout {dropout:g}"
        + (f", input dropout {input_dropout:g}" if input_dropout else "")
    )
    table.add_column("array")
    table.add_column("max relative error", justify="right")
    table.add_column("")
    for name, err in errors.items():
        table.add_row(name, f"{err:.2e}", "[green]ok[/]" if err < TOLERANCE else "[red]FAIL[/]")
    ctx.out.print(table)
    worst = max(errors.values())
    if worst >= TOLERANCE:
        ctx.err.print(
            f"[red]gradient check failed: largest relative error {worst:.2e} >= {TOLERANCE:g}[/]"
        )
        sys.exit(1)
    ctx.err.print(f"[green]all {len(errors)} arrays within {TOLERANCE:g} (largest {worst:.2e})[/]")


@main.command()
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    help="Take the model size, batch and bptt of a preset (and V 50 for char).",
)
@click.option("--cell", type=click.Choice(CELLS))
@click.option("--layers", type=Pos)
@click.option("--hidden", type=Pos)
@click.option("--batch-size", type=Pos)
@click.option("--bptt", type=Pos)
@click.option(
    "--vocab", "vocab_size", type=click.IntRange(min=2), help="Vocabulary size (default 10,000)."
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="Default: the preset's, else sgd.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--repeats", type=Pos, default=10, show_default=True)
@click.option(
    "--literal", is_flag=True, help="Also time the literal per-token batch-1 formulation (slow)."
)
@click.option("--json", "as_json", is_flag=True)
@run_library
def bench(
    preset,
    cell,
    layers,
    hidden,
    batch_size,
    bptt,
    vocab_size,
    optimizer,
    dtype,
    repeats,
    literal,
    as_json,
):
    """Training and evaluation tokens/s on synthetic PTB-shaped data (default: 2 x 200, B 20, T 20)."""
    ctx = Ctx()
    base = {**PRESETS["small"], **(PRESETS[preset] if preset else {})}
    layers, hidden = layers or base["layers"], hidden or base["hidden"]
    B, T = batch_size or base["batch_size"], bptt or base["bptt"]
    vocab_size = vocab_size or (50 if base.get("level") == "char" else 10_000)
    optimizer = optimizer or base.get("optimizer", "sgd")
    config = ModelConfig(vocab_size=vocab_size, hidden=hidden, layers=layers, cell=cell or "lstm")
    ctx.err.print(f"timing {config.cell} {layers} x {hidden}, V {vocab_size:,}, B {B}, T {T} ...")
    results = [run_bench(config, B, T, dtype, optimizer, repeats=repeats)]
    if literal:
        ctx.err.print("timing the literal formulation ...")
        results.append(bench_literal(dataclasses.replace(config, cell="lstm"), T))
    results[0]["threads"] = os.environ.get("OMP_NUM_THREADS") or os.cpu_count()
    if as_json:
        ctx.out.print(json.dumps(results if literal else results[0]))
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
    ctx.out.print(table)
