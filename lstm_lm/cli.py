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
import os
import signal
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
from rich.table import Table

from lstm_lm import LMError, OptionError, __version__, cache, checkpoint, parallel, rundir
from lstm_lm.adapt import (
    CACHE_LAMBDA,
    CACHE_SIZE,
    CACHE_THETA,
    DYNAMIC_BPTT,
    DYNAMIC_DECAY,
    DYNAMIC_LR,
    Cache,
    Dynamic,
    document_nll,
    evaluate_adapted,
    load_or_compute_rms,
    tune_cache,
    tune_dynamic,
)
from lstm_lm.atomic import write_atomic
from lstm_lm.bench import bench as run_bench
from lstm_lm.bench import bench_literal, profile
from lstm_lm.cells import CELL_TYPES
from lstm_lm.config import (
    DEFAULT_CUTOFFS,
    DTYPES,
    LEVELS,
    PRESETS,
    SOFTMAXES,
    ModelConfig,
    Settings,
    check_cutoffs,
    resolve,
)
from lstm_lm.data import read_text
from lstm_lm.download import DEFAULT_DEST, MIRROR_ENV, fetch_ptb
from lstm_lm.evaluation import eval_data
from lstm_lm.export import export
from lstm_lm.gradcheck import TOLERANCE, check_gradients
from lstm_lm.losses import bits_per_char, perplexity
from lstm_lm.malloc import keep_freed_memory
from lstm_lm.memory import fmt_bytes
from lstm_lm.optim import OPTIMIZERS
from lstm_lm.parallel import STALL_TIMEOUT, RanksError
from lstm_lm.plot import X_AXES, learning_curves
from lstm_lm.plot import save as save_figure
from lstm_lm.runs import Run, plan
from lstm_lm.sampling import DEFAULT_LENGTH, encode_seed, generate
from lstm_lm.score import score_document, score_lines, split_lines
from lstm_lm.views import (
    Consoles,
    FetchView,
    TrainView,
    WorkProgress,
    bench_table,
    describe,
    eval_table,
    feature_table,
    fmt_ppl,
    gradcheck_table,
    info_json,
    info_rows,
    learning_curve,
    nothing_to_do,
    output_layer,
    profile_table,
    score_line,
    settings_table,
    tune_table,
    warn_unknown,
)
from lstm_lm.viz import MAX_TOKENS
from lstm_lm.viz import report as viz_report

Pos = click.IntRange(min=1)


class Cutoffs(click.ParamType):
    """Increasing positive whole numbers separated by commas: 2000,10000."""

    name = "A,B,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            cutoffs = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of whole numbers such as 2000,10000", param, ctx)
        if cutoffs[0] < 1 or list(cutoffs) != sorted(set(cutoffs)):
            self.fail(f"{value!r}: give increasing positive numbers such as 2000,10000", param, ctx)
        return cutoffs


Prob = click.FloatRange(0, 1, max_open=True)
Positive = click.FloatRange(min=0, min_open=True)


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
        except RanksError as e:  # raised on every rank together: rank 0 says it
            raise click.ClickException(str(e)) from None
        except OptionError as e:  # options that do not go together: a usage error
            raise click.UsageError(str(e)) from None
        except LMError as e:
            end_other_ranks(str(e))
            raise click.ClickException(str(e)) from None
        except MemoryError as e:
            end_other_ranks(f"out of memory ({e}); use a smaller model")
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


def end_other_ranks(message: str) -> None:
    """Under mpiexec, an error that only this rank may have met ends every rank (the others
    could be waiting for it in a collective): the message, then MPI_Abort."""
    world = parallel.world()
    if world.size > 1:
        world.fail(message)


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


def launch(procs: int | None, hosts: str | None = None, hostfile: Path | None = None):
    """The ranks to run on (a parallel.Group): with --procs N from a single process, this
    very command is run again under `mpiexec -n N` (on --hosts or --hostfile), and this
    process passes on what it prints, then exits with its status."""
    refuse_together("hosts", "hostfile", "give the hosts one way")
    if procs is None and (hosts or hostfile):
        raise click.UsageError("--hosts and --hostfile go with --procs N")
    world = parallel.world()
    if procs is None or procs == world.size:
        return world
    if world.size > 1:
        raise click.UsageError(f"--procs {procs} does not match the {world.size} processes "
                               "mpiexec started; give one or the other")  # fmt: skip
    names = None
    if hosts is not None:
        names = [h.strip() for h in hosts.split(",")]
        if not all(names):
            raise click.BadParameter(f"{hosts!r} names an empty host", param_hint="--hosts")
    if hostfile is not None and not hostfile.is_file():
        raise LMError(f"{hostfile}: no such host file; give a file of host names, one a line")
    launcher = ("--procs", "--hosts", "--hostfile")  # this process's, not the ranks'
    argv, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg in launcher:
            next(args, None)  # its value
        elif not arg.startswith(tuple(f"{o}=" for o in launcher)):
            argv.append(arg)
    sys.exit(parallel.run_mpiexec(parallel.mpiexec_command(procs, argv, names, hostfile)))


VERIFY_HELP = ("Check the data files against the run's token cache by their SHA-256, not only by "
               "their sizes and modification times.")  # fmt: skip
CKPT_HELP = ("CKPT is a checkpoint (.npz, or .safetensors from export) or a run directory, "
             "which means its best.npz (or last.npz where there is none).")  # fmt: skip


def open_checkpoint(con: Consoles, ckpt: Path) -> checkpoint.Checkpoint:
    """Load CKPT, saying which file a run directory resolved to."""
    path = rundir.resolve(ckpt)
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
    "variational": dict(flag=True, help="Draw the --dropout and --input-dropout masks once per "
                        "window and stream, shared by its T steps (Gal & Ghahramani 2016)."),
    "word_dropout": dict(type=Prob, help="Drop a token type's input for a whole window: all its "
                         "occurrences (Gal & Ghahramani's embedding dropout)."),
    "weight_drop": dict(type=Prob, help="DropConnect on every layer's recurrent weights, one mask "
                        "per window (Merity et al. 2017)."),
    "ar": dict(type=click.FloatRange(min=0), metavar="ALPHA", help="Activation regularisation: "
               "add ALPHA x the mean square of the top layer's output (after dropout) to the "
               "loss per token (Merity et al. 2017 use 2)."),
    "tar": dict(type=click.FloatRange(min=0), metavar="BETA", help="Temporal activation "
                "regularisation: add BETA x the mean square of the top layer's change from step "
                "to step (before dropout) to the loss per token (Merity et al. 2017 use 1)."),
    "softmax": dict(type=click.Choice(list(SOFTMAXES)), help="Output layer: the full softmax, "
                    "or the adaptive softmax (Grave et al. 2017), whose cost per token hardly "
                    "grows with the vocabulary."),
    "cutoffs": dict(type=Cutoffs(), help="With --softmax adaptive: the words up to the first "
                    "cutoff by training frequency form the head, each next range a tail cluster "
                    f"(default: {','.join(map(str, DEFAULT_CUTOFFS))}, those below the vocabulary "
                    "size)."),
    "tied": dict(flag=True, help="Tie the input and output embeddings: the token enters "
                 "through E (V, H), whose transpose is the output layer's weight (Inan et al. "
                 "2017)."),
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
    "asgd": dict(flag=True, help="Averaged SGD: once validation stalls (--asgd-patience), "
                 "evaluate and save the mean of the iterates since (Merity et al. 2017)."),
    "asgd_patience": dict(type=Pos, metavar="N", help="--asgd starts averaging once the valid "
                          "loss is worse than the best one from before the last N evaluations."),
    "asgd_after": dict(type=Pos, metavar="EPOCHS", help="--asgd starts averaging at the end "
                       "of this epoch if validation has not stalled before."),
    "clip": dict(type=click.FloatRange(min=0), help="Max global gradient norm (0: off)."),
    "token_lr_scale": dict(type=Positive,
                           help="Learning-rate multiplier for the one-hot token rows (SGD)."),
    "seed": dict(type=click.IntRange(min=0), help="Random seed."),
    "dtype": dict(type=click.Choice(DTYPES)),
    "max_steps": dict(type=Pos, help="Stop at this optimisation step of the whole run."),
    "max_tokens": dict(type=Pos, help="Stop after this many training tokens of the whole run."),
    "max_minutes": dict(type=Positive, metavar="M", help="Stop after M minutes of training and "
                        "evaluation of the whole run (saved; --resume goes on)."),
    "eval_every": dict(type=Pos, help="Also evaluate on valid every N steps."),
    "valid_tokens": dict(type=Pos, metavar="N", help="Validate on the first N tokens of the "
                         "valid split (default: all of it up to 2,000,000; eval takes all)."),
    "procs": dict(type=Pos, help="Run on N processes: this command under `mpiexec -n N` "
                  f"({parallel.INSTALL}); the batch is split over them."),
    "hosts": dict(metavar="H1,H2,...", help="With --procs: run the processes on these hosts, in "
                  "turn (each needs this environment at the same path, ssh without a password "
                  "and the data)."),
    "hostfile": dict(type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="With --procs: the hosts to run on, one a line (host or host:N)."),
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
    "variational",
    "word_dropout",
    "weight_drop",
    "ar",
    "tar",
    "softmax",
    "cutoffs",
    "tied",
    "init_scale",
    "forget_bias",
    "chrono",
)
STEP = ("batch_size", "bptt", "optimizer", "asgd", "asgd_patience", "lr", "clip", "token_lr_scale",
        "seed", "dtype")  # fmt: skip
SCHEDULE = (
    "epochs",
    "lr_decay",
    "decay_after",
    "asgd_after",
    "max_steps",
    "max_tokens",
    "max_minutes",
    "eval_every",
    "valid_tokens",
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
            flag = "--" + name.replace("_", "-")
            if spec.pop("flag", False):  # None unless given, as for every other option
                flag += "/--no-" + flag[2:]
                spec.setdefault("default", None)
            fn = click.option(flag, name, **spec)(fn)
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


# `lstm-lm --help` lists the commands in the order a newcomer needs them, one line each.
COMMANDS = {
    "train": "Train a model on PTB (word or char level) or your own text.",
    "sample": "Prime a trained model with text, then generate.",
    "eval": "Perplexity (and bits per character) on a split or a text file.",
    "info": "A checkpoint's configuration, progress and learning curve.",
    "download": "Fetch the Penn TreeBank and verify its checksums.",
    "score": "Log-probability of each line of a file, as a sentence.",
    "plot": "Learning curves of one or several runs (PNG or SVG).",
    "viz": "What the network computes on a text, as one offline HTML page.",
    "export": "Write a checkpoint's parameters as .safetensors.",
    "bench": "Training and evaluation tokens/s of a configuration.",
    "gradcheck": "Check the hand-written backward against numerical gradients.",
}


class NewcomerOrder(click.Group):
    """A click group that lists its commands as COMMANDS orders and words them."""

    def list_commands(self, ctx):
        return sorted(self.commands, key=lambda name: list(COMMANDS).index(name))

    def add_command(self, cmd, name=None):
        cmd.short_help = COMMANDS[name or cmd.name]
        super().add_command(cmd, name)


@click.group(
    cls=NewcomerOrder,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="lstm-lm")
def main():
    """lstm-lm: a from-scratch NumPy LSTM language model (word and character level, PTB)."""
    keep_freed_memory()  # each window's arrays reuse the last one's pages (lstm_lm.malloc)
    try:  # under mpiexec: rank 0 alone prints, and every rank runs the same command
        world = parallel.world()
        world.tell_launcher()
        world.quiet_other_ranks()
        world.check_same("the command lines", [json.dumps(sys.argv[1:]).encode()],
                         "start every process with the same command")  # fmt: skip
    except LMError as e:
        raise click.ClickException(str(e)) from None


# --- download ----------------------------------------------------------------------------


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
        con.log.print(f"resuming {run.out} at step {st['step']:,} (epoch {st['epoch']})")
    elif p.kind == "init":
        con.log.print(f"fine-tuning {run.init_from['path']} (step {run.init_from['step']:,})")
    for note in run.corpus.notes:
        con.log.print(f"[yellow]{note}[/]")
    n = len(run.corpus.valid)
    if (k := run.config.validation_tokens(n)) < n:
        con.log.print(f"[yellow]validating on the first {k:,} of {n:,} valid tokens "
                      "(--valid-tokens N to change; eval takes them all)[/]")  # fmt: skip
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
    help="Validation text file (default: the last 10% of --train).",
)
@click.option("--test", type=click.Path(path_type=Path), help="Test text file.")
@click.option("--max-vocab", type=Pos, help="Keep the N most frequent types, <unk> for the rest.")
@click.option("--min-count", type=Pos, show_default="1", help="Drop types seen fewer times.")
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
    view = TrainView(con, run, as_json)
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


# --- eval --------------------------------------------------------------------------------


def adapt_options(fn):
    """The options of evaluation that adapts to the text (eval and score): --cache N with its
    theta and lambda, --dynamic with its lr, decay and segment length."""
    for option in reversed(ADAPT_OPTIONS):
        fn = option(fn)
    return fn


ADAPT_OPTIONS = [
    click.option("--cache", "cache_size", type=Pos, metavar="N",
                 help="Mix in a neural cache of the last N (top-layer state, next token) pairs "
                 "of the text scored so far, each stream its own (Grave et al. 2017; "
                 f"{CACHE_SIZE:,} is usual)."),
    click.option("--cache-theta", type=Positive, metavar="THETA",
                 help="The cache's sharpness: p_cache(w) is proportional to the sum of exp(THETA "
                 f"h.h_i) over the pairs whose next token is w (default {CACHE_THETA:g})."),
    click.option("--cache-lambda", type=click.FloatRange(0, 1), metavar="LAMBDA",
                 help="The cache's weight: p = (1 - LAMBDA) p_model + LAMBDA p_cache (default "
                 f"{CACHE_LAMBDA:g}; 0 is plain eval)."),
    click.option("--dynamic", is_flag=True,
                 help="Dynamic evaluation (Krause et al. 2018): adapt a copy of the weights to "
                 "the text as it is scored, one segment at a time, in one stream; the "
                 "checkpoint is never changed."),
    click.option("--dynamic-lr", type=click.FloatRange(min=0), metavar="ETA",
                 help="Step size of the adaptation, in units of each weight's gradient RMS on "
                 f"training text (default {DYNAMIC_LR:g}; 0 is plain eval)."),
    click.option("--dynamic-decay", type=click.FloatRange(min=0), metavar="LAMBDA",
                 help="Pull towards the trained weights at each segment (default "
                 f"{DYNAMIC_DECAY:g})."),
    click.option("--dynamic-bptt", type=Pos, metavar="T",
                 help=f"Tokens a segment: scored, then adapted to (default {DYNAMIC_BPTT})."),
]  # fmt: skip


def adapt_settings(cache_size, cache_theta, cache_lambda, dynamic, dynamic_lr, dynamic_decay,
                   dynamic_bptt, tune=None):  # fmt: skip
    """Cache and Dynamic settings from the options (None where off); usage errors for a
    setting given without its option."""
    for name in ("cache_theta", "cache_lambda"):
        if given(name) and cache_size is None and tune != "cache":
            raise click.UsageError(f"--{name.replace('_', '-')} sets the cache: give --cache N")
    for name in ("dynamic_lr", "dynamic_decay", "dynamic_bptt"):
        if given(name) and not dynamic and tune != "dynamic":
            raise click.UsageError(f"--{name.replace('_', '-')} goes with --dynamic")
    cache = dyn = None
    if cache_size is not None or tune == "cache":
        cache = Cache(cache_size or CACHE_SIZE, CACHE_THETA if cache_theta is None else cache_theta,
                      CACHE_LAMBDA if cache_lambda is None else cache_lambda)  # fmt: skip
    if dynamic or tune == "dynamic":
        dyn = Dynamic(DYNAMIC_LR if dynamic_lr is None else dynamic_lr,
                      DYNAMIC_DECAY if dynamic_decay is None else dynamic_decay,
                      dynamic_bptt or DYNAMIC_BPTT)  # fmt: skip
    return cache, dyn


@main.command("eval", epilog=CKPT_HELP)
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
        lambda: open_eval_data(con, ckpt, split, text_file, batch_size, verify), main_first=True
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
    bpc = bits_per_char(nll / n, c.vocab.level)
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


def open_eval_data(con: Consoles, ckpt: Path, split, text_file, batch_size, verify):
    """The checkpoint and what to evaluate it on (evaluation.eval_data), its notes said."""
    c = open_checkpoint(con, ckpt)
    with FetchView(con.log) as fetch:
        data = eval_data(c, rundir.resolve(ckpt), split, text_file, batch_size, verify,
                         **fetch.hooks)  # fmt: skip
    warn_unknown(con, c.vocab, data.unknown)
    for note in data.notes:
        con.log.print(note)
    return c, data


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
@click.option(
    "--temperature",
    type=Positive,
    default=1.0,
    show_default=True,
    help="Divide the logits by T before drawing: below 1 sticks to likely tokens, above 1 "
    "varies more.",
)
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
        write_atomic(out, "".join(samples).encode(), fix="choose another --out")
        con.log.print(f"wrote {num} sample{'s' * (num > 1)} to {out}")


# --- score and export ---------------------------------------------------------------------


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
        scores = score_lines(c.model, c.vocab, lines, batch_size, c.train_config.bptt)
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


@main.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object: configuration, vocabulary size, parameters, progress, history.",
)
@library_errors
def info(ckpt, as_json):
    """Configuration, size, progress and learning curve of a checkpoint."""
    con = Consoles()
    c = open_checkpoint(con, ckpt)
    if as_json:
        con.out.print(json.dumps(info_json(c, rundir.resolve(ckpt))))
        return
    table = Table(title=str(rundir.resolve(ckpt)), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in info_rows(c):
        table.add_row(k, str(v))
    con.out.print(table)
    if c.train_state.get("history"):
        con.out.print("learning curve: valid perplexity at each evaluation")
        con.out.print(learning_curve(c.train_state["history"]))


# --- plot --------------------------------------------------------------------------------


def out_file(default: str, help: str):
    """The --out option of a command that writes one file."""
    return click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                        default=Path(default), show_default=True, help=help)  # fmt: skip


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_file("curves.png", "The figure: .png or .svg.")
@click.option("--x", "x_axis", type=click.Choice(list(X_AXES)), default="step", show_default=True)
@library_errors
def plot_cmd(runs, out, x_axis):
    """Learning curves of one or several runs (RUN: a run directory with metrics.jsonl): train
    and valid perplexity, or bits per character, the best valid point marked. Needs the plot
    extra (pip install "lstm-lm[plot]")."""
    con = Consoles()
    if out.suffix not in (".png", ".svg"):
        raise click.BadParameter(f"{out} does not end in .png or .svg", param_hint="--out")
    save_figure(learning_curves(runs, x_axis), out)
    con.log.print(f"wrote {out}: {len(runs)} run{'s' * (len(runs) > 1)}")


# --- viz ---------------------------------------------------------------------------------


@main.command(epilog=CKPT_HELP)
@click.argument("ckpt", type=click.Path(path_type=Path))
@click.option("--file", "text_file", type=click.Path(path_type=Path),
              help="The text to show (-: standard input).")  # fmt: skip
@click.option("--text", help="The text to show, given here.")
@out_file("report.html", "The page to write.")
@click.option("--max-tokens", type=Pos, default=MAX_TOKENS, show_default=True,
              help="Show the text's first N tokens.")  # fmt: skip
@click.option("--units", type=Pos, help="Units of each layer the page holds (default: as many as "
              "keep it near 10 MB, those that follow a feature of the text first).")  # fmt: skip
@library_errors
def viz(ckpt, text_file, text, out, max_tokens, units):
    """One HTML page, self-contained (it opens offline, from a file), of what the network
    computes on a text: each unit's state and gates token by token, the model's top
    guesses and surprisal, gate saturation, and the units that follow features of the text
    (position in the line, quotes, brackets, comments, ...)."""
    con = Consoles()
    refuse_together("text_file", "text", "give the text one way")
    if text_file is None and text is None:
        raise click.UsageError("give the text to show: --file F or --text T")
    if text is not None and not text.strip():
        raise click.BadParameter("the text is empty", param_hint="--text")
    c = open_checkpoint(con, ckpt)
    if text is None:  # enough bytes for max_tokens tokens of any sane text, not a whole corpus
        text = read_text(text_file, limit=max_tokens * 64)
    ids, unknown = c.vocab.encode(text)
    warn_unknown(con, c.vocab, unknown)
    if len(ids) > max_tokens:
        con.log.print(f"showing the first {max_tokens:,} tokens (--max-tokens)")
        ids = ids[:max_tokens]
    page, a = viz_report(c.model, c.vocab, ids, c.train_state, units)
    data = page.encode()
    write_atomic(out, data, fix="choose another --out")
    H = c.model.config.hidden
    con.log.print(f"wrote {out} ({fmt_bytes(len(data))}): {len(ids):,} tokens, "
                  f"{len(a.units[0])} of {H} units a layer")  # fmt: skip
    con.out.print(feature_table(a))


# --- gradcheck and bench -------------------------------------------------------------------


@main.command()
@options(
    "cell",
    "layers",
    "hidden",
    "bptt",
    "dropout",
    "input_dropout",
    "variational",
    "word_dropout",
    "weight_drop",
    "ar",
    "tar",
    "softmax",
    "cutoffs",
    "tied",
    "seed",
    cell="lstm",
    layers=2,
    hidden=6,
    bptt=5,
    dropout=0.0,
    input_dropout=0.0,
    variational=False,
    word_dropout=0.0,
    weight_drop=0.0,
    ar=0.0,
    tar=0.0,
    softmax="full",
    tied=False,
    seed=0,
)
@click.option("--vocab", "vocab_size", type=click.IntRange(min=2), default=11, show_default=True)
@library_errors
def gradcheck(bptt, seed, vocab_size, **model):
    """Check the hand-written backward against numerical gradients (float64), the dropout
    masks (and weight drop's) fixed; with --ar/--tar, of the loss with the penalties; with
    --softmax adaptive, of its head and tails (default cutoffs: a third and two thirds of
    --vocab); with --tied, of the embedding E, the sum of its input and output sides."""
    con = Consoles()
    if model["softmax"] == "adaptive" and model["cutoffs"] is None:
        model["cutoffs"] = tuple(sorted({max(1, vocab_size // 3), max(1, 2 * vocab_size // 3)}))
    elif model["cutoffs"] is not None and model["softmax"] != "adaptive":
        raise click.UsageError("--cutoffs goes with --softmax adaptive")
    if model["cutoffs"] is not None:
        usage_errors(check_cutoffs, model["cutoffs"], vocab_size)
    config = usage_errors(lambda: ModelConfig(vocab_size, **model))
    errors = check_gradients(config, bptt=bptt, seed=seed)
    con.out.print(gradcheck_table(config, bptt, errors, TOLERANCE))
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
    "--zipf",
    is_flag=True,
    help="Draw the synthetic tokens as words are, p(id) ~ 1/(id + 1), rather than uniformly: "
    "what an adaptive softmax's speed depends on.",
)
@click.option(
    "--literal", is_flag=True, help="Also time the literal per-token batch-1 formulation (slow)."
)
@click.option(
    "--profile",
    "with_profile",
    is_flag=True,
    help="Also time each part of a training step, beside this CPU's GEMM ceiling.",
)
@click.option("--json", "as_json", is_flag=True)
@options("procs", "hosts", "hostfile")
@library_errors
def bench(vocab_size, repeats, zipf, literal, with_profile, as_json, procs, hosts, hostfile,
          **settings):  # fmt: skip
    """Training and evaluation tokens/s of a configuration (default: the small preset, 2 x 200,
    B 20, T 20) on synthetic tokens; under mpiexec (or --procs), of the processes together,
    with the bytes each sends per step."""
    con = Consoles()
    world = launch(procs, hosts, hostfile)
    resolved = usage_errors(resolve, settings.pop("preset"), settings)
    config = resolved.model_config(vocab_size or (50 if resolved.level == "char" else 10_000))
    tc = resolved.train
    con.log.print(
        f"timing {config.cell} {config.layers} x {config.hidden}, "
        f"V {config.vocab_size:,}{output_layer(config)}, B {tc.batch_size}, T {tc.bptt}"
        + (", Zipf tokens" if zipf else "")
        + " ..."
    )
    results = [run_bench(config, tc, repeats=repeats, group=world, zipf=zipf)]
    if literal:
        con.log.print("timing the literal formulation ...")
        results.append(
            bench_literal(ModelConfig(config.vocab_size, config.hidden, config.layers), tc.bptt)
        )
    if with_profile:
        con.log.print("timing the parts of a training step ...")
        results[0]["profile"] = profile(config, tc, repeats=repeats, group=world, zipf=zipf)
    if as_json:
        con.out.print(json.dumps(results if literal else results[0]))
        return
    con.out.print(bench_table(results))
    if with_profile:
        con.out.print(profile_table(results[0], results[0]["profile"]))
