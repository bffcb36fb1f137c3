"""`lstm-lm train`: plan the run (runs.plan), start it, render its events; Ctrl-C stops it
after the current step, saved."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path

import click
import numpy as np

from lstm_lm import rundir
from lstm_lm.cli.errors import library_errors
from lstm_lm.cli.launcher import launch
from lstm_lm.cli.options import (
    MODEL,
    SCHEDULE,
    STEP,
    VERIFY_HELP,
    Pos,
    options,
    presets_epilog,
    refuse_together,
)
from lstm_lm.cli.views import (
    Consoles,
    FetchView,
    TrainView,
    describe,
    nothing_to_do,
    settings_table,
)
from lstm_lm.config import resolve
from lstm_lm.parallel import STALL_TIMEOUT
from lstm_lm.runs import Run, plan
from lstm_lm.sampling import sample_text


@contextlib.contextmanager
def stop_on_signal(con: Consoles):
    """Yields `asked()`: the first Ctrl-C (or SIGTERM) asks training to stop after the
    current step and save; a second one aborts."""
    asked = []

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        # through the progress bar's console, which prints above the bar, not after it
        (con.err if con.log.quiet else con.log).print(
            "[yellow]stopping after this step and saving (Ctrl-C again to abort without saving)[/]"
        )

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(asked)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def start(con: Consoles, opts: dict, out: Path | None, resume: Path | None,
          init_from: Path | None = None, extend_vocab: bool = False,
          verify: bool = False) -> Run:  # fmt: skip
    """The run to train: resumed, fine-tuned from a model, or new from the options (data
    fetched and loaded)."""
    p = plan(opts, out, resume, init_from)
    with FetchView(con.log) as fetch:
        run = p.start(extend_vocab=extend_vocab, verify=verify, **fetch.hooks)
    if p.kind == "resume":
        st = run.resume.train_state
        con.log.print(f"resuming {run.out} at step {st['step']:,} (epoch {run.epochs_done():.2f})")
    elif p.kind == "init":
        con.log.print(f"fine-tuning {run.init_from['path']} (step {run.init_from['step']:,})")
    for note in [*run.notes, *run.corpus.notes, *run.corpus.work]:
        con.log.print(f"[yellow]{note}[/]")
    n = len(run.corpus.valid)
    if (k := run.config.validation_tokens(n)) < n:
        con.log.print(f"[yellow]validating on the first {k:,} of {n:,} valid tokens "
                      "(--valid-tokens N to change; eval takes them all)[/]")  # fmt: skip
    return run


@click.command(epilog=presets_epilog())
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
    help="Validation text file (default: the last 10% of --train).",
)
@click.option("--test", type=click.Path(path_type=Path), help="Test text file.")
@click.option("--max-vocab", type=Pos, help="Keep the N most frequent types, <unk> for the rest.")
@click.option(
    "--min-count",
    type=Pos,
    help="Types seen fewer times become <unk> (default: 2 for "
    "your own text at word level, so that <unk> is trained; 1 for PTB and at char "
    "level).",
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=257),
    metavar="N",
    help="With --level "
    "bpe: the tokens to learn (default: about 4 x the square root of the training "
    "text's characters, 512 to 32,768).",
)
@options(*MODEL, *STEP, *SCHEDULE, shown=resolve())
@options("procs", "hosts", "hostfile")
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0),
    default=STALL_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="On several processes: when one has waited this long for the others in an exchange "
    "(a host died, a link went down), end the job with one line saying so (0: wait forever).",
)
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
    "--init-from",
    type=click.Path(path_type=Path),
    help="Fine-tune: start a new run on the given data from this trained model (a checkpoint "
    "or run directory), its configuration and vocabulary; training options are this run's.",
)
@click.option(
    "--extend-vocab",
    is_flag=True,
    help="With --init-from: add the new text's unknown tokens to the vocabulary (else char "
    "level stops listing them; word level maps them to <unk>).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print every setting and where it comes from, then exit."
)
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.option("--quiet", is_flag=True, help="Print only errors and the final line.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per evaluation on stdout "
    '(with --dry-run, one of the settings: {"settings", "from"}).',
)
@library_errors
def train(out, resume, init_from, extend_vocab, dry_run, verify, quiet, as_json, procs, hosts,
          hostfile, stall_timeout, **opts):  # fmt: skip
    """Train a language model (PTB word level by default). The defaults shown are the small
    preset's, the one used without --preset (char with --level char)."""
    con = Consoles(quiet)
    refuse_together("resume", "init_from", "--resume continues a run, --init-from starts one")
    if extend_vocab and init_from is None:
        raise click.UsageError("--extend-vocab goes with --init-from")
    if dry_run:
        p = plan(opts, out, resume, init_from)
        if as_json:
            con.out.print(json.dumps({"settings": p.values, "from": p.origins}, default=str))
        else:
            con.out.print(settings_table(p.values, p.origins))
        return
    world = launch(procs, hosts, hostfile)
    world.watch(stall_timeout)
    run = world.together(lambda: start(con, opts, out, resume, init_from, extend_vocab, verify),
                         main_first=True)  # fmt: skip
    run.group = world
    if run.resume is not None and run.stop_reason():
        con.err.print(nothing_to_do(run, run.stop_reason()))
        return
    con.log.print(describe(run))
    rng = np.random.default_rng(run.config.seed + 1)  # the epoch-end samples', not training's
    view = TrainView(con, run, as_json, lambda: sample_text(run.model, run.corpus.vocab, rng))
    with stop_on_signal(con) as asked:
        try:
            run.fit(on_event=view, should_stop=asked)
        except KeyboardInterrupt:
            view.stop_bar()
            if rundir.saved(run.out):
                con.err.print(f"aborted; {run.out} holds what was saved last: "
                              f"lstm-lm train --resume {run.out}")  # fmt: skip
            else:
                con.err.print(
                    f"aborted before the first checkpoint: nothing was saved in {run.out}"
                )
            sys.exit(130)
        finally:
            view.stop_bar()
    if view.reason == "interrupted":
        con.err.print(f"resume with: lstm-lm train --resume {run.out}")
        sys.exit(130)
