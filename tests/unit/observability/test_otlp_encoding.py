"""The hand-written OTLP encoder, decoded by the real protobuf classes (the oracle)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from peermesh.observability.context import RequestRecord
from peermesh.observability.otlp import (
    SpanBuffer,
    SpanRecord,
    encode_attribute,
    encode_head,
    encode_span,
    export_request,
    varint,
)
from peermesh.observability.tracing import encode_record, resource_attributes

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
TEXT = st.text(max_size=40) | st.sampled_from(["", "päth/ü", "emoji 🙂", "\x00nul", "a" * 300])
HEX32 = st.integers(min_value=1, max_value=(1 << 128) - 1).map(lambda n: f"{n:032x}")
HEX16 = st.integers(min_value=1, max_value=(1 << 64) - 1).map(lambda n: f"{n:016x}")
NANOS = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _decode(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def _value(any_value: object) -> str | int:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    assert kind in ("string_value", "int_value"), kind
    return getattr(any_value, kind)  # type: ignore[no-any-return]


def _attrs(span_or_resource: object) -> list[tuple[str, str | int]]:
    return [(a.key, _value(a.value)) for a in span_or_resource.attributes]  # type: ignore[attr-defined]


def test_varint_matches_protobuf_for_edges():
    from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

    for n in (0, 1, 127, 128, 300, 16383, 16384, (1 << 63) - 1, (1 << 64) - 1):
        assert varint(n) == _VarintBytes(n)


@settings(max_examples=300, deadline=None)
@given(
    trace_id=HEX32,
    span_id=HEX16,
    parent=st.one_of(st.just(""), HEX16),
    name=TEXT,
    kind=st.sampled_from([2, 3]),
    start=NANOS,
    end=NANOS,
    attributes=st.lists(st.tuples(TEXT, st.one_of(TEXT, INT64)), max_size=8),
    error=TEXT,
    resource=st.lists(st.tuples(TEXT, st.one_of(TEXT, INT64)), max_size=4),
    scope_version=TEXT,
)
def test_every_field_decodes_to_what_was_encoded(
    trace_id, span_id, parent, name, kind, start, end, attributes, error, resource, scope_version
):
    span = SpanRecord(trace_id, span_id, parent, name, kind, start, end, tuple(attributes), error)
    head = encode_head(resource, "peermesh", scope_version)
    request = _decode(export_request(head, [encode_span(span), encode_span(span)]))
    assert len(request.resource_spans) == 1
    rs = request.resource_spans[0]
    assert _attrs(rs.resource) == resource
    assert len(rs.scope_spans) == 1
    ss = rs.scope_spans[0]
    assert (ss.scope.name, ss.scope.version) == ("peermesh", scope_version)
    assert len(ss.spans) == 2
    for got in ss.spans:
        assert got.trace_id.hex() == trace_id
        assert got.span_id.hex() == span_id
        assert got.parent_span_id.hex() == parent
        assert got.name == name
        assert got.kind == kind
        assert (got.start_time_unix_nano, got.end_time_unix_nano) == (start, end)
        assert _attrs(got) == attributes
        if error:
            assert (got.status.code, got.status.message) == (Status.STATUS_CODE_ERROR, error)
        else:
            assert (got.status.code, got.status.message) == (Status.STATUS_CODE_UNSET, "")
        assert got.flags == (0x301 if parent else 0x101)
        assert got.flags & 0xFF == 1  # sampled
        assert not got.events and not got.links and not got.trace_state


def test_a_lone_surrogate_becomes_a_replacement_not_an_invalid_message():
    request = _decode(
        export_request(encode_head([], "peermesh"), [encode_span(_span(name="a\ud800b"))])
    )
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "a?b"


def test_an_int_beyond_int64_is_refused():
    for bad in (1 << 63, -(1 << 63) - 1):
        try:
            encode_attribute("k", bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was encoded")


def _span(**changes: object) -> SpanRecord:
    fields: dict[str, object] = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "",
        "name": "GET orders",
        "kind": 3,
        "start_ns": 1,
        "end_ns": 2,
        "attributes": (),
    }
    fields.update(changes)
    return SpanRecord(**fields)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    outbound=st.booleans(),
    text=st.lists(TEXT, min_size=9, max_size=9),
    ints=st.lists(st.integers(min_value=0, max_value=(1 << 63) - 1), min_size=4, max_size=4),
    status=st.sampled_from([0, 200, 404, 499, 500, 503]),
    parent=st.one_of(st.just(""), HEX16),
    trace_id=HEX32,
    span_id=HEX16,
    wall=st.floats(min_value=0, max_value=4e9),
    duration=st.floats(min_value=0, max_value=1e4),
)
def test_a_request_record_becomes_its_span(
    outbound, text, ints, status, parent, trace_id, span_id, wall, duration
):
    method, authority, path, rid, source, destination, upstream, route, grpc = text
    record = RequestRecord(
        "outbound" if outbound else "inbound", wall, 0.0, rid, method, authority, path,
        source, destination,
    )  # fmt: skip
    record.trace_id, record.span_id, record.parent_span_id = trace_id, span_id, parent
    record.status, record.duration = status, duration
    record.response_bytes, record.request_bytes, record.attempts, _ = ints
    record.upstream, record.route, record.grpc_status = upstream, route, grpc
    record.subset, record.authz_policy = route[:3], upstream[:2]

    head = encode_head(resource_attributes("frontend", "node-a"), "peermesh", "1")
    got = _decode(export_request(head, [encode_record(record)])).resource_spans[0]
    resource = dict(_attrs(got.resource))
    assert (resource["service.name"], resource["service.instance.id"]) == ("frontend", "node-a")
    span = got.scope_spans[0].spans[0]
    assert (span.trace_id.hex(), span.span_id.hex()) == (trace_id, span_id)
    assert span.parent_span_id.hex() == parent
    assert span.name == f"{method} {authority}"
    assert span.kind == (Span.SPAN_KIND_CLIENT if outbound else Span.SPAN_KIND_SERVER)
    start = int(wall * 1e9)
    assert span.start_time_unix_nano == start
    assert span.end_time_unix_nano == start + int(duration * 1e9)
    expected: list[tuple[str, str | int]] = [
        ("http.request.method", method),
        ("url.path", path),
        ("server.address", authority),
        ("http.response.status_code", status),
        ("peermesh.request_id", rid),
        ("peermesh.source", source),
        ("peermesh.destination", destination),
        ("peermesh.response_bytes", record.response_bytes),
    ]
    optional: list[tuple[str, str | int, bool]] = [
        ("peermesh.request_bytes", record.request_bytes, bool(record.request_bytes)),
        ("peermesh.attempts", record.attempts, record.attempts > 1),
        ("peermesh.upstream", upstream, bool(upstream)),
        ("peermesh.route", route, bool(route)),
        ("peermesh.subset", record.subset, bool(record.subset)),
        ("peermesh.authz_policy", record.authz_policy, bool(record.authz_policy)),
        ("rpc.grpc.status_code", grpc, bool(grpc)),
    ]
    expected += [(k, v) for k, v, present in optional if present]
    assert _attrs(span) == expected
    if status >= 500 or status == 0:
        assert (span.status.code, span.status.message) == (2, f"HTTP {status}")
    else:
        assert span.status.code == Status.STATUS_CODE_UNSET


def test_resource_takes_otel_resource_attributes_under_its_own(monkeypatch):
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=x,bad,k=a%20b"
    )
    got = dict(resource_attributes("frontend", "node-a"))
    assert got["deployment.environment"] == "prod" and got["k"] == "a b"
    assert got["service.name"] == "frontend" and got["service.instance.id"] == "node-a"
    assert "bad" not in got


def test_buffer_caps_spans_and_bytes_and_batches_in_order():
    buffer = SpanBuffer(max_spans=3, max_bytes=25)
    assert all(buffer.add(bytes([i]) * 5) for i in range(3))
    assert not buffer.add(b"x")  # over the span cap
    assert buffer.take(2, 1 << 20) == [b"\x00" * 5, b"\x01" * 5]
    assert not buffer.add(b"y" * 21)  # over the byte cap (5 + 21 > 25)
    assert buffer.add(b"y" * 20)
    assert buffer.take(10, 6) == [b"\x02" * 5]  # a batch stops at its byte limit...
    assert buffer.take(10, 6) == [b"y" * 20]  # ...but always holds at least one span
    assert len(buffer) == 0 and buffer.bytes == 0
    buffer.add(b"a")
    taken = buffer.take(1, 10)
    buffer.add(b"b")
    buffer.put_back(taken)
    assert buffer.take(10, 10) == [b"a", b"b"]
