"""W3C trace context (and B3) on every hop; head sampling; spans exported over OTLP/HTTP.

Propagation always happens: an incoming ``traceparent`` (or B3) is continued, a missing
one is created, and the request leaves with a ``traceparent`` naming this hop's span and
carrying the sampling decision.

Sampling is decided at the head of a trace, the way Istio's proxies and OpenTelemetry's
``ParentBased(TraceIdRatioBased)`` sampler do it: a decision that arrives with the request
(the W3C sampled flag, ``x-b3-sampled``, B3 debug) is honoured, both ways; only a hop
that starts a trace, or receives one without a decision, draws one, from the trace id
(so every such hop of one trace agrees) against the configured fraction.

Spans are only recorded for sampled requests on agents run with ``--otlp-endpoint``. A
span is encoded once, when the request ends, straight from the request record to OTLP
protobuf bytes (``otlp``), kept in a bounded buffer and exported in batches over
OTLP/HTTP by a task in the agent's nursery (``spanexport``); no live span, context or
sampler object exists while the request runs. An unsampled request costs the same as
tracing off: an id and a header rewrite.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import trio

from peermesh import __version__
from peermesh.core.units import parse_sampling
from peermesh.observability.otlp import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    SpanBuffer,
    attribute_key,
    encode_head,
    encode_span_fields,
    int_attribute,
    string_attribute,
)
from peermesh.observability.spanexport import SpanExporter, traces_url

if TYPE_CHECKING:
    from peermesh.observability.context import RequestRecord

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX = re.compile(r"^[0-9a-f]+$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_B3_HEADERS = frozenset(
    {b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-flags"}
)
_DROP = _B3_HEADERS | {b"traceparent"}
CONTEXT_HEADERS = _DROP | {b"tracestate"}
# Trace and span ids need uniqueness, not secrecy: a seeded PRNG avoids a syscall per id.
_rng = random.Random(int.from_bytes(os.urandom(16), "big"))
_bits = _rng.getrandbits
_LOW64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class TraceContext:
    """What a hop continues: trace id, parent span id, sampling decision, tracestate.

    ``sampled`` is None when the caller sent no decision (B3 without ``x-b3-sampled``):
    this hop then decides. ``trace_id`` is empty for a decision without a trace
    (``b3: 0`` or a lone ``x-b3-sampled``): a new trace starts with that decision.
    """

    trace_id: str
    parent_span_id: str
    sampled: bool | None = True
    tracestate: str = ""


def new_trace_id() -> str:
    return f"{_bits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_bits(64) or 1:016x}"


def extract(headers: Iterable[tuple[bytes, bytes]]) -> TraceContext | None:
    """The incoming context: W3C ``traceparent`` first, then B3 (single or multi header)."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in CONTEXT_HEADERS:
            found[name] = value
    if not found:
        return None
    return context_from(found)


def context_from(found: dict[bytes, bytes]) -> TraceContext | None:
    """The context from the trace headers already picked out of a request (name -> value)."""
    state = found.get(b"tracestate", b"").decode("latin-1")
    raw = found.get(b"traceparent")
    if raw is not None:
        m = _TRACEPARENT.match(raw.decode("latin-1").strip().lower())
        if m is not None:
            version, trace_id, span_id, flags, _rest = m.groups()
            # The pattern fixes the lengths: all zeros is the one invalid id of each.
            if version != "ff" and trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1), state)
    single = found.get(b"b3")
    if single is not None:
        parts = single.decode("latin-1").strip().lower().split("-")
        if len(parts) >= 2:
            return _b3(parts[0], parts[1], _b3_decision(parts[2] if len(parts) > 2 else ""), state)
        if parts[0] in ("0", "1", "d"):  # a decision alone: "b3: 0" means do not sample
            return TraceContext("", "", _b3_decision(parts[0]), state)
    flags = found.get(b"x-b3-flags", b"").strip()
    sampled_header = found.get(b"x-b3-sampled", b"").decode("latin-1").strip().lower()
    decision = True if flags == b"1" else _b3_decision(sampled_header)
    tid, sid = found.get(b"x-b3-traceid"), found.get(b"x-b3-spanid")
    if tid is not None and sid is not None:
        return _b3(tid.decode("latin-1").lower(), sid.decode("latin-1").lower(), decision, state)
    if decision is not None:
        return TraceContext("", "", decision, state)
    return None


def _b3_decision(text: str) -> bool | None:
    if text in ("1", "d", "true"):
        return True
    if text in ("0", "false"):
        return False
    return None


def _b3(trace_id: str, span_id: str, sampled: bool | None, state: str) -> TraceContext | None:
    if len(trace_id) not in (16, 32) or len(span_id) != 16:
        return None
    if not (_HEX.match(trace_id) and _HEX.match(span_id)):
        return None
    return TraceContext(trace_id.rjust(32, "0"), span_id, sampled, state)


def inject(
    headers: Iterable[tuple[bytes, bytes]], trace_id: str, span_id: str, sampled: bool, state: str
) -> list[tuple[bytes, bytes]]:
    """``headers`` with B3/W3C context replaced by this hop's ``traceparent``."""
    drop = CONTEXT_HEADERS if state else _DROP
    out = [(n, v) for n, v in headers if n not in drop]
    out.append((b"traceparent", traceparent(trace_id, span_id, sampled)))
    if state:
        out.append((b"tracestate", state.encode("latin-1")))
    return out


def traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    """The W3C ``traceparent`` value naming this hop's span."""
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()


# The SDK's BatchSpanProcessor queue holds 2048 spans; a span here is a few hundred bytes,
# and the byte cap bounds the memory of spans with long paths or authorities.
MAX_BUFFERED_SPANS = 2048
MAX_BUFFERED_BYTES = 4 << 20


class Tracer:
    """Head sampling, and a span per sampled hop, encoded to OTLP and exported in batches.

    ``sampling`` is the fraction of new traces (and of traces arriving without a
    decision) to sample. Spans are recorded only when an OTLP endpoint is given; then
    :meth:`run` (a task in the agent's nursery) exports them, and :meth:`shutdown`
    sends what is left when the agent stops.
    """

    def __init__(
        self,
        *,
        service: str,
        node: str,
        endpoint: str | None,
        sampling: float = 1.0,
        max_spans: int = MAX_BUFFERED_SPANS,
        max_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self.sampling = sampling
        self.buffer = SpanBuffer(max_spans=max_spans, max_bytes=max_bytes)
        self.exporter: SpanExporter | None = None
        self.spans_recorded = 0
        if endpoint:
            head = encode_head(resource_attributes(service, node), "peermesh", __version__)
            self.exporter = SpanExporter(traces_url(endpoint), self.buffer, head)

    @property
    def enabled(self) -> bool:
        return self.exporter is not None

    @property
    def sampling(self) -> float:
        return self._sampling

    @sampling.setter
    def sampling(self, fraction: float) -> None:
        """Change the fraction at run time (e.g. from mesh configuration)."""
        self._sampling = parse_sampling(fraction)
        # OpenTelemetry's TraceIdRatioBased: sampled when the low 64 bits of the trace id
        # are below fraction * 2**64. The same trace id gives the same answer on any hop.
        self._bound = round(self._sampling * (1 << 64))

    def begin(self, record: RequestRecord, parent: TraceContext | None) -> bool:
        """Give ``record`` its trace and span ids; True when this request is sampled.

        Nothing else happens here: the span (if any) is built by :meth:`end`.
        """
        record.span_id = f"{_bits(64) or 1:016x}"
        if parent is not None and parent.trace_id:
            record.trace_id = parent.trace_id
            record.parent_span_id = parent.parent_span_id
            sampled = parent.sampled
            if sampled is None:
                sampled = self._bound > (int(parent.trace_id[16:], 16) & _LOW64)
        else:
            trace_id = _bits(128) or 1
            record.trace_id = f"{trace_id:032x}"
            if parent is not None and parent.sampled is not None:
                sampled = parent.sampled
            else:
                sampled = self._bound > (trace_id & _LOW64)
        record.sampled = sampled and self.exporter is not None
        return sampled

    def end(self, record: RequestRecord) -> None:
        """Encode the finished request as a span into the export buffer (if sampled)."""
        if not record.sampled:
            return
        record.sampled = False  # one span per record, however often end is called
        exporter = self.exporter
        if exporter is None:  # stopped while the request ran
            return
        try:
            span = encode_record(record)
        except Exception as exc:  # a record no span can be made of costs only its span
            log.debug("tracing: cannot encode a span for %s: %r", record.request_id, exc)
            exporter.drop("encode-error", 1)
            return
        buffer = self.buffer
        if not buffer.add(span):
            exporter.drop("buffer-full", 1)
            return
        self.spans_recorded += 1
        if len(buffer) >= exporter.batch:
            exporter.wake()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The export task (returns at once when no endpoint is configured)."""
        if self.exporter is None:
            task_status.started()
            return
        await self.exporter.run(task_status=task_status)

    async def flush(self) -> bool:
        """Export what is buffered now; False if some spans could not be delivered."""
        if self.exporter is None:
            return True
        return await self.exporter.export_all()

    async def shutdown(self) -> None:
        """Export what is buffered (bounded by the caller's deadline) and stop recording."""
        exporter, self.exporter = self.exporter, None
        if exporter is not None:
            await exporter.aclose()


_K_METHOD = attribute_key("http.request.method")
_K_PATH = attribute_key("url.path")
_K_AUTHORITY = attribute_key("server.address")
_K_STATUS = attribute_key("http.response.status_code")
_K_REQUEST_ID = attribute_key("peermesh.request_id")
_K_SOURCE = attribute_key("peermesh.source")
_K_DESTINATION = attribute_key("peermesh.destination")
_K_RESPONSE_BYTES = attribute_key("peermesh.response_bytes")
_K_REQUEST_BYTES = attribute_key("peermesh.request_bytes")
_K_ATTEMPTS = attribute_key("peermesh.attempts")
_K_UPSTREAM = attribute_key("peermesh.upstream")
_K_ROUTE = attribute_key("peermesh.route")
_K_SUBSET = attribute_key("peermesh.subset")
_K_AUTHZ = attribute_key("peermesh.authz_policy")
_K_GRPC = attribute_key("rpc.grpc.status_code")


def encode_record(record: RequestRecord) -> bytes:
    """The OTLP span of one finished request, as ``ScopeSpans.spans`` entry bytes.

    Identities follow from the services and the trust domain; the span kind gives the
    direction. Attributes that do not apply are left out.
    """
    s, i = string_attribute, int_attribute
    attributes = [
        s(_K_METHOD, record.method),
        s(_K_PATH, record.path),
        s(_K_AUTHORITY, record.authority),
        i(_K_STATUS, record.status),
        s(_K_REQUEST_ID, record.request_id),
        s(_K_SOURCE, record.source),
        s(_K_DESTINATION, record.destination),
        i(_K_RESPONSE_BYTES, record.response_bytes),
    ]
    if record.request_bytes:
        attributes.append(i(_K_REQUEST_BYTES, record.request_bytes))
    if record.attempts > 1:
        attributes.append(i(_K_ATTEMPTS, record.attempts))
    if record.upstream:
        attributes.append(s(_K_UPSTREAM, record.upstream))
    if record.route:
        attributes.append(s(_K_ROUTE, record.route))
    if record.subset:
        attributes.append(s(_K_SUBSET, record.subset))
    if record.authz_policy:
        attributes.append(s(_K_AUTHZ, record.authz_policy))
    if record.grpc_status:
        attributes.append(s(_K_GRPC, record.grpc_status))
    status = record.status
    start = int(record.started_wall * 1e9)
    return encode_span_fields(
        record.trace_id,
        record.span_id,
        record.parent_span_id,
        f"{record.method} {record.authority}",
        SPAN_KIND_CLIENT if record.direction == "outbound" else SPAN_KIND_SERVER,
        start,
        start + int(record.duration * 1e9),
        b"".join(attributes),
        f"HTTP {status}" if status >= 500 or status == 0 else "",
    )


MAX_RESOURCE_ENV = 4096  # bytes of OTEL_RESOURCE_ATTRIBUTES read


def resource_attributes(service: str, node: str) -> list[tuple[str, str | int]]:
    """The agent's resource: its service and node, over ``OTEL_RESOURCE_ATTRIBUTES``.

    The variable is read as the OpenTelemetry SDKs read it (``key=value`` pairs, comma
    separated, values percent-decoded); pairs without ``=`` are skipped.
    """
    attributes: dict[str, str | int] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "peermesh",
        "telemetry.sdk.version": __version__,
    }
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")[:MAX_RESOURCE_ENV].split(","):
        key, eq, value = pair.partition("=")
        if eq and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    attributes["service.name"] = service
    attributes["service.instance.id"] = node
    return list(attributes.items())


def now_wall() -> float:
    return time.time()
