"""OTLP trace protobuf, encoded by hand from the request record; the bounded span buffer.

Sans-IO: bytes in, bytes out, no clock and no sockets. The encoder writes the protobuf
wire form of ``opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest``
directly: each span is encoded once, when its request ends, into the bytes of one
``ScopeSpans.spans`` entry; an export request is the resource and scope (encoded once)
followed by those entries, so batching concatenates bytes and builds no objects.

The fields written (numbers from ``opentelemetry/proto/trace/v1/trace.proto``):
``Span``: 1 trace_id, 2 span_id, 4 parent_span_id, 5 name, 6 kind, 7/8 start and end
(fixed64 unix nanoseconds), 9 attributes, 15 status, 16 flags (fixed32);
``KeyValue``: 1 key, 2 value; ``AnyValue``: 1 string_value, 3 int_value;
``Status``: 2 message, 3 code.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3
STATUS_ERROR = 2
# Span.flags: the W3C sampled bit, and bits 8/9 ("whether the parent is remote" is known /
# it is remote). A parent here always came in a request header, so it is always remote.
FLAGS_NO_PARENT = 0x101
FLAGS_REMOTE_PARENT = 0x301

_ONE_BYTE = [bytes((i,)) for i in range(128)]
_TIMES = struct.Struct("<BQBQ")  # tag 7, start; tag 8, end (fixed64 each)
_FLAGS = struct.Struct("<BBI")  # tag 16 (two varint bytes), fixed32 flags
_TAG_SPAN = b"\x12"  # ScopeSpans.spans (2, length-delimited)
_TAG_ATTR = b"\x4a"  # Span.attributes (9, length-delimited)
_INT64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int below 2**64."""
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (_ONE_BYTE[n] if n < 0x80 else varint(n)) + body


def _utf8(text: str) -> bytes:
    # Protobuf strings must be UTF-8; a lone surrogate (no decoded header yields one,
    # but a record field is still input) becomes "?" rather than an invalid message.
    return text.encode("utf-8", "replace")


def attribute_key(name: str) -> bytes:
    """A ``KeyValue``'s key field: encode it once per attribute name, use it per span."""
    return _field(b"\x0a", _utf8(name))


def string_attribute(key: bytes, value: str) -> bytes:
    """One ``Span.attributes`` entry with a string value (``key`` from attribute_key)."""
    data = _utf8(value)
    n = len(data)
    size = len(key) + n + 4  # KeyValue: key, value tag and length, AnyValue tag and length
    if size < 0x80:  # every length fits in one byte: the usual case, in one step
        return b"J%c%s\x12%c\n%c%s" % (size, key, n + 2, n, data)
    return _field(_TAG_ATTR, key + _field(b"\x12", _field(b"\x0a", data)))


def int_attribute(key: bytes, value: int) -> bytes:
    """One ``Span.attributes`` entry with an int64 value (``key`` from attribute_key)."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"attribute value {value} does not fit in int64")
    # int64 is two's complement in 64 bits: a negative value takes ten bytes.
    number = varint(value & _INT64)
    size = len(key) + len(number) + 3
    if size < 0x80:
        return b"J%c%s\x12%c\x18%s" % (size, key, len(number) + 1, number)
    return _field(_TAG_ATTR, key + _field(b"\x12", b"\x18" + number))


def encode_attribute(name: str, value: str | int) -> bytes:
    """One ``Span.attributes`` entry (tag included); ints must fit in int64."""
    if isinstance(value, int):
        return int_attribute(attribute_key(name), value)
    return string_attribute(attribute_key(name), value)


def _key_values(attributes: Iterable[tuple[str, str | int]]) -> bytes:
    """Attributes as repeated ``KeyValue`` entries under field 1 (Resource, scope)."""
    out = b""
    for name, value in attributes:
        # The same wire form as a span attribute, under field 1 instead of 9.
        out += b"\x0a" + encode_attribute(name, value)[1:]
    return out


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """What one span says, as its request ended (a test and benchmark view of the fields).

    Ids are lowercase hex (32 and 16 digits; ``parent_span_id`` empty for a root span);
    times are unix nanoseconds.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str | int], ...]
    error_message: str = ""  # non-empty: status ERROR with this message


def encode_span(span: SpanRecord) -> bytes:
    """The bytes of one ``ScopeSpans.spans`` entry (tag and length included)."""
    return encode_span_fields(
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.start_ns,
        span.end_ns,
        b"".join(encode_attribute(k, v) for k, v in span.attributes),
        span.error_message,
    )


def encode_span_fields(
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attributes: bytes,
    error_message: str,
) -> bytes:
    """``encode_span`` from the fields, attributes already encoded (the tracer's hot path)."""
    # The ids with their tags (fields 1, 2 and 4, fixed lengths) in one hex decode.
    if parent_span_id:
        ids = bytes.fromhex(f"0a10{trace_id}1208{span_id}2208{parent_span_id}")
        flags = FLAGS_REMOTE_PARENT
    else:
        ids = bytes.fromhex(f"0a10{trace_id}1208{span_id}")
        flags = FLAGS_NO_PARENT
    if len(ids) != (38 if parent_span_id else 28):
        raise ValueError("trace id must be 32 hex digits, span ids 16")
    status = (
        _field(b"\x7a", _field(b"\x12", _utf8(error_message)) + b"\x18\x02")
        if error_message
        else b""
    )
    body = b"".join(
        (
            ids,
            _field(b"\x2a", _utf8(name)),
            b"\x30\x03" if kind == SPAN_KIND_CLIENT else b"\x30" + varint(kind),
            _TIMES.pack(0x39, start_ns & _INT64, 0x41, end_ns & _INT64),
            attributes,
            status,
            _FLAGS.pack(0x85, 0x01, flags),
        )
    )
    return _field(_TAG_SPAN, body)


@dataclass(frozen=True, slots=True)
class ExportHead:
    """The ``ResourceSpans.resource`` field and the ``ScopeSpans.scope`` field, encoded."""

    resource: bytes
    scope: bytes


def encode_head(
    resource: Sequence[tuple[str, str | int]], scope_name: str, scope_version: str = ""
) -> ExportHead:
    """The resource and instrumentation scope, encoded once at start-up."""
    scope = _field(b"\x0a", _utf8(scope_name))
    if scope_version:
        scope += _field(b"\x12", _utf8(scope_version))
    return ExportHead(_field(b"\x0a", _key_values(resource)), _field(b"\x0a", scope))


def export_request(head: ExportHead, spans: Sequence[bytes]) -> bytes:
    """One ``ExportTraceServiceRequest`` holding ``spans`` (from :func:`encode_span`)."""
    scope_spans = _field(b"\x12", head.scope + b"".join(spans))
    return _field(b"\x0a", head.resource + scope_spans)


class SpanBuffer:
    """Encoded spans waiting for export, bounded in count and bytes.

    A span that would take the buffer over either cap is refused (the caller counts it):
    memory stays bounded however slow or absent the collector is.
    """

    def __init__(self, *, max_spans: int, max_bytes: int) -> None:
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        self._spans: deque[bytes] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._spans)

    def add(self, span: bytes) -> bool:
        """Keep ``span``; False when it does not fit under the caps."""
        size = len(span)
        if len(self._spans) >= self.max_spans or self.bytes + size > self.max_bytes:
            return False
        self._spans.append(span)
        self.bytes += size
        return True

    def take(self, max_spans: int, max_bytes: int) -> list[bytes]:
        """The oldest spans, up to ``max_spans`` and ``max_bytes`` (at least one if any)."""
        out: list[bytes] = []
        size = 0
        spans = self._spans
        while spans and len(out) < max_spans:
            n = len(spans[0])
            if out and size + n > max_bytes:
                break
            out.append(spans.popleft())
            size += n
        self.bytes -= size
        return out

    def put_back(self, spans: list[bytes]) -> None:
        """Return spans :meth:`take` gave out, at the front, in order (they were counted in)."""
        self._spans.extendleft(reversed(spans))
        self.bytes += sum(len(span) for span in spans)
