"""The per-agent observability hub the proxies call at the start and end of a request."""

from __future__ import annotations

import time
from collections import deque
from typing import IO, Any

import trio

from peermesh.net.http.headers import Header, RequestHead
from peermesh.observability.accesslog import AccessLog
from peermesh.observability.context import CURRENT, RequestRecord
from peermesh.observability.golden import GoldenWindow
from peermesh.observability.metrics import AgentMetrics
from peermesh.observability.tracing import (
    CONTEXT_HEADERS,
    Tracer,
    context_from,
    new_span_id,
    traceparent,
)

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
        trace_sampling: float = 1.0,
        tap_capacity: int = TAP_CAPACITY,
    ) -> None:
        self.service = service
        self.node = node
        self.trust_domain = trust_domain
        self.metrics = metrics
        self._access_log_capacity = access_log_capacity
        self._agent_logs = access_log is not None  # the agent's own setting (--access-log)
        self._agent_sampling = trace_sampling
        self._access_log_opened = trio.Event()
        self._logging: AccessLog | None = None  # where end() sends records (None: not logging)
        self.access_log = (
            AccessLog(access_log, capacity=access_log_capacity) if access_log is not None else None
        )
        self.tracer = Tracer(
            service=service, node=node, endpoint=otlp_endpoint, sampling=trace_sampling
        )
        self._identity_prefix = f"spiffe://{trust_domain}/svc/"
        self.golden = GoldenWindow()
        self.tap: deque[RequestRecord] = deque(maxlen=tap_capacity)
        self.tap_seen = 0
        self.enabled = True  # False before the agent starts: no records at all (benchmarks)
        self.clock_offset = 0.0  # test hook: seconds added to the wall clock `check` reports
        self.policy_applied_at = 0.0
        self._tap_until = 0.0
        self._tap_second = 0
        self._tap_kept = 0

    # --- tap --------------------------------------------------------------------------
    def tap_activate(self, now: float) -> None:
        self._tap_until = now + TAP_IDLE

    # --- per request ------------------------------------------------------------------
    def begin(
        self, direction: str, head: RequestHead, *, source: str, destination: str = ""
    ) -> tuple[RequestRecord, RequestHead]:
        """A record for a new request, and the head to forward (trace context injected)."""
        # One pass over the headers for the request id and the trace context, which also
        # copies what is forwarded: every field but the incoming trace context.
        request_id = None
        found: dict[bytes, bytes] | None = None
        forward: list[Header] = []
        for header in head.headers:
            name = header[0]
            if name in CONTEXT_HEADERS:
                if found is None:
                    found = {}
                found[name] = header[1]
                if name == b"tracestate":  # kept unless a non-empty tracestate replaces it
                    forward.append(header)
            else:
                if name == b"x-request-id" and request_id is None:
                    request_id = header[1]
                forward.append(header)
        rid = request_id.decode("latin-1")[:MAX_ID] if request_id else new_span_id()
        record = RequestRecord(
            direction,
            time.time(),
            trio.current_time(),
            rid,
            head.method.decode("ascii", "replace"),
            head.authority.decode("latin-1"),
            head.path.decode("latin-1"),
            source,
            destination,
        )
        parent = context_from(found) if found is not None else None
        sampled = self.tracer.begin(record, parent)
        state = parent.tracestate if parent is not None else ""
        if state:
            forward = [h for h in forward if h[0] != b"tracestate"]
        forward.append((b"traceparent", traceparent(record.trace_id, record.span_id, sampled)))
        if state:
            forward.append((b"tracestate", state.encode("latin-1")))
        if request_id is None:
            forward.append((b"x-request-id", rid.encode()))
        CURRENT.set(record)
        return record, RequestHead(
            head.method, head.scheme, head.authority, head.path, tuple(forward)
        )

    def end(self, record: RequestRecord, status: int, seconds: float) -> None:
        CURRENT.set(None)
        record.status = status
        record.duration = seconds
        if record.request_bytes or record.response_bytes:
            self.metrics.record_bytes(
                record.direction,
                record.source,
                record.destination,
                record.request_bytes,
                record.response_bytes,
            )
        self.golden.record(
            record.direction,
            record.source,
            record.destination,
            0 < status < 500,
            seconds,
            time.monotonic(),
            status,
        )
        if record.sampled:
            self.tracer.end(record)
        logging = self._logging
        if logging is not None or self._tap_until:
            # Identities are only read by the access log and tap: built only for them.
            prefix = self._identity_prefix
            if record.direction == "outbound":
                record.source_identity = prefix + record.source
            record.destination_identity = prefix + record.destination
            if logging is not None:
                logging.offer(record)
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

    # --- access log and mesh-wide settings ---------------------------------------------
    @property
    def access_log(self) -> AccessLog | None:
        """The access-log writer (None until there is one); setting one also turns it on."""
        return self._access_log

    @access_log.setter
    def access_log(self, writer: AccessLog | None) -> None:
        self._access_log = writer
        self._logging = writer

    def configure(
        self, *, access_log: bool | None = None, trace_sampling: float | None = None
    ) -> None:
        """Apply mesh-wide telemetry settings over the agent's own; None restores the agent's.

        ``access_log``: True logs every request (to the agent's ``--access-log`` sink, or
        stdout when it has none), False stops logging. ``trace_sampling``: the fraction of
        new traces to sample (a caller's decision is still honoured). Cheap and
        synchronous: meant to be called from a policy (MeshConfig) observer.
        """
        self.tracer.sampling = self._agent_sampling if trace_sampling is None else trace_sampling
        on = self._agent_logs if access_log is None else access_log
        if on and self._access_log is None:
            self._access_log = AccessLog("-", capacity=self._access_log_capacity)
            self._access_log_opened.set()
        self._logging = self._access_log if on else None

    @property
    def logging_requests(self) -> bool:
        """Whether finished requests currently go to the access log."""
        return self._logging is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work: the span exporter, and the access-log writer (once there is one)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tracer.run)
            task_status.started()
            if self._access_log is None:
                await self._access_log_opened.wait()
            writer = self._access_log
            assert writer is not None
            try:
                await writer.run()
            finally:
                writer.close()

    async def aclose(self) -> None:
        """Export the spans still buffered (within the caller's deadline)."""
        await self.tracer.shutdown()
