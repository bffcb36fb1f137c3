"""The options that several commands share, declared once: their types, the OPTIONS table
(attached with `@options(...)`, defaults shown from the presets), the options of adaptive
evaluation, and the checks that two options do not go together."""

from __future__ import annotations

import textwrap
from pathlib import Path

import click
from click.core import ParameterSource

from lstm_lm import checkpoint, parallel, rundir
from lstm_lm.adapt import (
    CACHE_LAMBDA,
    CACHE_SIZE,
    CACHE_THETA,
    DYNAMIC_BPTT,
    DYNAMIC_DECAY,
    DYNAMIC_LR,
    Cache,
    Dynamic,
)
from lstm_lm.cells import CELL_TYPES
from lstm_lm.cli.views import Consoles
from lstm_lm.config import DEFAULT_CUTOFFS, DTYPES, LEVELS, PRESETS, SOFTMAXES, Settings
from lstm_lm.optim import OPTIMIZERS

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


VERIFY_HELP = ("Check the data files against the run's token cache by their SHA-256, not only by "
               "their sizes and modification times.")  # fmt: skip
CKPT_HELP = ("CKPT is a checkpoint (.npz, or .safetensors from export) or a run directory, "
             "which means its best.npz (or last.npz where there is none).")  # fmt: skip


def open_checkpoint(con: Consoles, ckpt: Path, say: bool = True) -> checkpoint.Checkpoint:
    """Load CKPT, saying which file a run directory resolved to (unless the output names it:
    `say`)."""
    path = rundir.resolve(ckpt)
    if path != ckpt and say:
        con.log.print(f"using {path}")
    return checkpoint.load(path)


# --- options shared by train, bench and gradcheck ------------------------------------------

# fmt: off
OPTIONS = {
    "preset": dict(type=click.Choice(list(PRESETS)), help="Named configuration (default: small, "
                   "or char with --level char); explicit options override it."),
    "level": dict(type=click.Choice(LEVELS), help="Token level (default: word): words, "
                  "characters, or byte-level BPE subwords learnt from the training text (the "
                  "bpe extra)."),
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


def out_file(default: str, help: str):
    """The --out option of a command that writes one file."""
    return click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                        default=Path(default), show_default=True, help=help)  # fmt: skip
