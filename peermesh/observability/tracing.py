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
span is built once, when the request ends, straight from the request record as an SDK
``ReadableSpan`` and handed to the SDK's ``BatchSpanProcessor`` and OTLP/HTTP exporter;
no live span, context or sampler object exists while the request runs. An unsampled
request costs the same as tracing off: an id and a header rewrite.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peermesh.core.units import parse_sampling

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


class Tracer:
    """Head sampling, and spans per sampled hop through the OpenTelemetry SDK.

    ``sampling`` is the fraction of new traces (and of traces arriving without a
    decision) to sample. Spans are recorded only when an OTLP endpoint is given.
    """

    def __init__(
        self, *, service: str, node: str, endpoint: str | None, sampling: float = 1.0
    ) -> None:
        self.endpoint = endpoint
        self.sampling = sampling
        self._processor: Any = None
        self._resource: Any = None
        self._scope: Any = None
        self._api: Any = None
        self._readable: Any = None
        self._unset: Any = None
        self._error: Any = None
        self._kinds: tuple[Any, Any] = (None, None)
        self._flags: Any = None
        self.spans_recorded = 0
        if endpoint:
            self._setup(service, node, endpoint)

    @property
    def enabled(self) -> bool:
        return self._processor is not None

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

    def _setup(self, service: str, node: str, endpoint: str) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        self._resource = _fixed_resource(service, node)
        self._scope = InstrumentationScope("peermesh")
        # The SDK's batching defaults (export every 5 s, or as soon as 512 spans wait): each
        # export is an HTTP request whose fixed cost is worth sharing among many spans.
        self._processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=url))
        # Bound once: a per-request ``from ... import`` costs more than the lookup it saves.
        self._api = trace
        self._readable = ReadableSpan
        self._unset = trace.Status(trace.StatusCode.UNSET)
        self._error = trace.StatusCode.ERROR
        self._kinds = (trace.SpanKind.SERVER, trace.SpanKind.CLIENT)
        self._flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)

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
        record.sampled = sampled and self._processor is not None
        return sampled

    def end(self, record: RequestRecord) -> None:
        """Record the finished request as a span (only when it was sampled)."""
        if not record.sampled:
            return
        record.sampled = False  # one span per record, however often end is called
        api = self._api
        # Identities follow from the services and the trust domain; the span kind gives the
        # direction. Fewer attributes keep the export encoding cheap.
        attributes: dict[str, str | int] = {
            "http.request.method": record.method,
            "url.path": record.path,
            "server.address": record.authority,
            "http.response.status_code": record.status,
            "peermesh.request_id": record.request_id,
            "peermesh.source": record.source,
            "peermesh.destination": record.destination,
            "peermesh.response_bytes": record.response_bytes,
        }
        if record.request_bytes:
            attributes["peermesh.request_bytes"] = record.request_bytes
        if record.attempts > 1:
            attributes["peermesh.attempts"] = record.attempts
        if record.upstream:
            attributes["peermesh.upstream"] = record.upstream
        if record.route:
            attributes["peermesh.route"] = record.route
        if record.subset:
            attributes["peermesh.subset"] = record.subset
        if record.authz_policy:
            attributes["peermesh.authz_policy"] = record.authz_policy
        if record.grpc_status:
            attributes["rpc.grpc.status_code"] = record.grpc_status
        trace_id = int(record.trace_id, 16)
        parent = (
            api.SpanContext(trace_id, int(record.parent_span_id, 16), True, self._flags)
            if record.parent_span_id
            else None
        )
        status = record.status
        start = int(record.started_wall * 1e9)
        span = self._readable(
            name=f"{record.method} {record.authority}",
            context=api.SpanContext(trace_id, int(record.span_id, 16), False, self._flags),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=self._kinds[record.direction == "outbound"],
            status=(
                api.Status(self._error, f"HTTP {status}")
                if status >= 500 or status == 0
                else self._unset
            ),
            start_time=start,
            end_time=start + int(record.duration * 1e9),
            instrumentation_scope=self._scope,
        )
        self._processor.on_end(span)
        self.spans_recorded += 1

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export what is buffered (blocking: call from a thread)."""
        if self._processor is None:
            return True
        return bool(self._processor.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call from a thread)."""
        if self._processor is not None:
            try:
                self._processor.shutdown()
            except Exception as exc:  # the collector may be gone; never fail the agent stop
                log.warning("tracing shutdown: %s", exc)
            self._processor = None


def _fixed_resource(service: str, node: str) -> Any:
    """The agent's Resource, with its hash computed once.

    The OTLP encoder groups spans by resource, and the SDK's ``Resource.__hash__``
    serialises every attribute to JSON on each call, i.e. once per exported span.
    """
    from opentelemetry.sdk.resources import Resource

    class FixedResource(Resource):
        def __init__(self, resource: Resource) -> None:
            super().__init__(resource.attributes, resource.schema_url)
            self._fixed_hash = super().__hash__()

        def __hash__(self) -> int:
            return self._fixed_hash

    return FixedResource(Resource.create({"service.name": service, "service.instance.id": node}))


def now_wall() -> float:
    return time.time()
