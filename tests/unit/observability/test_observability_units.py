"""Sans-IO parts of observability: golden window merge, access-log buffer, tap sampling."""

from __future__ import annotations

import io

import trio

from peermesh.observability import golden
from peermesh.observability.accesslog import AccessLog
from peermesh.observability.context import RequestRecord
from peermesh.observability.hub import TAP_PER_SECOND, Observability
from peermesh.observability.metrics import AgentMetrics


def test_golden_window_merges_agents_and_forgets_old_seconds():
    a, b = golden.GoldenWindow(window=10), golden.GoldenWindow(window=10)
    for i in range(90):
        a.record("inbound", "frontend", "orders", True, 0.001, now=100.0 + i % 5)
    for _ in range(9):
        a.record("inbound", "frontend", "orders", False, 0.5, now=101.0)
    b.record("inbound", "frontend", "orders", True, 0.002, now=103.0)
    b.record("outbound", "frontend", "orders", True, 0.003, now=103.0)
    merged = golden.merge([a.snapshot(104.0), b.snapshot(104.0)])
    orders = next(s for s in merged["services"] if s["service"] == "orders")
    assert orders["requests"] == 100
    assert orders["rps"] == 10.0
    assert orders["success_rate"] == 0.91
    assert 0.9 <= orders["p50_ms"] <= 1.2  # bucket bounds are 12% apart
    assert 400 <= orders["p99_ms"] <= 600
    edge = merged["edges"][0]
    assert (edge["source"], edge["destination"], edge["requests"]) == ("frontend", "orders", 1)
    # Ten seconds later the old slots no longer count.
    assert a.snapshot(115.0) == []


def test_denials_and_rate_limits_count_apart_from_errors():
    w = golden.GoldenWindow(window=10)
    for status in (200, 200, 403, 403, 429, 503):
        w.record("inbound", "frontend", "orders", 0 < status < 500, 0.001, 100.0, status)
    (orders,) = golden.merge([w.snapshot(100.0)])["services"]
    # Success is non-5xx (Linkerd); the refusals are visible on their own.
    assert orders["success_rate"] == round(5 / 6, 4)
    assert (orders["errors"], orders["denied"], orders["limited"]) == (1, 2, 1)
    # A snapshot from an agent that does not count refusals still merges.
    old = [{k: v for k, v in item.items() if k not in ("denied", "limited")}
           for item in w.snapshot(100.0)]  # fmt: skip
    (merged,) = golden.merge([old])["services"]
    assert (merged["denied"], merged["limited"]) == (0, 0)


def test_top_shows_denied_limited_and_rps_with_two_decimals():
    from rich.console import Console

    from peermesh.cli.observability import render_stats

    w = golden.GoldenWindow(window=30)
    for status in (200, 403, 429):
        w.record("inbound", "frontend", "orders", True, 0.001, 100.0, status)
    data = {**golden.merge([w.snapshot(100.0)]), "node": "node-a", "nodes": ["node-a"]}
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render_stats(data))
    text = console.export_text()
    assert "DENIED" in text and "LIMITED" in text
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("orders"))
    assert "0.10" in row and "100.0%" in row
    cells = [c.strip() for c in row.replace("┃", "│").split("│") if c.strip()]
    assert cells[:5] == ["orders", "0.10", "100.0%", "1", "1"], cells


def _record(i: int) -> RequestRecord:
    return RequestRecord("outbound", 0.0, 0.0, f"r{i}", "GET", "orders", "/")


async def test_access_log_buffer_is_bounded_and_drains():
    sink = io.BytesIO()
    log = AccessLog(sink, capacity=3)
    assert [log.offer(_record(i)) for i in range(5)] == [True, True, True, False, False]
    assert log.dropped == 2
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        while log.written < 3:  # noqa: ASYNC110 - bounded by the test timeout
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sink.getvalue().count(b"\n") == 3 and b'"request_id":"r0"' in sink.getvalue()


async def test_tap_keeps_records_only_when_tapped_and_at_a_bounded_rate():
    hub = Observability(service="s", node="n", trust_domain="t", metrics=AgentMetrics())
    for i in range(5):
        hub.end(_record(i), 200, 0.001)
    assert len(hub.tap) == 0  # nobody tapped
    hub.tap_activate(trio.current_time())
    for i in range(TAP_PER_SECOND * 3):
        hub.end(_record(i), 200, 0.001)
    assert 0 < len(hub.tap) <= 2 * TAP_PER_SECOND  # one or two seconds' worth at most


def test_agent_options_for_access_log_and_otlp(tmp_path):
    import pytest

    from peermesh.config import AgentConfig, ConfigError

    common = {"name": "n1", "service": "web=8080", "data_dir": tmp_path, "gossip": "off"}
    config = AgentConfig.build(**common, access_log="-", otlp_endpoint="http://127.0.0.1:4318")  # type: ignore[arg-type]
    assert (config.telemetry.access_log, config.telemetry.otlp_endpoint) == (
        "-",
        "http://127.0.0.1:4318",
    )
    assert AgentConfig.build(**common).telemetry.access_log is None  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="OTLP/HTTP URL"):
        AgentConfig.build(**common, otlp_endpoint="127.0.0.1:4318")  # type: ignore[arg-type]
    for bad in ("http://", "http://host:99999", "http://héte:4318", "http://a b:1"):
        with pytest.raises(ConfigError, match="--otlp-endpoint"):
            AgentConfig.build(**common, otlp_endpoint=bad)  # type: ignore[arg-type]
