"""One request as observability sees it, and the cheap wrappers that fill it in.

The proxy creates a :class:`RequestRecord` when a request arrives and makes it the
task's current record (a context variable), so deeper code (routing, the retry loop)
can note the route, the subset and each upstream endpoint without new parameters.
"""

from __future__ import annotations

import contextvars
import json
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from peermesh.net.http.exchange import BodySource, ResponseWriter
from peermesh.net.http.headers import Headers

CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "peermesh_request", default=None
)


@dataclass(slots=True)
class RequestRecord:
    """What is known about one request; filled as it goes, summarised when it ends."""

    direction: str
    started_wall: float
    started: float
    request_id: str
    method: str
    authority: str
    path: str
    source: str = ""
    destination: str = ""
    source_identity: str = ""
    destination_identity: str = ""
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    status: int = 0
    grpc_status: str = ""
    request_bytes: int = 0
    response_bytes: int = 0
    duration: float = 0.0
    route: str = ""
    subset: str = ""
    authz_policy: str = ""
    upstream: str = ""
    attempts: int = 0
    sampled: bool = False  # a span is to be recorded for this request (set by the tracer)

    def summary(self) -> dict[str, Any]:
        """The access-log / tap view (JSON-ready)."""
        return {
            "time": iso_utc(self.started_wall),
            "direction": self.direction,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "source": self.source,
            "source_identity": self.source_identity,
            "destination": self.destination,
            "destination_identity": self.destination_identity,
            "method": self.method,
            "authority": self.authority,
            "path": self.path,
            "status": self.status,
            "grpc_status": self.grpc_status or None,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "duration_ms": round(self.duration * 1000, 3),
            "upstream": self.upstream or None,
            "attempts": self.attempts,
            "route": self.route or None,
            "subset": self.subset or None,
            "authz_policy": self.authz_policy or None,
        }

    def log_line(self) -> bytes:
        """``summary()`` as one JSON line, byte for byte what ``json.dumps`` would give.

        Built directly (C string escaping, a cached timestamp prefix, no dict): the access
        log writes one per request.
        """
        q = _quote
        return (
            f'{{"time":"{iso_utc(self.started_wall)}","direction":{q(self.direction)},'
            f'"request_id":{q(self.request_id)},"trace_id":{q(self.trace_id)},'
            f'"span_id":{q(self.span_id)},"source":{q(self.source)},'
            f'"source_identity":{q(self.source_identity)},"destination":{q(self.destination)},'
            f'"destination_identity":{q(self.destination_identity)},'
            f'"method":{q(self.method)},"authority":{q(self.authority)},"path":{q(self.path)},'
            f'"status":{self.status!r},"grpc_status":{_opt(self.grpc_status)},'
            f'"request_bytes":{self.request_bytes!r},"response_bytes":{self.response_bytes!r},'
            f'"duration_ms":{round(self.duration * 1000, 3)!r},'
            f'"upstream":{_opt(self.upstream)},"attempts":{self.attempts!r},'
            f'"route":{_opt(self.route)},"subset":{_opt(self.subset)},'
            f'"authz_policy":{_opt(self.authz_policy)}}}\n'
        ).encode()


_quote = json.encoder.encode_basestring_ascii  # what json.dumps uses (ensure_ascii)


def _opt(text: str) -> str:
    return _quote(text) if text else "null"


_second = -1
_second_text = ""


def iso_utc(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, as ``datetime.isoformat(timespec="milliseconds")``.

    The date and time of day are formatted once per second.
    """
    global _second, _second_text
    second = math.floor(ts)
    micros = round((ts - second) * 1e6)  # datetime.fromtimestamp rounds half to even too
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{micros // 1000:03d}+00:00"


# --- notes from deep inside the proxy (no-ops when observability is off) -----------------


def note_route(route: str, subset: str | None) -> None:
    rec = CURRENT.get()
    if rec is not None:
        rec.route = route
        rec.subset = subset or ""


def note_attempt(endpoint: str) -> None:
    rec = CURRENT.get()
    if rec is not None:
        rec.attempts += 1
        rec.upstream = endpoint


def note_authz(policy: str) -> None:
    rec = CURRENT.get()
    if rec is not None:
        rec.authz_policy = policy


# --- byte counting wrappers ---------------------------------------------------------------


class CountingBody:
    """A request body that adds what passes through to ``record.request_bytes``."""

    __slots__ = ("inner", "record")

    def __init__(self, inner: BodySource, record: RequestRecord) -> None:
        self.inner = inner
        self.record = record

    async def receive_data(self) -> bytes:
        data = await self.inner.receive_data()
        self.record.request_bytes += len(data)
        return data

    @property
    def trailers(self) -> Headers | None:
        return self.inner.trailers


class CountingWriter:
    """A response writer that counts body bytes and picks up ``grpc-status``.

    Each method does its bookkeeping and returns the inner writer's coroutine for the
    caller to await: no coroutine of its own per write.
    """

    __slots__ = ("inner", "record")

    def __init__(self, inner: ResponseWriter, record: RequestRecord) -> None:
        self.inner = inner
        self.record = record

    @property
    def headers_sent(self) -> bool:
        return self.inner.headers_sent

    def send_head(
        self, status: int, headers: Headers, *, end: bool = False
    ) -> Coroutine[Any, Any, None]:
        _grpc(self.record, headers)
        return self.inner.send_head(status, headers, end=end)

    def send_data(self, data: bytes) -> Coroutine[Any, Any, None]:
        self.record.response_bytes += len(data)
        return self.inner.send_data(data)

    def finish(self, trailers: Headers | None = None) -> Coroutine[Any, Any, None]:
        if trailers:
            _grpc(self.record, trailers)
        return self.inner.finish(trailers)

    def abort(self) -> None:
        self.inner.abort()


GRPC_CODES = frozenset(str(i) for i in range(17))


def _grpc(record: RequestRecord, headers: Headers) -> None:
    for name, value in headers:
        if name == b"grpc-status":
            text = value.decode("latin-1").strip()
            record.grpc_status = text if text in GRPC_CODES else "other"
