"""The commands that show or convert a trained model: `info`, `plot`, `viz`, `export`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from lstm_lm import rundir
from lstm_lm.atomic import write_atomic
from lstm_lm.cli.errors import library_errors
from lstm_lm.cli.options import CKPT_HELP, Pos, open_checkpoint, out_file, refuse_together
from lstm_lm.cli.views import (
    Consoles,
    feature_table,
    info_json,
    info_rows,
    learning_curve,
    warn_unknown,
)
from lstm_lm.data import read_text
from lstm_lm.export import export
from lstm_lm.memory import fmt_bytes
from lstm_lm.plot import X_AXES, learning_curves, readable
from lstm_lm.plot import save as save_figure
from lstm_lm.viz import MAX_TOKENS
from lstm_lm.viz import report as viz_report


@click.command("export", epilog=CKPT_HELP)
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


@click.command(epilog=CKPT_HELP)
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


@click.command("plot")
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
    good, skipped = readable(runs)
    for reason in skipped:
        con.err.print(f"[yellow]skipped {reason}[/]")
    save_figure(learning_curves(good, x_axis), out)
    con.log.print(f"wrote {out}: {len(good)} run{'s' * (len(good) > 1)}")


@click.command(epilog=CKPT_HELP)
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
