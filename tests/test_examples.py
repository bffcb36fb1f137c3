"""Every example runs (smoke settings) and prints what it shows."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import missing, require_module

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def torch_python() -> str:
    """A Python with PyTorch, which is never our dependency: LSTM_LM_TORCH_PYTHON (CI makes a
    venv of its own for it, as docs/speed.md says), else this one where torch is installed."""
    python = os.environ.get("LSTM_LM_TORCH_PYTHON")
    if python:
        return python
    try:
        import torch  # noqa: F401
    except ImportError as e:
        missing("torch", f"could not import 'torch' ({e}); LSTM_LM_TORCH_PYTHON names another "
                "Python that has it")  # fmt: skip
    return sys.executable


def run(name, *args, cwd=None, python=sys.executable):
    out = subprocess.run(
        [python, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_sin_to_cos(tmp_path):
    out = run("sin_to_cos.py", "--steps", 150, cwd=tmp_path)
    mse = [float(m) for m in re.findall(r"^\s*\d+\s+([\d.]+)$", out, re.M)]
    assert mse[0] > 0.3 and mse[-1] < 0.1  # from chance (0.5) to well below it
    assert "held-out wave" in out


def test_conditional_captions():
    out = run("conditional_captions.py", "--steps", 300)
    err = float(re.search(r"largest relative error ([\d.e+-]+) \(ok\)", out).group(1))
    assert err < 1e-6  # the projection h0 = feat W_proj + b_proj is gradient-checked
    right = int(re.search(r"(\d+)/200 exact", out).group(1))
    assert right > 40  # far above chance (1 in 32 combinations)
    assert out.count("greedy '") == 4


def test_train_on_your_text(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the rain in spain stays mainly in the plain\n" * 80)
    out = run(
        "train_on_your_text.py", text, "--minutes", 0.05, "--hidden", 32, "--seed-text", "the "
    )
    assert "valid" in out and "bpc" in out
    assert re.search(r"--- sample \(seed 'the ', temperature 0.8\) ---\nthe ", out)


def test_load_in_pytorch(markov_chain_run, tmp_path, torch_python):
    """The exported model evaluated in PyTorch gives lstm-lm eval's perplexity."""
    import json

    from click.testing import CliRunner

    from lstm_lm.cli import main

    out, _ = markov_chain_run
    f = tmp_path / "m.safetensors"
    assert CliRunner().invoke(main, ["export", str(out), str(f)]).exit_code == 0
    ours = json.loads(
        CliRunner().invoke(main, ["eval", str(f), "--batch-size", "1", "--json"]).stdout
    )
    theirs = json.loads(run("load_in_pytorch.py", f, python=torch_python))
    assert theirs["tokens"] == ours["tokens"]
    assert abs(theirs["ppl"] / ours["ppl"] - 1) < 1e-4


@pytest.mark.parametrize("output", [["--softmax", "adaptive", "--cutoffs", "2,4"], ["--tied"]])
def test_load_in_pytorch_adaptive_or_tied(markov_corpus, tmp_path, output, torch_python):
    """An adaptive softmax loads into nn.AdaptiveLogSoftmaxWithLoss, a tied model into
    PyTorch's word_language_model --tied (decoder.weight = encoder.weight): eval's perplexity
    too."""
    import json

    from click.testing import CliRunner

    from lstm_lm.cli import main

    data, _ = markov_corpus
    opts = "--layers 2 --hidden 16 --batch-size 8 --bptt 10 --max-steps 60 --quiet"
    args = [*output, "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(main, ["train", "--data", str(data), *opts.split(), *args])
    assert r.exit_code == 0, r.output
    f = tmp_path / "m.safetensors"
    assert CliRunner().invoke(main, ["export", str(tmp_path / "r"), str(f)]).exit_code == 0
    ours = json.loads(
        CliRunner().invoke(main, ["eval", str(f), "--batch-size", "1", "--json"]).stdout
    )
    theirs = json.loads(run("load_in_pytorch.py", f, python=torch_python))
    assert theirs["tokens"] == ours["tokens"]
    assert abs(theirs["ppl"] / ours["ppl"] - 1) < 1e-4


@pytest.mark.parametrize(
    "args, emb, tied",
    [
        (["--level", "char", "--hidden", "64", "--vocab", "50"], 50, False),  # as our one-hot
        (["--hidden", "64", "--vocab", "500"], 64, False),  # the published word model
        (["--hidden", "64", "--vocab", "500", "--tied"], 64, True),
        (["--level", "char", "--hidden", "64", "--vocab", "50", "--emb", "64"], 64, False),
    ],
)
def test_bench_pytorch_measures_the_input_it_says(args, emb, tied, torch_python):
    """The reference's LSTM reads the width the JSON reports, V at the character level unless
    told otherwise, and --tied shares the decoder's weight."""
    import json

    small = ["--layers", "1", "--batch-size", "4", "--bptt", "5", "--repeats", "2"]
    out = run("bench_pytorch.py", *args, *small, python=torch_python)
    out = json.loads(out.strip().splitlines()[-1])
    assert out["emb"] == emb and out["tied"] is tied
    assert out["train_tokens_per_s"] > 0 and out["eval_tokens_per_s"] > 0


def test_compare_levels(tmp_path):
    """Three levels on the same text, the same minutes: a table of their test bits/char."""
    require_module("tokenizers", "bpe")
    out = run("compare_levels.py", "--chars", 30_000, "--minutes", 0.02, "--out", tmp_path / "l")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["level"] for r in rows] == ["word", "char", "bpe"]
    assert all(0 < r["bpc"] < 10 and r["split"] == "test" for r in rows)
    assert (tmp_path / "l" / "data" / "test.txt").stat().st_size > 0
