"""The layering docs/architecture.md describes, checked from the source's own imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tunevault"
# Top to bottom; a module imports from its own layer or lower ones.
LAYERS = [
    {"commands", "__main__"},
    {"server"},
    {"service"},
    {"client", "publisher", "integrations"},
    {"merge"},
    {"archive", "metadata", "storage"},
    {"layout", "settings", "configfile", "errors", "models", "__init__"},
]
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def imports(path: Path) -> set[str]:
    """Every tunevault module this file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("tunevault"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tunevault"))
    return found


def resolved(name: str, known: dict[str, Path]) -> str | None:
    """The module an imported name lives in (a name may be a class in a module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {resolved(i, known) for i in imports(path)}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def test_every_top_level_module_has_a_layer() -> None:
    for name in modules():
        layer(name)  # StopIteration names a module the table above does not place


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{src} -> {dst}"
        for src, targets in graph().items()
        for dst in targets
        if layer(dst) < layer(src)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    # Package __init__ files re-export their own submodules: not a cycle of design.
    edges = {
        src: {d for d in dsts if not (src.endswith(d) or d.startswith(src + "."))}
        for src, dsts in edges.items()
    }
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def route_modules() -> list[str]:
    return sorted(
        name
        for name, path in modules().items()
        if name.startswith("tunevault.server.") and "RouteTableDef()" in path.read_text()
    )


def test_routes_call_the_domain_not_the_stores() -> None:
    assert route_modules(), "no route module found: the check would pass vacuously"
    edges = graph()
    offending = [
        f"{name} -> {dst}"
        for name in route_modules()
        for dst in edges[name]
        if dst.startswith(("tunevault.metadata", "tunevault.storage"))
    ]
    assert offending == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=str)
def test_functions_fit_on_a_screen(path: Path) -> None:
    if "migrations" in path.parts:
        return  # a schema is one long statement of what is
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def sql_uses(source: str) -> list[str]:
    """What in a module writes SQL: the tables, an engine, or sqlalchemy beyond its errors
    (catching IntegrityError, telling an outage apart) and make_url (naming a database)."""
    allowed: dict[str, set[str] | None] = {
        "sqlalchemy.exc": None,
        "sqlalchemy.engine": {"make_url"},
    }
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if node.module.startswith("tunevault.metadata.tables") or (
                node.module == "tunevault.metadata" and "tables" in names
            ):
                found.append(f"line {node.lineno}: imports the tables")
            elif node.module.startswith("sqlalchemy") and (
                node.module not in allowed or names - (allowed[node.module] or names)
            ):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute):
            if node.attr == "engine":
                found.append(f"line {node.lineno}: .engine")
            elif isinstance(node.value, ast.Name) and node.value.id == "sa" and node.attr != "exc":
                found.append(f"line {node.lineno}: sa.{node.attr}")
    return found


def test_the_domain_leaves_sql_to_metadata() -> None:
    domain = [p for n, p in modules().items() if n.startswith("tunevault.service.")]
    assert len(domain) > 10, "no domain module found: the check would pass vacuously"
    offending = {str(p.relative_to(SRC)): u for p in domain if (u := sql_uses(p.read_text()))}
    assert offending == {}


def test_the_sql_check_sees_sql() -> None:
    probe = (
        "import sqlalchemy as sa\n"
        "from sqlalchemy import select\n"
        "from tunevault.metadata import tables as t\n"
        "with svc.store.engine.begin() as conn:\n"
        "    conn.execute(sa.select(t.fine_tunes))\n"
    )
    assert len(sql_uses(probe)) == 4
    assert sql_uses("import sqlalchemy as sa\nsa.exc.IntegrityError\n") == []
