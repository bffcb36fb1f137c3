"""README.md and docs/: links that lead somewhere, a quick tour whose commands the CLI
accepts, and `lstm-lm --help` in the order a newcomer needs the commands."""

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lstm_lm.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "examples" / "results" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(page: Path) -> list[str]:
    """The page's lines outside code: fenced blocks and 4-space indented blocks left out."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page) if re.match(r"#+ ", line)}


def links(page: Path) -> list[str]:
    return [m.group(1) for line in prose(page) for m in LINK.finditer(line)]


def test_the_pages_exist():
    assert {p.name for p in DOCS} >= {"usage.md", "training.md", "results.md", "speed.md",
                                      "parallel.md", "visualise.md", "design.md",
                                      "library.md"}  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_its_heading(page):
    relative = [u for u in links(page) if not re.match(r"[a-z]+:", u)]
    assert relative, "a page with no links to the others"
    for url in relative:
        path, _, anchor = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {url} leads nowhere"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {url}"
            assert anchor in anchors(target), f"{page.name}: no heading for #{anchor} in {path}"


def test_the_slug_follows_github():
    assert slug(" `lstm-lm eval CKPT`") == "lstm-lm-eval-ckpt"
    assert slug("Fine-tuning: `lstm-lm train --init-from CKPT`") == (
        "fine-tuning-lstm-lm-train---init-from-ckpt"
    )
    assert slug("Where a step's time goes") == "where-a-steps-time-goes"


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[there](missing.md) and [here](#title) and [no](#nowhere)\n")
    assert links(page) == ["missing.md", "#title", "#nowhere"]
    assert anchors(page) == {"title"}


def test_the_readme_is_read_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    # the two set-up commands: one installs and trains, one installs and tests
    assert "    python3 -m venv .venv && . .venv/bin/activate && pip install . && lstm-lm train " \
           "--preset small" in lines  # fmt: skip
    assert '    python3 -m venv .venv && . .venv/bin/activate && pip install ".[test]" && pytest' \
        in lines  # fmt: skip
    linked = {Path(u.partition("#")[0]).name for u in links(README) if u.startswith("docs/")}
    assert linked >= {p.name for p in DOCS}, "a docs page the README does not list"


def tour_commands() -> list[list[str]]:
    text = README.read_text()
    tour = text[text.index("## A quick tour") :]
    tour = tour[: tour.index("\n## ", 1)]
    return [shlex.split(line.strip()[2:]) for line in tour.splitlines()
            if line.strip().startswith("$ lstm-lm ")]  # fmt: skip


def test_the_quick_tour_runs_real_commands_with_real_options(tmp_path, monkeypatch):
    commands = tour_commands()
    assert {c[1] for c in commands} >= {"train", "sample", "eval"}
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        for arg in argv[2:]:  # the paths it names exist (a run directory), as after training
            if "/" in arg and not arg.startswith("-"):
                (tmp_path / arg).mkdir(parents=True, exist_ok=True)
        command = main.get_command(click.Context(main), argv[1])
        assert command is not None, f"no command {argv[1]!r}"
        with command.make_context(argv[1], argv[2:]) as ctx:  # a bad option raises here
            assert ctx.params


def test_an_unknown_option_in_the_tour_would_fail():
    command = main.get_command(click.Context(main), "sample")
    with pytest.raises(click.UsageError):
        command.make_context("sample", ["runs/x", "--no-such-option"])


def test_help_lists_the_commands_in_a_newcomers_order():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    listed = r.output[r.output.index("Commands:") :].splitlines()[1:]
    names = [line.split()[0] for line in listed if line.strip()]
    assert names == list(COMMANDS) and set(names) == set(main.commands)
    assert names[:3] == ["train", "sample", "eval"]
    for line in listed:  # one line each, said in full
        assert "..." not in line and line.split(None, 1)[1] in COMMANDS.values()
