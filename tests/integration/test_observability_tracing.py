"""Tracing: W3C/B3 context continued or created, one span per hop, OTLP/HTTP export."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import trio
import trio.testing
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from peermesh.observability.tracing import extract, inject
from tests.integration.test_observability_accesslog import logged_agents
from tests.support.meshkit import eventually
from tests.support.obskit import scrape, value

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Receiver:
    """A minimal OTLP/HTTP trace receiver on loopback (protobuf bodies)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for rs in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append(
                                    {
                                        "service": attrs.get("service.name"),
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "kind": span.kind,
                                        "name": span.name,
                                        "attributes": {a.key: a.value for a in span.attributes},
                                    }
                                )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@contextmanager
def otlp_receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_two_hops_give_one_connected_trace_and_incoming_context_is_continued(tmp_path):
    with otlp_receiver() as (receiver, url):
        async with (
            logged_agents(tmp_path, client_otlp_endpoint=url, server_otlp_endpoint=url) as mesh,
            httpx.AsyncClient() as c,
        ):
            r = await c.get(mesh.outbound_url + "/headers", headers={"host": "orders"})
            assert r.status_code == 200
            app_saw = r.json()["headers"]
            await _flush(mesh)
            await eventually(lambda: len(receiver.spans) >= 2)
            client = next(s for s in receiver.spans if s["service"] == "frontend")
            server = next(s for s in receiver.spans if s["service"] == "orders")
            assert client["trace_id"] == server["trace_id"]
            assert server["parent"] == client["span_id"]  # connected: server is the child
            assert client["parent"] == ""  # the trace started at the outbound sidecar
            assert (client["kind"], server["kind"]) == (3, 2)  # CLIENT, SERVER
            status = client["attributes"]["http.response.status_code"].int_value
            assert status == server["attributes"]["http.response.status_code"].int_value == 200
            assert client["attributes"]["peermesh.upstream"].string_value == "{}:{}".format(
                *mesh.inbound
            )
            # The app sees the server span as its parent.
            assert app_saw["traceparent"] == f"00-{server['trace_id']}-{server['span_id']}-01"
            for agent in (mesh.client, mesh.server):
                samples = await scrape(agent)
                assert value(samples, "peermesh_spans_recorded_total") == 1
                assert value(samples, "peermesh_spans_exported_total") == 1
                assert value(samples, "peermesh_spans_dropped_total") == 0

            # An incoming W3C traceparent is continued, not replaced.
            receiver.spans.clear()
            r = await c.get(
                mesh.outbound_url + "/headers",
                headers={
                    "host": "orders",
                    "traceparent": f"00-{TRACE}-{PARENT}-01",
                    "tracestate": "vendor=1",
                },
            )
            assert r.json()["headers"]["tracestate"] == "vendor=1"
            await _flush(mesh)
            await eventually(lambda: len(receiver.spans) >= 2)
            client = next(s for s in receiver.spans if s["service"] == "frontend")
            server = next(s for s in receiver.spans if s["service"] == "orders")
            assert client["trace_id"] == server["trace_id"] == TRACE
            assert client["parent"] == PARENT and server["parent"] == client["span_id"]

            # B3 headers (multi-header form) are accepted too.
            receiver.spans.clear()
            r = await c.get(
                mesh.outbound_url + "/headers",
                headers={"host": "orders", "x-b3-traceid": TRACE[16:], "x-b3-spanid": PARENT},
            )
            assert "x-b3-traceid" not in r.json()["headers"]
            await _flush(mesh)
            await eventually(lambda: len(receiver.spans) >= 2)
            client = next(s for s in receiver.spans if s["service"] == "frontend")
            assert client["trace_id"] == TRACE[16:].rjust(32, "0") and client["parent"] == PARENT


async def test_a_stopping_agent_exports_the_spans_it_still_holds(tmp_path):
    """No flush: the graceful stop (SIGTERM's path) sends what the interval had not yet."""
    with otlp_receiver() as (receiver, url):
        async with (
            logged_agents(tmp_path, client_otlp_endpoint=url, server_otlp_endpoint=url) as mesh,
            httpx.AsyncClient() as c,
        ):
            for agent in (mesh.client, mesh.server):
                exporter = agent.observability.tracer.exporter
                assert exporter is not None
                exporter.interval = 3600.0  # no timed export: only the stop can send them
                exporter.wake()  # ends the wait begun with the default interval
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                r = await c.get(mesh.outbound_url + "/headers", headers={"host": "orders"})
                assert r.status_code == 200
            assert receiver.spans == []
            for agent in (mesh.client, mesh.server):
                agent.request_shutdown()
            await eventually(lambda: len(receiver.spans) >= 6)
            assert {s["service"] for s in receiver.spans} == {"frontend", "orders"}


async def test_without_an_endpoint_context_still_propagates_and_nothing_is_exported(tmp_path):
    async with logged_agents(tmp_path) as mesh, httpx.AsyncClient() as c:
        assert not mesh.client.observability.tracer.enabled
        r = await c.get(
            mesh.outbound_url + "/headers",
            headers={"host": "orders", "traceparent": f"00-{TRACE}-{PARENT}-01"},
        )
        seen = extract([(b"traceparent", r.json()["headers"]["traceparent"].encode())])
        assert seen is not None and seen.trace_id == TRACE and seen.parent_span_id != PARENT


def test_b3_single_header_and_bad_traceparent():
    ctx = extract([(b"b3", f"{TRACE}-{PARENT}-0".encode())])
    assert ctx is not None and (ctx.trace_id, ctx.parent_span_id, ctx.sampled) == (
        TRACE,
        PARENT,
        False,
    )
    assert extract([(b"traceparent", b"00-" + b"0" * 32 + b"-" + PARENT.encode() + b"-01")]) is None
    assert extract([(b"traceparent", b"garbage")]) is None
    out = dict(inject([(b"b3", b"x"), (b"a", b"1")], TRACE, PARENT, True, ""))
    assert out == {b"a": b"1", b"traceparent": f"00-{TRACE}-{PARENT}-01".encode()}


async def _flush(mesh: Any) -> None:
    for agent in (mesh.client, mesh.server):
        assert await agent.observability.tracer.flush()


def _traceparent(headers: dict[str, str]) -> tuple[str, str, str]:
    """(trace id, parent span id, flags) of the traceparent the app received."""
    _version, trace_id, span_id, flags = headers["traceparent"].split("-")
    return trace_id, span_id, flags


async def test_sampling_zero_records_no_span_but_still_propagates_and_honours_sampled_parents(
    tmp_path,
):
    """Fraction 0: new traces are not recorded, yet the context (flag 00) reaches the app.

    A caller's decision wins over the fraction, both ways (Istio's proxies, like
    OpenTelemetry's ParentBased sampler, keep the decision of the trace's head).
    """
    with otlp_receiver() as (receiver, url):
        async with (
            logged_agents(
                tmp_path,
                client_otlp_endpoint=url,
                server_otlp_endpoint=url,
                client_trace_sampling=0.0,
                server_trace_sampling=0.0,
            ) as mesh,
            httpx.AsyncClient() as c,
        ):
            for _ in range(5):
                r = await c.get(mesh.outbound_url + "/headers", headers={"host": "orders"})
                assert r.status_code == 200
                trace_id, span_id, flags = _traceparent(r.json()["headers"])
                assert flags == "00" and len(trace_id) == 32 and len(span_id) == 16
            # B3 with no decision: this mesh decides (fraction 0), and says so downstream.
            r = await c.get(
                mesh.outbound_url + "/headers",
                headers={"host": "orders", "x-b3-traceid": TRACE, "x-b3-spanid": PARENT},
            )
            assert _traceparent(r.json()["headers"])[::2] == (TRACE, "00")
            await _flush(mesh)
            assert receiver.spans == []
            assert mesh.client.observability.tracer.spans_recorded == 0
            assert mesh.server.observability.tracer.spans_recorded == 0

            # An incoming sampled=1 (W3C) is recorded at both hops even at fraction 0.
            r = await c.get(
                mesh.outbound_url + "/headers",
                headers={"host": "orders", "traceparent": f"00-{TRACE}-{PARENT}-01"},
            )
            server_trace, server_span, flags = _traceparent(r.json()["headers"])
            assert (server_trace, flags) == (TRACE, "01")
            await _flush(mesh)
            assert len(receiver.spans) == 2
            client = next(s for s in receiver.spans if s["service"] == "frontend")
            server = next(s for s in receiver.spans if s["service"] == "orders")
            assert client["trace_id"] == server["trace_id"] == TRACE
            assert client["parent"] == PARENT and server["parent"] == client["span_id"]
            assert server["span_id"] == server_span  # the app's parent is the server span

            # So is B3's x-b3-sampled: 1.
            receiver.spans.clear()
            r = await c.get(
                mesh.outbound_url + "/headers",
                headers={
                    "host": "orders",
                    "x-b3-traceid": TRACE,
                    "x-b3-spanid": PARENT,
                    "x-b3-sampled": "1",
                },
            )
            assert _traceparent(r.json()["headers"])[::2] == (TRACE, "01")
            await _flush(mesh)
            assert len(receiver.spans) == 2


async def test_sampling_one_records_every_new_trace_but_not_an_unsampled_parent(tmp_path):
    with otlp_receiver() as (receiver, url):
        async with (
            logged_agents(
                tmp_path,
                client_otlp_endpoint=url,
                server_otlp_endpoint=url,
                client_trace_sampling=1.0,
                server_trace_sampling=1.0,
            ) as mesh,
            httpx.AsyncClient() as c,
        ):
            for _ in range(3):
                r = await c.get(mesh.outbound_url + "/headers", headers={"host": "orders"})
                assert _traceparent(r.json()["headers"])[2] == "01"
            await _flush(mesh)
            assert len(receiver.spans) == 6
            assert len({s["trace_id"] for s in receiver.spans}) == 3

            # The caller decided not to sample: nothing recorded, the decision travels on.
            receiver.spans.clear()
            for headers in (
                {"traceparent": f"00-{TRACE}-{PARENT}-00"},
                {"x-b3-traceid": TRACE, "x-b3-spanid": PARENT, "x-b3-sampled": "0"},
                {"b3": "0"},  # a decision without a trace: a new trace, not sampled
            ):
                r = await c.get(
                    mesh.outbound_url + "/headers", headers={"host": "orders", **headers}
                )
                trace_id, _span, flags = _traceparent(r.json()["headers"])
                assert flags == "00"
                assert (trace_id == TRACE) == ("b3" not in headers)
            await _flush(mesh)
            assert receiver.spans == []
