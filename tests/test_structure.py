"""The package's structure, read from its source (ast): no import circle between its modules,
the terminal and processes touched only by the CLI package, no library module that prints."""

import ast
from pathlib import Path

import lstm_lm

PACKAGE = Path(lstm_lm.__file__).parent
CLI_ONLY = {"click", "rich", "subprocess"}  # imported by lstm_lm.cli alone


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name, parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of import nodes under `if TYPE_CHECKING:` (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(name: str, tree: ast.Module, known: set[str]) -> tuple[set[str], set[str]]:
    """The package's modules that `name` imports (anywhere in it, lazily too), and the
    top-level names of everything else it imports."""
    ours, others = set(), set()
    skipped = type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    ours.add(alias.name)
                else:
                    others.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("lstm_lm"):
                others.add(node.module.split(".")[0])
                continue
            for alias in node.names:  # `from lstm_lm import cache` imports a module
                sub = f"{node.module}.{alias.name}"
                ours.add(sub if sub in known else node.module)
    ours.discard(name)
    ours.discard("lstm_lm")  # the package's own __init__: its error types, no imports
    return {m for m in ours if m in known}, others


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as the list of its nodes (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_circle_between_the_modules():
    trees = modules()
    graph = {name: imports(name, tree, set(trees))[0] for name, tree in trees.items()}
    assert "lstm_lm.checkpoint" in graph["lstm_lm.cache"]  # the graph sees our imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_click_rich_and_subprocess_only_in_the_cli_package():
    trees = modules()
    for name, tree in trees.items():
        if name == "lstm_lm.cli" or name.startswith("lstm_lm.cli."):
            continue
        used = imports(name, tree, set(trees))[1] & CLI_ONLY
        assert not used, f"{name} imports {', '.join(sorted(used))}: that belongs in lstm_lm.cli"


def writes_to_terminal(tree: ast.Module) -> list[int]:
    """Lines that call print() or write to sys.stdout / sys.stderr."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "print":
            lines.append(node.lineno)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute):
            owner = f.value
            if getattr(owner.value, "id", None) == "sys" and owner.attr in ("stdout", "stderr"):
                if f.attr in ("write", "writelines"):
                    lines.append(node.lineno)
    return lines


def test_no_library_module_prints():
    assert writes_to_terminal(ast.parse("import sys\nprint(1)\nsys.stderr.write('x')")) == [2, 3]
    for name, tree in modules().items():
        if name == "lstm_lm.cli" or name.startswith("lstm_lm.cli."):
            continue
        assert not writes_to_terminal(tree), f"{name} writes to the terminal: lines " + ", ".join(
            map(str, writes_to_terminal(tree))
        )
