"""The house plan, enforced: every import (top-level, lazy or for typing) points down or sideways.

Layers, bottom up (docs/architecture.md draws them):

    0 core    peermesh.core (and certs.spiffe, certs.errors): value types, error roots, files
    1 net     peermesh.net: http, tls, the peer pool, the admin server, the RPC router
    2 cores   gossip, certs, sans-IO cores of policy, traffic, ca and config
    3 shells  trio shells: membership, proxy, observability, ca flows, policy sync/API
    4 agent   peermesh.agent: the composition root
    5 cli     peermesh.cli (one module per command group)

A module may import its own layer or lower ones, never a higher one; no two modules may
import each other, directly or round a loop; ``gossip`` and ``certs`` are libraries and
import nothing from ``peermesh``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("peermesh", "gossip", "certs")
LAYER_NAMES = ("core", "net", "cores", "shells", "agent", "cli")

# The most specific prefix wins.
LAYERS: dict[str, int] = {
    "peermesh.core": 0,
    "peermesh.net": 1,
    "gossip": 2,
    "certs": 2,
    "certs.spiffe": 0,  # the SPIFFE ID is the value type every layer names peers by
    "certs.errors": 0,  # the library's error root, under the SPIFFE ID's errors
    "peermesh.traffic": 2,
    "peermesh.config": 2,
    "peermesh.policy": 2,
    "peermesh.policy.journal": 3,
    "peermesh.policy.persistence": 3,
    "peermesh.policy.recovery": 3,
    "peermesh.policy.replicator": 3,
    "peermesh.policy.api": 3,
    "peermesh.ca": 3,
    "peermesh.ca.tokens": 2,
    "peermesh.ca.signer": 2,
    "peermesh.ca.errors": 2,
    "peermesh.ca.settings": 2,
    "peermesh.capture": 2,
    "peermesh.capture.dnsserver": 3,
    "peermesh.capture.nft": 3,
    "peermesh.membership": 3,
    "peermesh.k8s": 2,
    "peermesh.k8s.webhook": 3,
    "peermesh.proxy": 3,
    "peermesh.observability": 3,
    "peermesh.agent": 4,
    "peermesh.cli": 5,
    "peermesh.__main__": 5,
    "peermesh": 0,
}

LIBRARIES = ("gossip", "certs")

# Edges that break the plan today and are being removed; the list only ever shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def _imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def _owner(name: str) -> str | None:
    """The project module an import name refers to (a package, a module or a name in one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges() -> dict[tuple[str, str], int]:
    """(importer, imported) -> the first line of the import, for project modules only."""
    edges: dict[tuple[str, str], int] = {}
    for module, path in MODULES.items():
        for name, line in _imported_names(module, path):
            target = _owner(name)
            if target is None or target == module:
                continue
            if module.startswith(target + "."):
                continue  # a submodule naming its own package (``from . import x``)
            edges.setdefault((module, target), line)
    return edges


def layer_of(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{module} has no layer: add it to LAYERS"
    return LAYERS[best]


def violations() -> list[str]:
    out = []
    for (src, dst), line in sorted(import_edges().items()):
        if (src, dst) in KNOWN_VIOLATIONS:
            continue
        path = MODULES[src]
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
        if src.split(".")[0] in LIBRARIES and dst.split(".")[0] == "peermesh":
            out.append(f"{where}: library {src} imports {dst}")
            continue
        a, b = layer_of(src), layer_of(dst)
        if b > a:
            out.append(
                f"{where}: {src} ({LAYER_NAMES[a]}) imports {dst} ({LAYER_NAMES[b]}), a layer above"
            )
    return out


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {m: [] for m in MODULES}
    for src, dst in import_edges():
        if (src, dst) not in KNOWN_VIOLATIONS:
            graph[src].append(dst)
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert violations() == []


def test_no_import_cycles() -> None:
    edges = import_edges()
    described = []
    for component in cycles():
        inside = set(component)
        loop = [
            f"{s} -> {d} (line {edges[(s, d)]})"
            for (s, d) in sorted(edges)
            if s in inside and d in inside and (s, d) not in KNOWN_VIOLATIONS
        ]
        described.append("cycle: " + "; ".join(loop))
    assert described == []


def test_known_violations_are_still_real() -> None:
    """An entry fixed in the code must leave the list, so the list can only shrink."""
    stale = sorted(KNOWN_VIOLATIONS - set(import_edges()))
    assert stale == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from peermesh.agent import Agent\n", "imports peermesh.agent (agent), a layer above"),
        ("from peermesh import cli\n", "imports peermesh.cli (cli), a layer above"),
    ],
)
def test_an_upward_import_is_named_with_its_edge(
    source: str, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The checker is not vacuous: a planted upward import in the core layer is reported."""
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    monkeypatch.setitem(MODULES, "peermesh.core.planted", planted)
    found = violations()
    assert any("peermesh.core.planted (core) " + expected in line for line in found), found


def test_a_planted_cycle_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("import peermesh.core.second\n")
    second.write_text("from peermesh.core import first\n")
    monkeypatch.setitem(MODULES, "peermesh.core.first", first)
    monkeypatch.setitem(MODULES, "peermesh.core.second", second)
    assert ["peermesh.core.first", "peermesh.core.second"] in cycles()
