"""The package's shape: every module says its one job first, and no two modules import each other.

The import rule: an edge is an import that runs when a module is imported, at its top level
(inside ``if``, ``try`` and ``with`` blocks too). Imports under ``if TYPE_CHECKING:`` never run,
and imports inside a function run when it is called, after every module has loaded, so neither
is an edge. A package's ``__init__`` importing its submodules is an edge; the implicit import of
a package when one of its submodules is imported is not (Python finishes it first either way).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llm_init"

# Import circles being untangled elsewhere, as (importer, imported) edges left out of the graph.
KNOWN_CIRCLE_EDGES: frozenset[tuple[str, str]] = frozenset()


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            found.append(stmt)
        elif isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                found += _import_time_imports(stmt.body)
            found += _import_time_imports(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, *(h.body for h in stmt.handlers), stmt.orelse,
                          stmt.finalbody):
                found += _import_time_imports(block)
        elif isinstance(stmt, ast.With):
            found += _import_time_imports(stmt.body)
    return found


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Each llm_init module and the llm_init modules it imports when it is imported."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for stmt in _import_time_imports(ast.parse(path.read_text()).body):
            if isinstance(stmt, ast.Import):
                targets |= {_owning_module(a.name, modules) for a in stmt.names}
                continue
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                base = ".".join([*anchor, *([stmt.module] if stmt.module else [])])
            for alias in stmt.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else _owning_module(base, modules))
        graph[name] = {t for t in targets
                       if t is not None and t != name and (name, t) not in KNOWN_CIRCLE_EDGES}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_states_its_job_in_its_first_docstring_line() -> None:
    """Each module under llm_init/ opens with a docstring whose first line is a whole sentence."""
    wrong = []
    for name, path in _modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        lines = (doc or "").splitlines() or [""]
        if (not lines[0].rstrip().endswith((".", "?")) or len(lines[0]) > 99
                or (len(lines) > 1 and lines[1].strip())):
            wrong.append(f"{name}: {lines[0]!r}")
    assert wrong == []


def test_no_import_circle_among_the_modules() -> None:
    """No llm_init module imports, through any chain of imports, a module that imports it."""
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    """A graph with a circle of three modules is reported as that circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_the_imports_that_run_at_import_time() -> None:
    """Top-level imports are edges; imports only for type checking are not."""
    graph = import_graph()
    assert "llm_init.errors" in graph["llm_init.runtime"]
    assert "llm_init.cli.commands" in graph["llm_init.cli"]
    assert "llm_init.stores.postgres" not in graph["llm_init.stores"]
