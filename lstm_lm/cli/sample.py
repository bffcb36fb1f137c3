"""`lstm-lm sample`: prime a trained model with text, then generate."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import click
import numpy as np

from lstm_lm.api import Conversation, Model
from lstm_lm.atomic import write_atomic
from lstm_lm.cli.errors import library_errors
from lstm_lm.cli.options import CKPT_HELP, Pos, Positive, open_checkpoint, refuse_together
from lstm_lm.cli.views import Consoles, warn_unknown
from lstm_lm.data import read_text
from lstm_lm.sampling import DEFAULT_LENGTH


@click.command(epilog=CKPT_HELP)
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
    help=f"Tokens to generate (default: {DEFAULT_LENGTH['char']} chars, "
    f"{DEFAULT_LENGTH['word']} words or {DEFAULT_LENGTH['bpe']} bpe tokens).",
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
@click.option(
    "--interactive",
    is_flag=True,
    help="Read lines (typed, or piped in) and continue "
    "each as it is read; an empty line, end of input or Ctrl-C ends it.",
)
@click.option(
    "--keep-state",
    is_flag=True,
    help="With --interactive: each line follows the text "
    "so far (a conversation with the model) instead of starting afresh.",
)
@library_errors
def sample(ckpt, seed_text, seed_file, length, temperature, top_k, top_p, greedy, num, seed, out,
           interactive, keep_state):  # fmt: skip
    """Prime with text, then generate."""
    con = Consoles()
    refuse_together("seed_text", "seed_file", "give the seed one way")
    for option in ("top_k", "top_p", "temperature"):
        refuse_together("greedy", option, "--greedy always takes the most likely token")
    for option in ("seed_text", "seed_file", "num", "out"):
        refuse_together("interactive", option, "--interactive reads each prime as a line")
    if keep_state and not interactive:
        raise click.UsageError("--keep-state goes with --interactive")
    if seed_text is not None and not seed_text.strip():
        raise click.BadParameter("the seed text is empty", param_hint="--seed-text")
    model = Model(open_checkpoint(con, ckpt))
    rng = np.random.default_rng(seed)  # one stream of draws for every sample
    drawing = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, seed=rng)
    if interactive:
        converse(con, model.conversation(keep_state, length, **drawing))
        return
    text = read_text(seed_file) if seed_file is not None else seed_text or ""
    warn_unknown(con, model.vocab, model.unknown(text))
    samples = []  # with --out: written at the end, whole
    for k in range(num):
        header = [f"--- sample {k + 1}\n"] if num > 1 else []
        pieces = model.stream(text, length, **drawing)
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


def converse(con: Consoles, conversation: Conversation) -> None:
    """--interactive: a line in, its continuation out as it is drawn, until an empty line,
    the end of the input or Ctrl-C. On a terminal a prompt, the continuation alone; from a
    pipe no prompt, and each line printed with its continuation (as `sample` prints)."""
    stdin = sys.stdin
    terminal = stdin.isatty()
    if terminal:
        con.log.print("[dim]type a line to continue it; an empty line or Ctrl-D ends[/]")
    try:
        while True:
            if terminal:
                click.echo("> ", nl=False, err=True)
            line = stdin.readline()
            if not line.strip():  # the end of the input, or an empty line
                break
            line = line.rstrip("\n")
            warn_unknown(con, conversation.model.vocab, conversation.model.unknown(line))
            pieces = conversation.reply(line)
            for piece in pieces if terminal else itertools.chain([line], pieces):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            sys.stdout.flush()
    except KeyboardInterrupt:  # the way out on a terminal, as the prompt says
        sys.stdout.write("\n")
