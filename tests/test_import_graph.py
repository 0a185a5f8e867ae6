"""The house's import rules, read from the code's own imports (no hand-kept list of modules).

1. No import circle anywhere in the code that runs (`pipeline/`, `steps/`, `local/`,
   `function_app.py`): a circle means no part of it can be read, tested or moved alone.
2. The deployable framework (`pipeline/`, `function_app.py`) imports neither `local/` (the
   laptop: emulators, set-up, the CLI) nor a step module: steps are found by name
   (pipeline.framework.registry), like a team's own. The one exception is an entry point
   (`__main__`), which a person runs and nothing imports.

Every import counts, at the top of a module or inside a function: a lazy import still
makes a dependency. Only `if TYPE_CHECKING:` blocks are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "steps", "local")
ENTRY_POINT = "__main__"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path) -> dict[str, Path]:
    found = {"function_app": root / "function_app.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "node_modules" not in path.parts:
                found[_module_name(path, root)] = path
    return {name: path for name, path in found.items() if path.exists()}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names each import statement may load: `from a.b import c` → a.b.c and a.b."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the project modules it imports (a package's `__init__` counts as a module)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = _imported(tree, name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _deployable(module: str) -> bool:
    if module.split(".")[-1] == ENTRY_POINT:
        return False
    return module == "function_app" or module.split(".")[0] == "pipeline"


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if _deployable(module)
        for target in targets
        if target.split(".")[0] in ("local", "steps")
    )


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest import chain (the graph has no circle), for the house's depth."""
    memo: dict[str, list[str]] = {}

    def deepest(node: str) -> list[str]:
        if node not in memo:
            below = [deepest(n) for n in graph.get(node, ())]
            memo[node] = [node, *max(below, key=len, default=[])]
        return memo[node]

    return max((deepest(n) for n in sorted(graph)), key=len, default=[])


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" → ".join(c) for c in found)


def test_deployable_code_imports_neither_local_nor_a_step():
    assert forbidden_imports(import_graph()) == []


def test_the_graph_is_read_from_the_code(tmp_path):
    """The rules catch what they are for, in a small tree written here: a circle through a
    lazy import, a framework module importing a step and one importing local/ — and an
    entry point and a TYPE_CHECKING import are left alone."""
    files = {
        "function_app.py": "from pipeline.engine import runner\n",
        "pipeline/__init__.py": "",
        "pipeline/__main__.py": "from local.cli import main\n",
        "pipeline/engine/__init__.py": "",
        "pipeline/engine/runner.py": "from pipeline.engine.context import Context\n",
        "pipeline/engine/context.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from local import cli\n"
            "def people():\n    from ..people import book\n"
        ),
        "pipeline/people/__init__.py": "",
        "pipeline/people/book.py": "import pipeline.engine.runner\nfrom steps import recognize\n",
        "steps/__init__.py": "",
        "steps/recognize.py": "from pipeline.people import book\n",
        "local/__init__.py": "",
        "local/cli.py": "import pipeline.engine.runner\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert circles(graph) == [
        [
            "pipeline.engine.context",
            "pipeline.engine.runner",
            "pipeline.people.book",
            "steps.recognize",
        ]
    ]
    assert forbidden_imports(graph) == [
        "pipeline.people.book imports steps",
        "pipeline.people.book imports steps.recognize",
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_in_the_graph(package):
    """A folder the rules do not see would be a place a circle could hide."""
    assert any(m == package or m.startswith(package + ".") for m in import_graph())
