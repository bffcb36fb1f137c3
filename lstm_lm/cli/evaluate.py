"""`lstm-lm eval` and `lstm-lm score`: a checkpoint's perplexity on a split or a file, and
each line's log-probability, by the model alone or adapting to the text (a neural cache,
dynamic evaluation), and `eval --tune`'s grids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lstm_lm import LMError, cache, rundir
from lstm_lm.adapt import (
    document_nll,
    evaluate_adapted,
    load_or_compute_rms,
    tune_cache,
    tune_dynamic,
)
from lstm_lm.api import Model
from lstm_lm.cli.errors import library_errors
from lstm_lm.cli.launcher import launch
from lstm_lm.cli.options import (
    CKPT_HELP,
    VERIFY_HELP,
    Pos,
    adapt_options,
    adapt_settings,
    open_checkpoint,
    options,
    refuse_together,
)
from lstm_lm.cli.views import (
    Consoles,
    FetchView,
    WorkProgress,
    eval_table,
    fmt_ppl,
    score_line,
    tune_table,
    warn_unknown,
)
from lstm_lm.data import read_text
from lstm_lm.evaluation import eval_data
from lstm_lm.losses import bits_per_character, perplexity
from lstm_lm.score import score_document, split_lines


@click.command("eval", epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["valid", "test"]),
    help="The run's split to evaluate on (default: test, or valid where the run has no test).",
)
@click.option(
    "--file",
    "text_file",
    type=click.Path(path_type=Path),
    help="Evaluate on this text file instead of a split (-: stdin).",
)
@click.option(
    "--batch-size",
    type=Pos,
    help="Streams evaluated side by side (default: those the run validated with, so that "
    "valid figures match training's). Every token but the first is scored whatever the "
    "batch; each stream but the first starts without context, so 1 is the published "
    "convention (and the slowest).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"split", "tokens", "nll", "ppl", "bpc"} (and "cache", "dynamic": their '
    "settings, where on).",
)
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@adapt_options
@click.option("--tune", type=click.Choice(["cache", "dynamic"]), help="Evaluate a small grid of "
              "the cache's (theta, lambda) or dynamic evaluation's (lr, decay) on the valid "
              "split, print the table and the best settings as a command line.")  # fmt: skip
@click.option("--tune-tokens", type=Pos, metavar="N", help="With --tune: the first N tokens of "
              "the valid split only (default: all of it; a dynamic evaluation of a 2 x 650 "
              "model scores about 90 tokens a second).")  # fmt: skip
@options("procs", "hosts", "hostfile")
@library_errors
def eval_cmd(ckpt, split, text_file, batch_size, as_json, verify, cache_size, cache_theta,
             cache_lambda, dynamic, dynamic_lr, dynamic_decay, dynamic_bptt, tune, tune_tokens,
             procs, hosts, hostfile):  # fmt: skip
    """Perplexity (and bits per character) of a checkpoint on a split or a file, by the model
    alone or adapting to the text (--cache, --dynamic)."""
    con = Consoles()
    refuse_together("split", "text_file", "--file evaluates that file instead of a split")
    if tune_tokens is not None and not tune:
        raise click.UsageError("--tune-tokens goes with --tune")
    cache, dynamic_settings = adapt_settings(
        cache_size,
        cache_theta,
        cache_lambda,
        dynamic,
        dynamic_lr,
        dynamic_decay,
        dynamic_bptt,
        tune,
    )
    if dynamic_settings is not None:
        refuse_together("dynamic", "procs", "dynamic evaluation reads the text in order, in one "
                        "stream, on one process")  # fmt: skip
        if procs and tune == "dynamic":
            raise click.UsageError("--tune dynamic runs on one process: leave out --procs")
        if batch_size not in (None, 1):
            raise click.UsageError("--dynamic adapts one set of weights to the text in order: it "
                                   "scores one stream (leave out --batch-size)")  # fmt: skip
        batch_size = 1
    if tune:
        if split == "test" or text_file is not None:
            raise click.UsageError("--tune tunes on the valid split only (the test split stays "
                                   "unseen): leave out --split test and --file")  # fmt: skip
        refuse_together("tune", "procs", "tuning runs on one process")
        split = "valid"
    world = launch(procs, hosts, hostfile)
    c, data = world.together(
        lambda: open_eval_data(con, ckpt, split, text_file, batch_size, verify, say=as_json),
        main_first=True,
    )
    ids, name, batch_size = data.ids, data.name, data.batch_size
    path = rundir.resolve(ckpt)
    rms, statistics = None, None
    if dynamic_settings is not None:
        rms, statistics = dynamic_statistics(con, c, path, dynamic_settings.bptt, verify)
    if tune:
        ids = ids[: tune_tokens + 1] if tune_tokens else ids
        tune_and_print(con, c, path, ids, batch_size, tune, cache, dynamic_settings, rms,
                       as_json)  # fmt: skip
        return
    with WorkProgress(con.log, f"scoring {name}") as progress:
        nll, n = evaluate_adapted(c.model, ids, batch_size, cache, dynamic_settings, rms,
                                  group=world, progress=progress)  # fmt: skip
    bpc = data.bits_per_character(c.vocab, nll)
    result = {"split": name, "tokens": n, "nll": nll / n, "ppl": perplexity(nll / n), "bpc": bpc}
    if cache is not None:
        result["cache"] = cache.json()
    if dynamic_settings is not None:
        result["dynamic"] = {**dynamic_settings.json(), "statistics": statistics}
    if as_json:
        con.out.print(json.dumps(result))
        return
    con.out.print(eval_table(path, result, batch_size))


def dynamic_statistics(con: Consoles, c, path: Path, bptt: int, verify: bool):
    """The gradient RMS for dynamic evaluation and what it came from: the checkpoint's
    training text (cached beside it), or, where that text cannot be had, none (plain SGD
    steps), said in one line."""
    try:
        with FetchView(con.log) as fetch:
            train = cache.trained_on(c, rundir.run_of(path), **fetch.hooks, verify=verify).train
    except LMError as e:
        con.log.print(
            f"dynamic evaluation without gradient statistics (plain SGD steps, the "
            f"same decay for every weight): the training text is not at hand ({e})"
        )
        return None, "none: plain SGD steps"
    with WorkProgress(con.log, "gradient statistics", "segments") as progress:
        rms = load_or_compute_rms(c.model, path, train, bptt, con.log.print, progress)
    return rms, "training text"


def tune_and_print(con: Consoles, c, path: Path, ids, batch_size: int, what: str, cache,
                   dynamic, rms, as_json: bool) -> None:  # fmt: skip
    """--tune: the grid's perplexities on valid, the best as a command line."""
    with WorkProgress(con.log, f"tuning {what} on valid", "settings") as progress:
        if what == "cache":
            rows = tune_cache(c.model, ids, batch_size, cache.size, progress=progress)
        else:
            rows = tune_dynamic(c.model, ids, rms, dynamic.bptt, cache, progress=progress)
    best = min(rows, key=lambda r: r["ppl"])
    if what == "cache" and best["theta"] is None:
        line = f"lstm-lm eval {path}  (no cache setting of the grid helps)"
    elif what == "cache":
        line = (f"lstm-lm eval {path} --cache {cache.size} --cache-theta {best['theta']:g} "
                f"--cache-lambda {best['lambda']:g}")  # fmt: skip
    else:
        extra = "" if cache is None else (f" --cache {cache.size} --cache-theta {cache.theta:g} "
                                          f"--cache-lambda {cache.lam:g}")  # fmt: skip
        line = (f"lstm-lm eval {path} --dynamic --dynamic-lr {best['lr']:g} --dynamic-decay "
                f"{best['decay']:g} --dynamic-bptt {dynamic.bptt}{extra}")  # fmt: skip
    if as_json:
        con.out.print(json.dumps({"split": "valid", "tokens": len(ids) - 1, "tune": what,
                                  "grid": rows, "best": best, "command": line}))  # fmt: skip
        return
    con.out.print(tune_table(what, rows, best))
    con.out.print(f"best on valid: {line}")


def open_eval_data(con: Consoles, ckpt: Path, split, text_file, batch_size, verify, say):
    """The checkpoint and what to evaluate it on (evaluation.eval_data), its notes said, and
    the file CKPT resolved to unless the output names it (`say`)."""
    c = open_checkpoint(con, ckpt, say)
    with FetchView(con.log) as fetch:
        data = eval_data(c, rundir.resolve(ckpt), split, text_file, batch_size, verify,
                         **fetch.hooks)  # fmt: skip
    warn_unknown(con, c.vocab, data.unknown)
    for note in data.notes:
        con.log.print(note)
    return c, data


@click.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--log10", is_flag=True, help="Base-10 log-probabilities (as rescoring takes them).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line: {"line", "tokens", "logprob", "ppl", "bpc", "unknown"}.',
)
@click.option("--per-token", is_flag=True, help="Add each token's log-probability.")
@click.option(
    "--batch-size",
    type=Pos,
    default=64,
    show_default=True,
    help="Lines scored together (of similar lengths).",
)
@adapt_options
@library_errors
def score(ckpt, file, log10, as_json, per_token, batch_size, cache_size, cache_theta,
          cache_lambda, dynamic, dynamic_lr, dynamic_decay, dynamic_bptt):  # fmt: skip
    """Score each line of FILE (-: stdin) as a sentence: one output line per input line, in
    order, with its log-probability (natural log), tokens scored (its closing <eos>
    included), perplexity and text, tab-separated. A summary goes to stderr. With --cache or
    --dynamic the lines are one document instead, read in order (each line after its <eos>,
    as PTB lays out its sentences): what the cache holds and the weights learn from earlier
    lines goes on to later ones, and each line's score is its tokens' and closing <eos>'s."""
    con = Consoles()
    cache, dyn = adapt_settings(cache_size, cache_theta, cache_lambda, dynamic, dynamic_lr,
                                dynamic_decay, dynamic_bptt)  # fmt: skip
    c = open_checkpoint(con, ckpt)
    lines = split_lines(read_text(file))
    if cache is None and dyn is None:
        scores = Model(c).score(lines, batch_size)
    else:
        rms = None
        if dyn is not None:
            rms, _ = dynamic_statistics(con, c, rundir.resolve(ckpt), dyn.bptt, False)
        scores = score_document(
            c.vocab, lines, lambda ids: document_nll(c.model, ids, cache, dyn, rms)
        )
    for s in scores:  # plain writes: a line of text is not markup
        sys.stdout.write(score_line(s, log10, as_json, per_token) + "\n")
    tokens = sum(s.tokens for s in scores)
    unknown = sorted({u for s in scores for u in s.unknown})
    nll, chars = -sum(s.logprob for s in scores), sum(s.chars for s in scores)
    con.log.print(f"{len(scores):,} lines, {tokens:,} tokens, perplexity "
                  f"{fmt_ppl(perplexity(nll / tokens))}, "
                  f"{bits_per_character(nll + sum(s.unk_nats for s in scores), chars):.4f} "
                  "bits/char"
                  + (f"; {len(unknown):,} unknown types" if unknown else ""))  # fmt: skip
