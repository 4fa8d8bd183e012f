"""Where ``/ui`` draws each service, edge and edge label (sans-IO: names and texts in,
boxes and SVG paths out).

Services go in columns by call depth (callers left, callees right) spread over the whole
page width; within a column they are ordered by where their callers sit, which keeps
crossings down. Edges are cubic curves between ports spread along the node sides.
Each edge label is tried at a fixed list of spots along its edge (slid along the curve,
then moved off it) and takes the first spot that is inside the page and clear of every
label already placed and of every node; a label with no free spot goes to a shelf under
the graph, named by its edge. So no two label boxes ever intersect, and the work per
label is bounded by the candidate list times the labels near each spot (a grid index).

Text is drawn in a monospace font, so a box's width follows from its text's length.
"""

from __future__ import annotations

import enum
import math
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

MIN_WIDTH = 480
MAX_WIDTH = 4000
MAX_SERVICES = 120  # services drawn; the rest are only counted (left_out)
MAX_EDGES = 300  # edges drawn
MAX_TEXT = 48  # characters of a service name drawn in a node (the rest elided)

MARGIN = 16
LABEL_CHAR = 6.8  # px per character: 11px monospace is 6.6px, with some slack
LABEL_PAD = 4
LABEL_H = 16
LABEL_GAP = 2  # clear space kept between two labels
NODE_CHAR = 8.0  # px per character of a node's name (13px monospace: 7.8px)
NODE_MIN_W = 96
NODE_H = 44
ROW_H = 110  # vertical distance between nodes of one column
LOOP_H = 44  # how far a self-call's loop rises above its node
SHELF_TOP = 24  # space above the shelf of labels that found no spot on their edge

# Spots along the curve (t) and off it (dy), tried in this order.
SLIDES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85)
OFFSETS = (0, -11, 11, -22, 22, -33, 33)
CELL = 64  # grid index cell size
DETOUR_CLEAR = 20  # how far an arc round other nodes stays from them
DETOUR_GAP = 9  # arcs that share a stretch are drawn this far apart...
DETOUR_LANES = 4  # ...in this many lanes
SAMPLES = 24  # points per curve when measuring how far it reaches


Point = tuple[float, float]
Curve = tuple[Point, Point, Point, Point]  # a cubic Bézier: start, two controls, end


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle: top-left corner, width and height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def intersects(self, other: Box, gap: float = 0.0) -> bool:
        return not (
            self.right + gap <= other.x
            or other.right + gap <= self.x
            or self.bottom + gap <= other.y
            or other.bottom + gap <= self.y
        )

    def inside(self, width: float, height: float) -> bool:
        return self.x >= 0 and self.y >= 0 and self.right <= width and self.bottom <= height

    def to_wire(self) -> dict[str, float]:
        return {"x": round(self.x, 1), "y": round(self.y, 1), "w": self.w, "h": self.h}


@dataclass(frozen=True)
class EdgeIn:
    source: str
    destination: str
    label: str


@dataclass(frozen=True)
class PlacedNode:
    name: str
    text: str  # the name as drawn (elided to fit)
    box: Box


@dataclass(frozen=True)
class PlacedEdge:
    source: str
    destination: str
    path: str  # SVG path data
    points: tuple[Point, ...]  # the curve's start, two control points and end
    label: str
    label_box: Box
    on_shelf: bool  # no free spot on the edge: drawn under the graph with its edge named


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    nodes: tuple[PlacedNode, ...]
    edges: tuple[PlacedEdge, ...]
    left_out: int  # services or edges over the drawing caps (counted, not drawn)


class Side(enum.Enum):
    """Which side of a node an edge leaves or enters by."""

    LEFT = "left"
    RIGHT = "right"
    TOP = "top"
    BOTTOM = "bottom"


def text_cells(text: str) -> int:
    """Monospace cells ``text`` takes: wide East Asian characters take two, marks none."""
    cells = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        cells += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return cells


def elide(text: str, cells: int) -> str:
    """``text`` cut to at most ``cells`` monospace cells, with an ellipsis when cut."""
    if text_cells(text) <= cells:
        return text
    out = ""
    for ch in text:
        if text_cells(out + ch) > cells - 1:
            break
        out += ch
    return out + "…"


def label_size(text: str) -> tuple[float, float]:
    return text_cells(text) * LABEL_CHAR + 2 * LABEL_PAD, float(LABEL_H)


def columns(services: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Call depth of each service: the longest caller chain above it, cycles broken."""
    callees: dict[str, list[str]] = {s: [] for s in services}
    for a, b in edges:
        if a != b:
            callees[a].append(b)
    # Depth-first from every service, the most calling and least called first (where a
    # request enters the mesh); an edge back into the current path closes a cycle and is
    # left out of the depth order.
    balance = {s: -len(callees[s]) for s in services}
    for a, b in edges:
        if a != b:
            balance[b] += 1
    forward: dict[str, list[str]] = {s: [] for s in services}
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for root in sorted(services, key=lambda s: balance[s]):
        if root in state:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(callees[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                continue
            else:
                forward[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(callees[nxt])))
    indegree = {s: 0 for s in services}
    for s in services:
        for t in forward[s]:
            indegree[t] += 1
    depth = {s: 0 for s in services}
    ready = [s for s in services if indegree[s] == 0]
    while ready:
        s = ready.pop()
        for t in forward[s]:
            depth[t] = max(depth[t], depth[s] + 1)
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    return depth


def cubic(p0: Point, c1: Point, c2: Point, p3: Point, t: float) -> Point:
    u = 1 - t
    return (
        u**3 * p0[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t**3 * p3[0],
        u**3 * p0[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t**3 * p3[1],
    )


class _Grid:
    """Boxes bucketed by cell, so a test touches only the boxes near it."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], list[Box]] = {}

    def _keys(self, box: Box) -> Iterator[tuple[int, int]]:
        for i in range(int(box.x // CELL), int(box.right // CELL) + 1):
            for j in range(int(box.y // CELL), int(box.bottom // CELL) + 1):
                yield i, j

    def add(self, box: Box) -> None:
        for key in self._keys(box):
            self.cells.setdefault(key, []).append(box)

    def hits(self, box: Box, gap: float) -> bool:
        grown = Box(box.x - gap, box.y - gap, box.w + 2 * gap, box.h + 2 * gap)
        return any(
            box.intersects(other, gap)
            for key in self._keys(grown)
            for other in self.cells.get(key, ())
        )


def layout(
    services: Sequence[str],
    edges: Sequence[EdgeIn],
    width: int,
    min_widths: Mapping[str, float] | None = None,
) -> Layout:
    """Place ``services`` and ``edges`` on a page ``width`` pixels wide.

    ``min_widths`` widens a node for lines drawn under its name (never past its column).
    """
    width = max(MIN_WIDTH, min(MAX_WIDTH, int(width)))
    names = list(dict.fromkeys(services))
    left_out = max(0, len(names) - MAX_SERVICES)
    names = names[:MAX_SERVICES]
    known = set(names)
    drawn: list[EdgeIn] = []
    seen: set[tuple[str, str]] = set()
    for e in edges:
        key = (e.source, e.destination)
        if e.source in known and e.destination in known and key not in seen:
            seen.add(key)
            drawn.append(e)
    left_out += len(edges) - len(drawn)
    drawn = drawn[:MAX_EDGES]

    depth = columns(names, [(e.source, e.destination) for e in drawn])
    ncols_wanted = max(depth.values(), default=0) + 1
    usable = width - 2 * MARGIN
    # A column needs room for its nodes and for labels between columns.
    ncols = max(1, min(ncols_wanted, int(usable // (NODE_MIN_W + 60))))
    col_w = usable / ncols
    # More depths than columns fit: neighbouring depths share a column.
    col_of = {s: depth[s] * ncols // ncols_wanted for s in names}
    by_col: list[list[str]] = [[] for _ in range(ncols)]
    for s in names:
        by_col[col_of[s]].append(s)
    # Order each column by the mean row of its callers in the columns before it.
    row_of: dict[str, float] = {}
    callers: dict[str, list[str]] = {s: [] for s in names}
    for e in drawn:
        if e.source != e.destination:
            callers[e.destination].append(e.source)
    for col in by_col:
        col.sort(
            key=lambda s: (
                _mean([row_of[c] for c in callers[s] if c in row_of], default=math.inf),
                s,
            )
        )
        for i, s in enumerate(col):
            row_of[s] = i
    rows = max(len(c) for c in by_col) if names else 1

    node_w_max = col_w - 24
    nodes: dict[str, PlacedNode] = {}
    for c, col in enumerate(by_col):
        top = (rows - len(col)) * ROW_H / 2
        for i, s in enumerate(col):
            cells = max(4, int((node_w_max - 16) // NODE_CHAR))
            text = elide(s, min(cells, MAX_TEXT))
            wanted = max(text_cells(text) * NODE_CHAR + 16, (min_widths or {}).get(s, 0.0))
            w = max(NODE_MIN_W, min(node_w_max, wanted))
            cx = MARGIN + (c + 0.5) * col_w
            y = top + i * ROW_H + (ROW_H - NODE_H) / 2
            nodes[s] = PlacedNode(s, text, Box(cx - w / 2, y, w, NODE_H))
    curves = _curves(nodes, col_of, drawn)

    # Move everything down so the highest arc starts under the top margin.
    ys = [n.box.y for n in nodes.values()] + [n.box.bottom for n in nodes.values()]
    for curve in curves.values():
        ys.extend(cubic(*curve, i / SAMPLES)[1] for i in range(SAMPLES + 1))
    shift = MARGIN - min(ys, default=0.0)
    graph_h = max(ys, default=0.0) + shift + MARGIN
    nodes = {k: replace(n, box=replace(n.box, y=n.box.y + shift)) for k, n in nodes.items()}
    curves = {k: _moved(c, shift) for k, c in curves.items()}

    grid = _Grid()
    for n in nodes.values():
        grid.add(n.box)
    labels = _Grid()
    placed: list[PlacedEdge] = []
    shelf: list[tuple[EdgeIn, str, Curve]] = []
    for e in drawn:
        curve = curves[(e.source, e.destination)]
        lw, lh = label_size(e.label)
        spot = None
        if lw <= usable:
            spot = _free_spot(curve, lw, lh, width, graph_h, grid, labels)
        path = _path(*curve)
        if spot is None:
            shelf.append((e, path, curve))
            continue
        labels.add(spot)
        placed.append(PlacedEdge(e.source, e.destination, path, curve, e.label, spot, False))

    # The shelf: rows of self-describing labels under the graph, left to right.
    x, y = float(MARGIN), graph_h + SHELF_TOP
    room = max(4, int((usable - 2 * LABEL_PAD) // LABEL_CHAR))
    for e, path, curve in shelf:
        text = elide(f"{e.source} → {e.destination}: {e.label}", room)
        lw, lh = label_size(text)
        if x + lw > width - MARGIN:
            x, y = float(MARGIN), y + lh + 2 * LABEL_GAP
        box = Box(x, y, lw, lh)
        placed.append(PlacedEdge(e.source, e.destination, path, curve, text, box, True))
        x += lw + 3 * LABEL_GAP
    height = graph_h if not shelf else y + LABEL_H + MARGIN
    return Layout(
        width=width,
        height=math.ceil(height),
        nodes=tuple(nodes[s] for s in names),
        edges=tuple(placed),
        left_out=left_out,
    )


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _curves(
    nodes: dict[str, PlacedNode], col_of: dict[str, int], edges: Sequence[EdgeIn]
) -> dict[tuple[str, str], Curve]:
    """Control points of each edge's curve, ports spread along the sides they use.

    A call to the next column runs between the columns; a call that would cross the
    columns between (a longer forward call, or a call back to an earlier column) leaves
    through the node's top (forward) or bottom (back) and arcs round the nodes it passes,
    so no edge is drawn through a node.
    """
    ports: dict[tuple[str, Side], list[tuple[float, tuple[str, str], str]]] = {}
    sides: dict[tuple[str, str], tuple[Side, Side]] = {}
    for e in edges:
        a, b = e.source, e.destination
        if a == b:
            continue
        ca, cb = col_of[a], col_of[b]
        if cb == ca + 1:
            sa, sb = Side.RIGHT, Side.LEFT
        elif cb == ca - 1:
            sa, sb = Side.LEFT, Side.RIGHT
        elif ca == cb:
            sa, sb = Side.RIGHT, Side.RIGHT  # same column: a bulge out to the right
        elif cb > ca:
            sa, sb = Side.TOP, Side.TOP
        else:
            sa, sb = Side.BOTTOM, Side.BOTTOM
        sides[(a, b)] = (sa, sb)
        along_y = sa in (Side.LEFT, Side.RIGHT)
        there, here = _centre(nodes[b]), _centre(nodes[a])
        ports.setdefault((a, sa), []).append((there[1] if along_y else there[0], (a, b), "out"))
        ports.setdefault((b, sb), []).append((here[1] if along_y else here[0], (a, b), "in"))
    at: dict[tuple[tuple[str, str], str], Point] = {}
    for (name, side), items in ports.items():
        box = nodes[name].box
        items.sort(key=lambda item: (item[0], item[1], item[2]))
        for i, (_, key, end) in enumerate(items):
            share = (i + 1) / (len(items) + 1)
            if side is Side.RIGHT or side is Side.LEFT:
                x = box.right if side is Side.RIGHT else box.x
                at[(key, end)] = (x, box.y + box.h * share)
            else:
                # The top's right end is kept for a self-call's loop.
                y = box.y if side is Side.TOP else box.bottom
                at[(key, end)] = (box.x + box.w * share * (0.7 if side is Side.TOP else 1), y)
    out: dict[tuple[str, str], Curve] = {}
    detours = 0
    for e in edges:
        a, b = e.source, e.destination
        if a == b:
            # A loop over the node's top-right corner.
            box = nodes[a].box
            p0, p3 = (box.right - 18, box.y), (box.right, box.y + 8)
            c1, c2 = (box.right - 18, box.y - LOOP_H), (box.right + LOOP_H, box.y + 8)
            out[(a, b)] = (p0, c1, c2, p3)
            continue
        p0, p3 = at[((a, b), "out")], at[((a, b), "in")]
        sa, sb = sides[(a, b)]
        if sa is Side.TOP or sa is Side.BOTTOM:
            lo, hi = sorted((col_of[a], col_of[b]))
            passed = [n.box for s, n in nodes.items() if lo <= col_of[s] <= hi]
            detours += 1
            spread = DETOUR_GAP * (detours % DETOUR_LANES)
            if sa is Side.TOP:
                clear = min(box.y for box in passed) - DETOUR_CLEAR - spread
                lane = min(p0[1], p3[1]) - (min(p0[1], p3[1]) - clear) / 0.75
            else:
                clear = max(box.bottom for box in passed) + DETOUR_CLEAR + spread
                lane = max(p0[1], p3[1]) + (clear - max(p0[1], p3[1])) / 0.75
            out[(a, b)] = (p0, (p0[0], lane), (p3[0], lane), p3)
        elif sa is sb:
            bulge = min(60.0, 40 + abs(p3[1] - p0[1]) / 8)
            out[(a, b)] = (p0, (p0[0] + bulge, p0[1]), (p3[0] + bulge, p3[1]), p3)
        else:
            pull = max(30.0, abs(p3[0] - p0[0]) / 2)
            da = 1 if sa is Side.RIGHT else -1
            out[(a, b)] = (p0, (p0[0] + da * pull, p0[1]), (p3[0] - da * pull, p3[1]), p3)
    return out


def _moved(curve: Curve, dy: float) -> Curve:
    p0, c1, c2, p3 = curve
    return (p0[0], p0[1] + dy), (c1[0], c1[1] + dy), (c2[0], c2[1] + dy), (p3[0], p3[1] + dy)


def _centre(node: PlacedNode) -> Point:
    return node.box.x + node.box.w / 2, node.box.y + node.box.h / 2


def _free_spot(
    curve: Curve,
    w: float,
    h: float,
    width: float,
    height: float,
    nodes: _Grid,
    labels: _Grid,
) -> Box | None:
    for t in SLIDES:
        x, y = cubic(*curve, t)
        for dy in OFFSETS:
            box = Box(x - w / 2, y + dy - h / 2, w, h)
            # Slide a box that pokes out of the page back in rather than giving up.
            box = Box(min(max(box.x, MARGIN / 2), width - MARGIN / 2 - w), box.y, w, h)
            if not box.inside(width, height):
                continue
            if nodes.hits(box, LABEL_GAP) or labels.hits(box, LABEL_GAP):
                continue
            return box
    return None


def _path(p0: Point, c1: Point, c2: Point, p3: Point) -> str:
    return "M{:.1f},{:.1f} C{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}".format(*p0, *c1, *c2, *p3)
