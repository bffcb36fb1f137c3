"""The same text at the three token levels, the same minutes each: which reads it best, in
bits per character of its test split (what docs/results.md's table of levels comes from).

    python examples/compare_levels.py TEXT --minutes 10 --out runs/levels

TEXT is cut at line breaks into train / valid / test (90 / 5 / 5%); each level trains with
what `lstm-lm train --level LEVEL` does by default (word and bpe: the small preset, char: the
char preset), stopped by --minutes, and is evaluated on the test split. Without TEXT it
makes one of English prose: the docstrings of Python's standard library.
"""

import argparse
import ast
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

LEVELS = ("word", "char", "bpe")


def docstrings(limit: int) -> str:
    """Up to `limit` characters of the standard library's docstrings, one paragraph a line."""
    out, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node)
                for para in (doc or "").split("\n\n"):
                    line = " ".join(para.split())
                    if len(line) > 40:
                        out.append(line)
                        size += len(line) + 1
                        if size >= limit:
                            return "\n".join(out) + "\n"
    return "\n".join(out) + "\n"


def split(text: str, into: Path) -> None:
    """train.txt, valid.txt, test.txt: 90, 5 and 5% of the lines, in order."""
    lines = text.splitlines(keepends=True)
    a, b = int(len(lines) * 0.9), int(len(lines) * 0.95)
    into.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", lines[:a]), ("valid", lines[a:b]), ("test", lines[b:])):
        (into / f"{name}.txt").write_text("".join(part), encoding="utf-8")


def lstm_lm(*args) -> str:
    run = subprocess.run([sys.executable, "-m", "lstm_lm", *map(str, args)], text=True,
                         capture_output=True)  # fmt: skip
    if run.returncode != 0:
        sys.exit(run.stderr.strip().splitlines()[-1])
    return run.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("text", nargs="?", help="a UTF-8 text file (default: Python's docstrings)")
    ap.add_argument("--chars", type=int, default=2_000_000, help="docstrings to take")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each level")
    ap.add_argument("--out", type=Path, default=Path("runs/levels"))
    ap.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    a = ap.parse_args()
    text = Path(a.text).read_text(encoding="utf-8") if a.text else docstrings(a.chars)
    split(text, a.out / "data")
    rows = []
    for level in a.levels:
        run = a.out / level
        lstm_lm("train", "--level", level, "--data", a.out / "data", "--max-minutes", a.minutes,
                "--out", run, "--quiet")  # fmt: skip
        result = json.loads(lstm_lm("eval", run, "--split", "test", "--json"))
        rows.append({"level": level, **result})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(text):,} characters; {a.minutes:g} minutes a level")
    print("level  test tokens  perplexity  bits/char")
    for r in rows:
        print(f"{r['level']:5}  {r['tokens']:11,}  {r['ppl']:10.2f}  {r['bpc']:9.4f}")


if __name__ == "__main__":
    main()
