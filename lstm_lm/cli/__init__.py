"""The `lstm-lm` command: a thin Click layer over the library, and the only part of the
package that imports click, rich or subprocess, or writes to the terminal.

Each command parses its options, calls the library and renders what comes back: results to
stdout, progress and messages to stderr.

    __init__.py   the `lstm-lm` group: its commands in a newcomer's order
    train.py      train                    evaluate.py   eval, score
    sample.py     sample                   show.py       info, plot, viz, export
    tools.py      download, gradcheck, bench
    options.py    the options several commands share (OPTIONS), declared once
    errors.py     library errors -> one line and an exit code, in one place
    views.py      rendering: consoles, progress, tables
    launcher.py   --procs N: the command again under mpiexec
"""

from __future__ import annotations

import json
import sys

import click

from lstm_lm import __version__, parallel
from lstm_lm.cli import evaluate, sample, show, tools, train
from lstm_lm.cli.errors import start_up_errors
from lstm_lm.cli.launcher import quiet_other_ranks, tell_launcher
from lstm_lm.malloc import keep_freed_memory

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
    with start_up_errors():  # under mpiexec: rank 0 alone prints, every rank runs one command
        world = parallel.world()
        tell_launcher(world)
        quiet_other_ranks(world)
        world.check_same("the command lines", [json.dumps(sys.argv[1:]).encode()],
                         "start every process with the same command")  # fmt: skip


for command in (train.train, sample.sample, evaluate.eval_cmd, show.info, tools.download,
                evaluate.score, show.plot_cmd, show.viz, show.export_cmd, tools.bench,
                tools.gradcheck):  # fmt: skip
    main.add_command(command)
