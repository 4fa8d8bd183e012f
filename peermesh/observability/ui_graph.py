"""``/v1/mesh/graph``: the merged golden metrics laid out for a page of a given width
(sans-IO: the merged stats and the agents behind each service in, JSON out).

Every count the page shows is computed here, so the page only draws: per service the
requests, RPS, success rate (non-5xx, as Linkerd counts it) and, apart, the 5xx, denied
(403) and limited (429) answers, so that a policy refusal is not hidden inside a success
rate that counts it as a success; per edge the same counts and the label text drawn on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from peermesh.core.errors import PeermeshError
from peermesh.observability.ui_layout import (
    MAX_WIDTH,
    MIN_WIDTH,
    Box,
    EdgeIn,
    Layout,
    elide,
    layout,
)

DEFAULT_WIDTH = 1200
MAX_QUERY = 256  # characters of query string read at all
MAX_AGENTS = 64  # agents named per service (the count is always exact)
DETAIL_CHAR = 6.2  # px per character of a node's second line (10px monospace: 6.0px)
UNHEALTHY = 0.95  # a service whose success rate is below this is drawn red
COUNTS = ("requests", "rps", "success_rate", "errors", "denied", "limited")


class GraphQueryError(PeermeshError, ValueError):
    """A ``/v1/mesh/graph`` query this agent will not lay out."""

    default_status = 400
    default_code = "invalid-graph-query"

    def __init__(self, reason: str) -> None:
        super().__init__(
            reason,
            hint=f"ask for /v1/mesh/graph?width=N with N a whole number of pixels,"
            f" {MIN_WIDTH} to {MAX_WIDTH} (default {DEFAULT_WIDTH})",
        )


@dataclass(frozen=True)
class GraphQuery:
    width: int = DEFAULT_WIDTH

    @classmethod
    def from_path(cls, path: str) -> GraphQuery:
        """The query of ``path``, parsed strictly: only ``width``, once, in range."""
        query = urlsplit(path).query
        if len(query) > MAX_QUERY:
            raise GraphQueryError(f"query string longer than {MAX_QUERY} characters")
        try:
            pairs = parse_qsl(
                query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=4
            )
        except ValueError as exc:
            raise GraphQueryError(f"malformed query string: {exc}") from None
        unknown = sorted({k for k, _ in pairs} - {"width"})
        if unknown:
            raise GraphQueryError(f"unknown query parameter {unknown[0][:40]!r}")
        widths = [v for k, v in pairs if k == "width"]
        if not widths:
            return cls()
        if len(widths) > 1:
            raise GraphQueryError("width given more than once")
        text = widths[0]
        # isdecimal() admits other scripts' digits, which int() would read: ASCII only.
        if not (text.isascii() and text.isdigit()) or len(text) > 5:
            raise GraphQueryError(f"width {text[:20]!r} is not a whole number of pixels")
        width = int(text)
        if not MIN_WIDTH <= width <= MAX_WIDTH:
            raise GraphQueryError(f"width {width} is outside {MIN_WIDTH}..{MAX_WIDTH}")
        return cls(width)


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def refusals(counts: Mapping[str, Any]) -> list[str]:
    """The non-zero 5xx, denied and limited counts, as they are written on the page."""
    out = []
    for key, word in (("errors", "5xx"), ("denied", "denied"), ("limited", "limited")):
        if counts.get(key):
            out.append(f"{counts[key]} {word}")
    return out


def edge_label(edge: Mapping[str, Any]) -> str:
    """``0.67 rps · 100.0% ok · 3 denied``: what is written on an edge."""
    parts = [f"{edge.get('rps') or 0:.2f} rps", f"{pct(edge.get('success_rate'))} ok"]
    return " · ".join(parts + refusals(edge))


def _counts(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    out = {key: raw.get(key) for key in COUNTS}
    for key in ("requests", "errors", "denied", "limited"):
        out[key] = int(out[key] or 0)
    out["rps"] = float(out["rps"] or 0.0)
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        out[key] = raw.get(key)
    return out


LEGEND = (
    {"key": "node", "text": "a service: name, requests per second, success rate (non-5xx)"},
    {"key": "unhealthy", "text": f"red: success rate below {100 * UNHEALTHY:.0f}%"},
    {"key": "refused", "text": "a count of denied, limited or 5xx answers"},
    {"key": "edge", "text": "caller → callee, labelled RPS · success rate (non-5xx)"},
    {"key": "5xx", "text": "5xx: server errors (count against the success rate)"},
    {"key": "denied", "text": "denied: 403, refused by authorization policy"},
    {"key": "limited", "text": "limited: 429, refused by a rate limit"},
    {"key": "shelf", "text": "a label with no room on its edge, under the graph, named"},
)


def mesh_graph(
    stats: Mapping[str, Any], agents: Mapping[str, Sequence[str]], width: int
) -> dict[str, Any]:
    """The page's JSON: laid-out nodes and edges with their counts, overflow, legend."""
    services = {s["service"]: s for s in stats.get("services", ())}
    edges = {(e["source"], e["destination"]): e for e in stats.get("edges", ())}
    # A caller seen only from its callee's side still gets a node.
    names = list(services)
    for a, b in edges:
        names.extend((a, b))
    names = sorted(set(names))
    lines = {name: _lines(_counts(services.get(name))) for name in names}
    result = layout(
        names,
        [EdgeIn(a, b, edge_label(e)) for (a, b), e in edges.items()],
        width,
        {name: max(map(len, pair)) * DETAIL_CHAR + 12 for name, pair in lines.items()},
    )
    nodes = [
        _node(n.name, n.text, n.box, services.get(n.name), lines[n.name], agents)
        for n in result.nodes
    ]
    drawn = [
        {
            "source": e.source,
            "destination": e.destination,
            "path": e.path,
            "points": [[round(x, 1), round(y, 1)] for x, y in e.points],
            "label": e.label,
            "label_box": e.label_box.to_wire(),
            "on_shelf": e.on_shelf,
            "counts": _counts(edges.get((e.source, e.destination))),
        }
        for e in result.edges
    ]
    return {
        "node": stats.get("node"),
        "nodes_reporting": list(stats.get("nodes", ())),
        "errors": list(stats.get("errors", ())),
        "width": result.width,
        "height": result.height,
        "nodes": nodes,
        "edges": drawn,
        "overflow": _overflow(result),
        "legend": list(LEGEND),
    }


def _lines(counts: Mapping[str, Any]) -> tuple[str, str]:
    """A node's lines under its name: its rate and success, then what it refused."""
    detail = (
        f"{counts['rps']:.2f}/s {pct(counts['success_rate'])}"
        if counts["requests"]
        else "no calls in"
    )
    return detail, " · ".join(refusals(counts))


def _node(
    name: str,
    text: str,
    box: Box,
    raw: Mapping[str, Any] | None,
    lines: tuple[str, str],
    agents: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    counts = _counts(raw)
    behind = sorted(agents.get(name, ()))
    # A node too narrow for its lines (a narrow page) elides them; the table has all.
    cells = max(4, int((box.w - 8) // DETAIL_CHAR))
    rate = counts["success_rate"]
    return {
        "service": name,
        "text": text,
        "detail": elide(lines[0], cells),
        "refused": elide(lines[1], cells),
        "box": box.to_wire(),
        "unhealthy": rate is not None and rate < UNHEALTHY,
        "counts": counts,
        "agents": behind[:MAX_AGENTS],
        "agent_count": len(behind),
    }


def _overflow(result: Layout) -> dict[str, Any]:
    """The strip under the graph: labels with no free spot on their edge, and what the
    drawing caps left out (services and edges past them are not drawn)."""
    shelf = [e for e in result.edges if e.on_shelf]
    top = min((round(e.label_box.y, 1) for e in shelf), default=None)
    return {
        "labels": len(shelf),
        "top": top,
        "left_out": result.left_out,
        "note": (
            f"{result.left_out} services or edges are past the drawing caps and not drawn"
            if result.left_out
            else ""
        ),
    }
