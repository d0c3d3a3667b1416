"""The shape of the house, checked: imports run one way, the core stays pure, and only the
edge talks to aioxmpp (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "minimix"
IO_LIBRARIES = {"aioxmpp", "asyncio", "apscheduler", "structlog", "sqlite3", "socket", "ssl", "time", "datetime",
                "subprocess", "os", "pathlib"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, TYPE_CHECKING blocks and functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_import_runs_in_a_circle():
    mods = modules()
    graph = {m: {t for t in imports(p) if t in mods and t != m and not t.startswith(m + ".")} for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert circles == []


def test_the_core_imports_no_io_and_nothing_outside_the_core():
    for module, path in modules().items():
        if not module.startswith("minimix.core"):
            continue
        for name in imports(path):
            top = name.split(".")[0]
            assert top not in IO_LIBRARIES, f"{module} imports {name}"
            assert top != "minimix" or name.startswith("minimix.core"), f"{module} imports {name}"


def test_only_the_edge_imports_aioxmpp():
    for module, path in modules().items():
        if module.startswith("minimix.xmpp"):
            continue
        assert not any(n.split(".")[0] == "aioxmpp" for n in imports(path)), f"{module} imports aioxmpp"
