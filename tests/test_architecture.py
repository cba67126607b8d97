"""The project's structure, checked by reading its source (docs/architecture.md says why).

No import circles among the project's modules (an import anywhere in a file counts,
`if TYPE_CHECKING:` blocks aside); apps depend one way (`portal` on none, `agents` on no
later app); no module uses another app's views, API or templates as a library; no file
outside migrations and tests grows past 600 lines without a comment at its top saying why.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("portal", "agents", "observability", "factory", "servicing", "helpdesk")
# What each app may import from the others: the direction is one-way, kernel first.
MAY_IMPORT = {
    "portal": set(),
    "agents": {"portal"},
    "observability": {"portal", "agents"},
    "factory": {"portal", "agents", "observability"},
    "servicing": {"portal", "agents", "observability", "factory"},
    "helpdesk": {"portal", "agents", "observability", "factory", "servicing"},
}
# Another app's modules that are not a library: its pages, its API and its templates.
PRIVATE_PARTS = ("views", "api", "error_views", "bulk_views", "metrics_views", "templates")
LONG_FILE = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            files[module_name(path)] = path
    return files


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, wherever in the file, TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {module for module in found if module in known and module != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    import sys

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_circles(graph):
    assert cycles(graph) == []


def test_apps_depend_one_way(graph):
    wrong = []
    for module, targets in graph.items():
        app = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != app and other not in MAY_IMPORT[app]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_module_uses_another_apps_pages_or_api(graph):
    wrong = []
    for module, targets in graph.items():
        app = module.split(".")[0]
        for target in targets:
            parts = target.split(".")
            if parts[0] != app and any(part in PRIVATE_PARTS for part in parts[1:]):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


TEMPLATE_REFERENCE = re.compile(r"""["'](\w+)/[\w/.-]+\.html""")


def test_no_module_renders_another_apps_templates():
    wrong = []
    for name, path in source_files().items():
        app = name.split(".")[0]
        for match in TEMPLATE_REFERENCE.finditer(path.read_text()):
            other = match.group(1)
            if other in APPS and other != app and other != "portal":
                wrong.append(f"{name}: {match.group(0)}")
    assert wrong == []


def test_long_files_say_why():
    wrong = []
    for name, path in source_files().items():
        lines = path.read_text().splitlines()
        if len(lines) > LONG_FILE and not any(
            "longer than 600 lines" in line for line in lines[:15]
        ):
            wrong.append(f"{name}: {len(lines)} lines")
    assert wrong == []
