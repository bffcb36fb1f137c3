"""`lstm-lm plot`: learning curves of runs as PNG or SVG, one line per run and split."""

import json
import sys

import pytest
from click.testing import CliRunner
from conftest import require_module

from lstm_lm.cli import main
from lstm_lm.plot import learning_curves

require_module("matplotlib", "plot")


def run_dir(path, char=False, n=4):
    path.mkdir()
    lines = []
    for k in range(1, n + 1):
        m = {"step": 100 * k, "epoch": k / 2, "lr": 1.0, "train_loss": 5.0 - k / 3,
             "valid_loss": 5.2 - k / 4 + (k == n) * 0.5, "tokens_per_s": 1000.0,
             "elapsed": 60.0 * k, "tokens": 0}  # fmt: skip
        if char:
            m["valid_bpc"] = m["valid_loss"] / 0.6931
        lines.append(json.dumps(m))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_one_line_per_run_and_split_and_the_best_point(tmp_path):
    a, b = run_dir(tmp_path / "a"), run_dir(tmp_path / "b", n=3)
    fig = learning_curves([a, b], "minutes")
    gids = sorted(line.get_gid() for line in fig.axes[0].get_lines())
    assert gids == sorted(f"{r}:{s}" for r in (a, b) for s in ("train", "valid", "best"))
    best = next(line for line in fig.axes[0].get_lines() if line.get_gid() == f"{a}:best")
    assert list(best.get_xdata()) == [3.0]  # the last of a's four is worse: best at minute 3
    assert fig.axes[0].get_ylabel() == "perplexity"
    c = learning_curves([run_dir(tmp_path / "c", char=True)])
    assert c.axes[0].get_ylabel() == "bits per character"


@pytest.mark.parametrize("name", ["curves.png", "curves.svg"])
def test_the_command_writes_the_figure(tmp_path, name):
    a, b = run_dir(tmp_path / "a"), run_dir(tmp_path / "b")
    out = tmp_path / name
    r = CliRunner().invoke(main, ["plot", str(a), str(b), "--out", str(out), "--x", "epoch"])
    assert r.exit_code == 0, r.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data[:400]
    if name.endswith(".svg"):  # the runs are named in the legend
        assert str(a).encode() in data and str(b).encode() in data


def test_errors(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["plot", str(empty), "--out", str(tmp_path / "c.png")])
    assert r.exit_code == 1 and f"{empty}: no metrics.jsonl" in r.output
    r = CliRunner().invoke(main, ["plot", str(empty), "--out", str(tmp_path / "c.pdf")])
    assert r.exit_code == 2 and "does not end in .png or .svg" in r.output
    good = run_dir(tmp_path / "good")  # of several runs, the others are plotted
    r = CliRunner().invoke(main, ["plot", str(good), str(empty), "--out", str(tmp_path / "d.png")])
    assert r.exit_code == 0 and (tmp_path / "d.png").exists(), r.output
    assert f"skipped {empty}: no metrics.jsonl" in r.stderr and "wrote" in r.stderr
    assert "1 run" in r.stderr
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    r = CliRunner().invoke(main, ["plot", str(run_dir(tmp_path / "a")), "--out",
                                  str(tmp_path / "c.png")])  # fmt: skip
    assert r.exit_code == 1
    assert "lstm-lm plot needs matplotlib: pip install 'lstm-lm[plot]'" in r.output
