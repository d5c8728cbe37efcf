"""Arrows point down: the import rules of docs/architecture.md, read from the code.

Every ``import`` and ``from ... import`` of the project's own packages counts,
wherever it stands (module level, inside a function, under ``TYPE_CHECKING``).
A *unit* is a top-level package, except ``gateway``, whose rooms are units of
their own (``gateway.wire``, ``gateway.edge``, ``gateway.sequencer``,
``gateway.clients``, ``gateway.entry``): the gateway is a house of rooms, not
one package, and the rules below are about its rooms.  There is no list of
tolerated imports: a new violation fails.

``python -m tests.test_layers`` prints the unit import edges with their counts.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("engine", "persistence", "ledger", "config", "gateway", "services", "simulators")
PACKAGES = (*PRODUCT, "bench", "tests")
ROOMS = ("wire", "public", "sequencer", "link", "edge", "clients", "entry")

# The floors of docs/architecture.md: a unit imports only units on lower floors.
FLOORS: dict[str, int] = {
    "engine": 1,
    "persistence": 1,
    "config": 1,
    "ledger": 2,
    "gateway.wire": 3,
    "gateway.public": 4,
    "gateway.sequencer": 4,
    "services": 4,
    "gateway.link": 5,
    "gateway.edge": 6,
    "gateway.clients": 6,
    "simulators": 7,
    "gateway.entry": 8,
    "bench": 9,
    "tests": 10,
}

MAY_IMPORT: dict[str, frozenset[str]] = {
    "engine": frozenset(),
    "persistence": frozenset(),
    "config": frozenset(),
    "ledger": frozenset({"engine", "persistence"}),
    # the wire every side shares: frames, schema, translation, sockets, HTTP helpers
    "gateway.wire": frozenset({"engine", "config"}),
    # the sequencer orders, applies and journals commands; it knows nothing of frames
    "gateway.sequencer": frozenset({"engine", "ledger", "persistence", "config"}),
    "gateway.public": frozenset({"engine", "ledger", "config", "gateway.wire"}),
    # the companions read the ledger and talk the wire; never the edge or the sequencer
    "services": frozenset({"engine", "ledger", "persistence", "config", "gateway.wire"}),
}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "gateway" and len(parts) > 1:
        return f"gateway.{parts[1]}"
    return parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module ``source`` names in an import: ``from a import b`` gives ``a.b``
    when ``a`` is a package face (so ``from gateway import wire`` is the wire)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = here[: len(here) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target in PACKAGES:
                yield from (f"{target}.{alias.name}" for alias in node.names)
            else:
                yield target


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def unit_edges(files: Iterable[Path] | None = None) -> Counter[tuple[str, str]]:
    """(importing unit, imported unit) -> number of import statements' targets."""
    edges: Counter[tuple[str, str]] = Counter()
    for path in files if files is not None else source_files():
        module = _module_name(path)
        here = unit_of(module)
        assert here is not None
        for target in imports_of(path.read_text(), module, path.name == "__init__.py"):
            there = unit_of(target)
            if there is not None and there != here:
                edges[here, there] += 1
    return edges


def violations(edges: Iterable[tuple[str, str]]) -> list[str]:
    edges = set(edges)
    found = []
    for here, there in sorted(edges):
        if here not in FLOORS or there not in FLOORS:
            found.append(f"{here} -> {there}: a unit without a floor")
        elif FLOORS[there] >= FLOORS[here]:
            found.append(f"{here} (floor {FLOORS[here]}) imports {there} (floor {FLOORS[there]})")
        allowed = MAY_IMPORT.get(here)
        if allowed is not None and there not in allowed:
            found.append(f"{here} imports {there}")
        if here.split(".")[0] in PRODUCT and there in ("bench", "tests"):
            found.append(f"{here} (product) imports {there}")
    found.extend(f"cycle: {' -> '.join(c)}" for c in cycles(edges))
    return found


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle per strongly connected group of more than one unit."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    found, state, stack = [], dict.fromkeys(graph, 0), []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node)
    return found


# ------------------------------------------------------------------ the tests


def test_the_gateway_is_only_rooms() -> None:
    """No module stands loose in gateway/: each belongs to a room."""
    loose = [p.name for p in (ROOT / "gateway").glob("*.py") if p.name != "__init__.py"]
    rooms = sorted(p.name for p in (ROOT / "gateway").iterdir() if (p / "__init__.py").exists())
    assert loose == []
    assert rooms == sorted(ROOMS)
    assert {f"gateway.{r}" for r in ROOMS} | set(PACKAGES) - {"gateway"} == set(FLOORS)


def test_arrows_point_down() -> None:
    edges = unit_edges()
    assert ("gateway.entry", "services") in edges  # the reader sees the whole tree
    assert violations(edges) == []


def test_a_new_upward_arrow_is_caught(tmp_path: Path) -> None:
    """The checker itself: an import that breaks each rule is reported."""
    edges = set(unit_edges())
    assert violations(edges | {("ledger", "gateway.sequencer")}) != []
    assert violations(edges | {("engine", "config")}) != []
    assert violations(edges | {("services", "gateway.edge")}) != []
    assert violations(edges | {("gateway.sequencer", "gateway.wire")}) != []
    assert violations(edges | {("gateway.edge", "bench")}) != []
    assert violations(edges | {("simulators", "gateway.entry")}) != []  # a cycle
    assert violations(edges | {("gateway.clients", "gateway.edge")}) != []  # one floor
    assert cycles({("a", "b"), ("b", "c"), ("c", "a")}) == [["a", "b", "c", "a"]]
    module = "services.example"
    lazy = "def f():\n    from gateway.edge import server\n    from ..gateway import entry\n"
    assert sorted(imports_of(lazy, module, False)) == ["gateway.edge", "gateway.entry"]


if __name__ == "__main__":
    for (a, b), n in sorted(unit_edges().items()):
        if a != "tests":
            print(f"{a} -> {b} ({n})")
