"""`lstm-lm sample`: prime a trained model with text, then generate."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import click
import numpy as np

from lstm_lm.atomic import write_atomic
from lstm_lm.cli.errors import library_errors
from lstm_lm.cli.options import (
    CKPT_HELP,
    Pos,
    Positive,
    open_checkpoint,
    refuse_together,
)
from lstm_lm.cli.views import (
    Consoles,
    warn_unknown,
)
from lstm_lm.data import read_text
from lstm_lm.sampling import DEFAULT_LENGTH, encode_seed, generate


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
