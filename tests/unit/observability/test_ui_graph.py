"""/v1/mesh/graph's core: the strict width query, the counts and labels, the layout's boxes."""

from __future__ import annotations

import itertools

import pytest

from peermesh.observability.golden import GoldenWindow, merge
from peermesh.observability.messages import GoldenItem
from peermesh.observability.ui_graph import (
    DEFAULT_WIDTH,
    GraphQuery,
    GraphQueryError,
    edge_label,
    mesh_graph,
)
from peermesh.observability.ui_layout import MAX_WIDTH, MIN_WIDTH, Box


def test_width_is_parsed_strictly() -> None:
    assert GraphQuery.from_path("/v1/mesh/graph").width == DEFAULT_WIDTH
    assert GraphQuery.from_path("/v1/mesh/graph?width=480").width == MIN_WIDTH
    assert GraphQuery.from_path(f"/v1/mesh/graph?width={MAX_WIDTH}").width == MAX_WIDTH
    for query in ("width=0480x", "width=-1", "width=1e3", "width=٨٠٠", "width=800&width=800",
                  "w=800", "width", "width=800;x=1", "a=1&b=2&c=3&d=4&e=5"):  # fmt: skip
        with pytest.raises(GraphQueryError) as caught:
            GraphQuery.from_path("/v1/mesh/graph?" + query)
        assert caught.value.status == 400 and caught.value.code == "invalid-graph-query"
        assert caught.value.hint and "width=N" in caught.value.hint


def test_denials_survive_the_wire_and_show_on_node_edge_and_label() -> None:
    window = GoldenWindow()
    for status in (200, 200, 403, 403, 429, 503):
        window.record("inbound", "web", "orders", status < 500, 0.01, 100.0, status)
        window.record("outbound", "web", "orders", status < 500, 0.01, 100.0, status)
    # What a peer sends is decoded field by field: the refusal counts must come through.
    items = [GoldenItem.from_wire(item).to_wire() for item in window.snapshot(100.0)]
    stats = {"node": "n1", "nodes": ["n1"], "errors": [], **merge([items])}
    graph = mesh_graph(stats, {"orders": ["n2", "n1"]}, 900)
    nodes = {n["service"]: n for n in graph["nodes"]}
    assert set(nodes) == {"web", "orders"}  # the caller has a node though nothing calls it
    orders = nodes["orders"]
    assert orders["counts"] | {"p50_ms": None, "p95_ms": None, "p99_ms": None} == {
        "requests": 6, "rps": 0.2, "success_rate": 0.8333, "errors": 1, "denied": 2,
        "limited": 1, "p50_ms": None, "p95_ms": None, "p99_ms": None,
    }  # fmt: skip
    assert orders["refused"] == "1 5xx · 2 denied · 1 limited"
    assert orders["unhealthy"] and orders["agents"] == ["n1", "n2"]
    assert nodes["web"]["detail"] == "no calls in"
    (edge,) = graph["edges"]
    # Written on the edge, or on the strip under the graph with the edge named.
    text = "0.20 rps · 83.3% ok · 1 5xx · 2 denied · 1 limited"
    assert edge_label(edge["counts"]) == text
    assert edge["label"] == (f"web → orders: {text}" if edge["on_shelf"] else text)
    assert edge["path"].startswith("M") and len(edge["points"]) == 4
    assert graph["width"] == 900 and graph["overflow"]["left_out"] == 0
    assert {item["key"] for item in graph["legend"]} >= {"denied", "limited", "5xx"}


def test_boxes_in_the_answer_keep_the_layout_guarantees() -> None:
    services = [f"svc-{i}" for i in range(12)]
    edges = [
        {"source": a, "destination": b, "requests": 9, "rps": 0.3, "success_rate": 1.0,
         "errors": 0, "denied": 1, "limited": 0}
        for a, b in itertools.permutations(services[:6], 2)
    ]  # fmt: skip
    stats = {"services": [{"service": s, "requests": 1} for s in services], "edges": edges}
    graph = mesh_graph(stats, {}, 1000)
    labels = [Box(**e["label_box"]) for e in graph["edges"]]
    nodes = [Box(**n["box"]) for n in graph["nodes"]]
    assert len(labels) == len(edges)
    for a, b in itertools.combinations(labels, 2):
        assert not a.intersects(b)
    for a, b in itertools.product(labels, nodes):
        assert not a.intersects(b)
    for box in labels + nodes:
        assert box.inside(graph["width"], graph["height"])
    # 30 labels do not all fit on 30 edges among six nodes: some are on the strip.
    shelf = [e for e in graph["edges"] if e["on_shelf"]]
    assert shelf and graph["overflow"]["labels"] == len(shelf)
    assert graph["overflow"]["top"] == min(e["label_box"]["y"] for e in shelf)
