"""The /ui layout: every label legible (no two label boxes intersect), all inside the page."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peermesh.observability.ui_layout import (
    MAX_EDGES,
    MAX_SERVICES,
    MAX_WIDTH,
    MIN_WIDTH,
    Box,
    EdgeIn,
    Layout,
    elide,
    layout,
    text_cells,
)

NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=60
)
LABELS = st.from_regex(r"\d{1,5}\.\d\d rps · \d{1,3}\.\d% ok( · \d{1,4} 5xx)?( · \d{1,4} denied)?",
                       fullmatch=True)  # fmt: skip


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], list[EdgeIn], int]:
    services = draw(st.lists(NAMES, min_size=1, max_size=25, unique=True))
    pairs = st.tuples(st.sampled_from(services), st.sampled_from(services))
    edges = [EdgeIn(a, b, draw(LABELS)) for a, b in draw(st.lists(pairs, max_size=60, unique=True))]
    width = draw(st.integers(min_value=200, max_value=2600))
    return services, edges, width


def check(result: Layout) -> None:
    page = (result.width, result.height)
    labels = [e.label_box for e in result.edges]
    nodes = [n.box for n in result.nodes]
    for box in labels + nodes:
        assert box.inside(*page), (box, page)
    for a, b in itertools.combinations(labels, 2):
        assert not a.intersects(b), (a, b)
    for a, b in itertools.combinations(nodes, 2):
        assert not a.intersects(b), (a, b)
    for label, node in itertools.product(labels, nodes):
        assert not label.intersects(node), (label, node)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_have_legible_labels_inside_the_page(graph) -> None:
    services, edges, width = graph
    result = layout(services, edges, width)
    check(result)
    assert result.width == max(MIN_WIDTH, width)
    assert {n.name for n in result.nodes} == set(services)
    assert {(e.source, e.destination) for e in result.edges} == {
        (e.source, e.destination) for e in edges
    }
    assert layout(services, edges, width) == result  # the same stats draw the same page


def test_a_small_mesh_puts_every_label_on_its_edge_and_uses_the_width() -> None:
    services = ["billing", "frontend", "orders", "reviews"]
    edges = [
        EdgeIn("frontend", "orders", "0.67 rps · 100.0% ok"),
        EdgeIn("frontend", "reviews", "0.33 rps · 100.0% ok · 4 denied"),
        EdgeIn("reviews", "orders", "0.10 rps · 90.0% ok · 1 5xx"),
        EdgeIn("orders", "billing", "0.67 rps · 100.0% ok"),
        EdgeIn("billing", "frontend", "0.03 rps · 100.0% ok"),  # a cycle back to the start
        EdgeIn("orders", "orders", "0.03 rps · 100.0% ok"),  # a self-call
    ]
    result = layout(services, edges, 1400)
    check(result)
    assert not any(e.on_shelf for e in result.edges)
    xs = {n.name: n.box.x for n in result.nodes}
    # Callers left of callees, and the columns spread over the page.
    assert xs["frontend"] < xs["reviews"] < xs["orders"] < xs["billing"]
    assert min(n.box.x for n in result.nodes) < 1400 / 6
    assert max(n.box.right for n in result.nodes) > 1400 * 5 / 6


def test_crossing_edges_between_two_columns_keep_their_labels_apart() -> None:
    # Every caller calls every callee: the edges cross in the gap between the columns.
    callers = [f"caller-{i}" for i in range(4)]
    callees = [f"callee-{i}" for i in range(4)]
    edges = [EdgeIn(a, b, "12.34 rps · 99.5% ok · 3 denied") for a in callers for b in callees]
    result = layout(callers + callees, edges, 900)
    check(result)
    assert len(result.edges) == 16


def test_a_crowded_page_sends_the_labels_without_room_to_a_shelf_under_the_graph() -> None:
    services = [f"s{i}" for i in range(3)]
    edges = [EdgeIn(a, b, "12345.67 rps · 100.0% ok · 1234 5xx · 1234 denied")
             for a in services for b in services]  # fmt: skip
    result = layout(services, edges, MIN_WIDTH)
    check(result)
    shelf = [e for e in result.edges if e.on_shelf]
    assert shelf, "nine long labels cannot all fit among three nodes at 480px"
    graph_bottom = max(e.label_box.bottom for e in result.edges if not e.on_shelf)
    for e in shelf:
        assert e.label.startswith(f"{e.source} → {e.destination}: ")
        assert e.label_box.y > graph_bottom


def test_hostile_sizes_are_capped() -> None:
    services = [f"svc-{i}-" + "x" * 200 for i in range(MAX_SERVICES + 30)]
    edges = [EdgeIn(a, b, "1.00 rps") for a, b in itertools.permutations(services[:25], 2)]
    assert len(edges) > MAX_EDGES
    result = layout(services, edges, 10**9)
    assert result.width == MAX_WIDTH
    check(result)
    assert len(result.nodes) == MAX_SERVICES
    assert len(result.edges) <= MAX_EDGES
    assert result.left_out >= 30
    assert all(text_cells(n.text) <= 48 for n in result.nodes)


def test_text_cells_and_elide_count_wide_characters_twice() -> None:
    assert text_cells("abc") == 3 and text_cells("服务") == 4 and text_cells("e\u0301") == 1
    assert elide("abcdefgh", 5) == "abcd…" and elide("abc", 5) == "abc"
    assert text_cells(elide("服务服务服务", 5)) <= 5


def test_box_intersection_counts_the_gap() -> None:
    a, b = Box(0, 0, 10, 10), Box(10, 0, 10, 10)
    assert not a.intersects(b) and a.intersects(b, gap=1)
    assert Box(0, 0, 10, 10).inside(10, 10) and not Box(1, 0, 10, 10).inside(10, 10)
