"""The commands around training: `download` (PTB, checksums verified), `gradcheck` and
`bench`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lstm_lm.bench import VOCAB, bench_literal, profile
from lstm_lm.bench import bench as run_bench
from lstm_lm.cli.errors import library_errors, usage_errors
from lstm_lm.cli.launcher import launch
from lstm_lm.cli.options import MODEL, STEP, Pos, options
from lstm_lm.cli.views import (
    Consoles,
    FetchView,
    bench_table,
    gradcheck_table,
    output_layer,
    profile_table,
)
from lstm_lm.config import ModelConfig, resolve
from lstm_lm.download import DEFAULT_DEST, MIRROR_ENV, fetch_ptb
from lstm_lm.gradcheck import TOLERANCE, check_gradients, config_for


@click.command()
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


@click.command()
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
    config = config_for(vocab_size, **model)
    errors = check_gradients(config, bptt=bptt, seed=seed)
    con.out.print(gradcheck_table(config, bptt, errors, TOLERANCE))
    worst = max(errors.values())
    if worst >= TOLERANCE:
        con.err.print(
            f"[red]gradient check failed: largest relative error {worst:.2e} >= {TOLERANCE:g}[/]"
        )
        sys.exit(1)
    con.err.print(f"[green]all {len(errors)} arrays within {TOLERANCE:g} (largest {worst:.2e})[/]")


@click.command()
@options("preset", "level", *MODEL, *STEP)
@click.option(
    "--vocab",
    "vocab_size",
    type=click.IntRange(min=2),
    help="Vocabulary size (default: 10,000 words, 50 at char level, 8,192 bpe tokens).",
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
    config = resolved.model_config(vocab_size or VOCAB[resolved.level])
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
