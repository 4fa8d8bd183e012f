"""The per-agent observability hub the proxies call at the start and end of a request."""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Any

import trio
from prometheus_client import Counter

from peermesh.http.headers import RequestHead
from peermesh.metrics import AgentMetrics
from peermesh.observability.accesslog import AccessLog
from peermesh.observability.context import CURRENT, RequestRecord
from peermesh.observability.golden import GoldenWindow
from peermesh.observability.tracing import Tracer, extract, inject, new_span_id

TAP_CAPACITY = 512
TAP_PER_SECOND = 100  # sampling: beyond this many requests a second, tap skips the rest
TAP_IDLE = 60.0  # seconds without a tap subscriber after which requests are no longer kept
MAX_ID = 128


class Observability:
    """Request records → access log, spans, golden window, tap ring, byte counters."""

    def __init__(
        self,
        *,
        service: str,
        node: str,
        trust_domain: str,
        metrics: AgentMetrics,
        access_log: str | IO[bytes] | None = None,
        access_log_capacity: int = 4096,
        otlp_endpoint: str | None = None,
        tap_capacity: int = TAP_CAPACITY,
    ) -> None:
        self.service = service
        self.node = node
        self.trust_domain = trust_domain
        self.metrics = metrics
        self.access_log = (
            AccessLog(access_log, capacity=access_log_capacity) if access_log is not None else None
        )
        self.tracer = Tracer(service=service, node=node, endpoint=otlp_endpoint)
        self.golden = GoldenWindow()
        self.tap: deque[RequestRecord] = deque(maxlen=tap_capacity)
        self.tap_seen = 0
        self.enabled = True  # False before the agent starts: no records at all (benchmarks)
        self.clock_offset = 0.0  # test hook: seconds added to the wall clock `check` reports
        self.policy_applied_at = 0.0
        self._tap_until = 0.0
        self._tap_second = 0
        self._tap_kept = 0
        self.request_bytes = Counter(
            "peermesh_request_bytes",
            "Request body bytes relayed, by direction and services.",
            ["direction", "source_service", "destination_service"],
            registry=metrics.registry,
        )
        self.response_bytes = Counter(
            "peermesh_response_bytes",
            "Response body bytes relayed, by direction and services.",
            ["direction", "source_service", "destination_service"],
            registry=metrics.registry,
        )

    # --- tap --------------------------------------------------------------------------
    def tap_activate(self, now: float) -> None:
        self._tap_until = now + TAP_IDLE

    # --- per request ------------------------------------------------------------------
    def begin(
        self, direction: str, head: RequestHead, *, source: str, destination: str = ""
    ) -> tuple[RequestRecord, RequestHead]:
        """A record for a new request, and the head to forward (trace context injected)."""
        request_id = head.header(b"x-request-id")
        rid = request_id.decode("latin-1")[:MAX_ID] if request_id else new_span_id()
        record = RequestRecord(
            direction=direction,
            started_wall=time.time(),
            started=trio.current_time(),
            request_id=rid,
            method=head.method.decode("ascii", "replace"),
            authority=head.authority.decode("latin-1"),
            path=head.path.decode("latin-1"),
            source=source,
            destination=destination,
        )
        parent = extract(head.headers)
        self.tracer.begin(record, parent, client=direction == "outbound")
        sampled = parent.sampled if parent is not None else True
        headers = inject(
            head.headers,
            record.trace_id,
            record.span_id,
            sampled,
            parent.tracestate if parent else "",
        )
        if request_id is None:
            headers.append((b"x-request-id", rid.encode()))
        CURRENT.set(record)
        return record, RequestHead(
            head.method, head.scheme, head.authority, head.path, tuple(headers)
        )

    def end(self, record: RequestRecord, status: int, seconds: float) -> None:
        CURRENT.set(None)
        record.status = status
        record.duration = seconds
        td = self.trust_domain
        if record.direction == "outbound":
            record.source_identity = f"spiffe://{td}/svc/{record.source}"
            record.destination_identity = f"spiffe://{td}/svc/{record.destination}"
        else:
            record.destination_identity = f"spiffe://{td}/svc/{record.destination}"
        labels = (record.direction, record.source, record.destination)
        if record.request_bytes:
            self.request_bytes.labels(*labels).inc(record.request_bytes)
        if record.response_bytes:
            self.response_bytes.labels(*labels).inc(record.response_bytes)
        self.golden.record(
            record.direction,
            record.source,
            record.destination,
            0 < status < 500,
            seconds,
            time.monotonic(),
        )
        if record.span is not None:
            self.tracer.end(record)
        if self.access_log is not None:
            self.access_log.offer(record)
        if self._tap_until:
            self._maybe_tap(record)

    def _maybe_tap(self, record: RequestRecord) -> None:
        """Keep the record for ``tap`` while someone taps, at most TAP_PER_SECOND a second."""
        now = trio.current_time()
        if now >= self._tap_until:
            self._tap_until = 0.0
            return
        second = int(now)
        if second != self._tap_second:
            self._tap_second, self._tap_kept = second, 0
        if self._tap_kept < TAP_PER_SECOND:
            self._tap_kept += 1
            self.tap.append(record)
            self.tap_seen += 1

    def tap_matching(
        self, service: str | None, path: str | None, limit: int, since: int = 0
    ) -> list[dict[str, Any]]:
        out = []
        for record in list(self.tap)[-limit:]:
            if service and service not in (record.source, record.destination):
                continue
            if path and not record.path.startswith(path):
                continue
            out.append({**record.summary(), "node": self.node})
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (the access log writer); returns at once when there is none."""
        task_status.started()
        if self.access_log is not None:
            try:
                await self.access_log.run()
            finally:
                self.access_log.close()

    async def aclose(self) -> None:
        if self.tracer.enabled:
            await trio.to_thread.run_sync(self.tracer.shutdown, abandon_on_cancel=True)
