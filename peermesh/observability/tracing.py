"""W3C trace context (and B3) on every hop, and spans exported over OTLP/HTTP on request.

Propagation always happens: an incoming ``traceparent`` (or B3) is continued, a missing
one is created, and the request leaves with a ``traceparent`` naming this hop's span.
Spans are only built and exported when the agent runs with ``--otlp-endpoint``; without
it a hop costs two random ids and a header rewrite.
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

if TYPE_CHECKING:
    from peermesh.observability.context import RequestRecord

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX = re.compile(r"^[0-9a-f]+$")
_B3_HEADERS = frozenset(
    {b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-flags"}
)
_DROP = _B3_HEADERS | {b"traceparent"}
# Trace and span ids need uniqueness, not secrecy: a seeded PRNG avoids a syscall per id.
_rng = random.Random(int.from_bytes(os.urandom(16), "big"))


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The parent a hop continues: trace id, parent span id, sampled flag, tracestate."""

    trace_id: str
    parent_span_id: str
    sampled: bool = True
    tracestate: str = ""


def new_trace_id() -> str:
    return f"{_rng.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_rng.getrandbits(64) or 1:016x}"


def extract(headers: Iterable[tuple[bytes, bytes]]) -> TraceContext | None:
    """The incoming context: W3C ``traceparent`` first, then B3 (single or multi header)."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name == b"traceparent" or name == b"tracestate" or name in _B3_HEADERS:
            found[name] = value
    if not found:
        return None
    state = found.get(b"tracestate", b"").decode("latin-1")
    raw = found.get(b"traceparent")
    if raw is not None:
        m = _TRACEPARENT.match(raw.decode("latin-1").strip().lower())
        if m and m.group(1) != "ff" and set(m.group(2)) != {"0"} and set(m.group(3)) != {"0"}:
            return TraceContext(m.group(2), m.group(3), bool(int(m.group(4), 16) & 1), state)
    single = found.get(b"b3")
    if single is not None:
        parts = single.decode("latin-1").strip().lower().split("-")
        if len(parts) >= 2:
            sampled = parts[2] not in ("0",) if len(parts) > 2 else True
            return _b3(parts[0], parts[1], sampled, state)
    tid, sid = found.get(b"x-b3-traceid"), found.get(b"x-b3-spanid")
    if tid is not None and sid is not None:
        sampled = found.get(b"x-b3-sampled", b"1") not in (b"0", b"false")
        return _b3(tid.decode("latin-1").lower(), sid.decode("latin-1").lower(), sampled, state)
    return None


def _b3(trace_id: str, span_id: str, sampled: bool, state: str) -> TraceContext | None:
    if len(trace_id) not in (16, 32) or len(span_id) != 16:
        return None
    if not (_HEX.match(trace_id) and _HEX.match(span_id)):
        return None
    return TraceContext(trace_id.rjust(32, "0"), span_id, sampled, state)


def inject(
    headers: Iterable[tuple[bytes, bytes]], trace_id: str, span_id: str, sampled: bool, state: str
) -> list[tuple[bytes, bytes]]:
    """``headers`` with B3/W3C context replaced by this hop's ``traceparent``."""
    out = [(n, v) for n, v in headers if n not in _DROP]
    out.append((b"traceparent", f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()))
    if state:
        out = [(n, v) for n, v in out if n != b"tracestate"]
        out.append((b"tracestate", state.encode("latin-1")))
    return out


class Tracer:
    """Spans per hop through the OpenTelemetry SDK; inert unless an endpoint is given."""

    def __init__(self, *, service: str, node: str, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self._provider: Any = None
        self._tracer: Any = None
        self._api: Any = None
        if endpoint:
            self._setup(service, node, endpoint)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _setup(self, service: str, node: str, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        resource = Resource.create({"service.name": service, "service.instance.id": node})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=url), schedule_delay_millis=500)
        )
        self._tracer = self._provider.get_tracer("peermesh")
        # Bound once: a per-request ``from ... import`` costs more than the lookup it saves.
        from opentelemetry import trace

        self._api = trace

    def begin(self, record: RequestRecord, parent: TraceContext | None, *, client: bool) -> None:
        """Give ``record`` its trace and span ids (and a live span when exporting)."""
        record.trace_id = parent.trace_id if parent else new_trace_id()
        record.parent_span_id = parent.parent_span_id if parent else ""
        sampled = parent.sampled if parent else True
        if self._tracer is None or not sampled:
            record.span_id = new_span_id()
            return
        api = self._api
        context = None
        if parent is not None:
            remote = api.SpanContext(
                int(parent.trace_id, 16),
                int(parent.parent_span_id, 16),
                is_remote=True,
                trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED),
            )
            context = api.set_span_in_context(api.NonRecordingSpan(remote))
        span = self._tracer.start_span(
            f"{record.method} {record.authority}",
            context=context,
            kind=api.SpanKind.CLIENT if client else api.SpanKind.SERVER,
            start_time=int(record.started_wall * 1e9),
            record_exception=False,
            set_status_on_exception=False,
        )
        ctx = span.get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}"
        record.span_id = f"{ctx.span_id:016x}"
        record.span = span

    def end(self, record: RequestRecord) -> None:
        span = record.span
        if span is None:
            return
        # Identities follow from the services and the trust domain; the span kind gives the
        # direction. Fewer attributes keep the SDK's per-attribute checks cheap.
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
        for key, value in (
            ("peermesh.upstream", record.upstream),
            ("peermesh.route", record.route),
            ("peermesh.subset", record.subset),
            ("peermesh.authz_policy", record.authz_policy),
            ("rpc.grpc.status_code", record.grpc_status),
        ):
            if value:
                attributes[key] = value
        span.set_attributes(attributes)
        if record.status >= 500 or record.status == 0:
            api = self._api
            span.set_status(api.Status(api.StatusCode.ERROR, f"HTTP {record.status}"))
        span.end(end_time=int((record.started_wall + record.duration) * 1e9))
        record.span = None

    def flush(self, timeout_ms: int = 5000) -> bool:
        """Export what is buffered (blocking: call from a thread)."""
        if self._provider is None:
            return True
        return bool(self._provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Flush and stop the exporter (blocking: call from a thread)."""
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception as exc:  # the collector may be gone; never fail the agent stop
                log.warning("tracing shutdown: %s", exc)
            self._provider = None
            self._tracer = None


def now_wall() -> float:
    return time.time()
