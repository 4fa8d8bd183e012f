"""The trio task that POSTs buffered spans to an OTLP/HTTP collector.

The tracer encodes each span at the end of its request into a bounded
:class:`~peermesh.observability.otlp.SpanBuffer`; this exporter drains it: every
``interval`` seconds, or as soon as ``batch`` spans wait, it sends them as one
``ExportTraceServiceRequest`` (``Content-Type: application/x-protobuf``) over one
kept-alive HTTP/1.1 connection (``h1wire``; ``https://`` with the system trust store).
A 429, 502, 503 or 504, a timeout or a broken connection is retried with exponential
backoff (a ``Retry-After`` in seconds is honoured, within the same bound); after
``attempts`` tries, or on any other answer, the batch is dropped and counted. Nothing
here can raise into a request: the proxies only ever touch the buffer.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from urllib.parse import urlsplit

import trio

from peermesh.net.caps import LogBudget
from peermesh.net.http import h1wire
from peermesh.observability.otlp import ExportHead, SpanBuffer, export_request

log = logging.getLogger(__name__)

INTERVAL = 5.0  # the OpenTelemetry SDK's default schedule delay
BATCH = 512  # the SDK's default export batch size
BATCH_BYTES = 4 << 20  # a collector's body limit is commonly 4 to 20 MiB
TIMEOUT = 10.0  # per attempt, as the SDK's OTLP exporter
ATTEMPTS = 5
BACKOFF = 1.0  # first retry delay; doubled each time
MAX_BACKOFF = 16.0
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_RESPONSE_BODY = 64 << 10  # what we read of an answer's body before giving up on it
READ_SIZE = 1 << 16
_SOCKET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class ExportFailed(Exception):
    """One attempt failed in a way worth retrying (connection, timeout, bad answer)."""


def traces_url(endpoint: str) -> str:
    """The collector's ``/v1/traces`` URL for ``--otlp-endpoint`` (appended unless given)."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


class SpanExporter:
    """Drains ``buffer`` to the collector at ``url``; counts what it sent and dropped."""

    def __init__(
        self,
        url: str,
        buffer: SpanBuffer,
        head: ExportHead,
        *,
        interval: float = INTERVAL,
        batch: int = BATCH,
        batch_bytes: int = BATCH_BYTES,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OTLP endpoint {url!r}: give an http:// or https:// URL")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        )
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            self._target = target.encode("ascii")
            self._authority = parts.netloc.rsplit("@", 1)[-1].encode("ascii")
            h1wire.serialize_request(b"POST", self._target, [(b"host", self._authority)])
        except (UnicodeEncodeError, h1wire.BadRequest) as exc:
            raise ValueError(f"OTLP endpoint {url!r}: not a URL we can send to ({exc})") from exc
        self.buffer = buffer
        self.head = head
        self.interval = interval
        self.batch = batch
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.exported = 0
        self.dropped: Counter[str] = Counter()  # spans, by reason
        self.failed_exports = 0
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._stream: trio.abc.Stream | None = None
        self._log = LogBudget()

    def wake(self) -> None:
        """A batch is full: export now rather than at the next interval."""
        if not self._wake.is_set():
            self._wake.set()

    def drop(self, reason: str, spans: int, why: str = "") -> None:
        """Count ``spans`` dropped for ``reason``, with a rate-limited warning."""
        self.dropped[reason] += spans
        held = self._log.allow(reason, time.monotonic())
        if held is not None:
            more = f" ({held} more times since the last line)" if held else ""
            detail = f": {why}" if why else ""
            log.warning("tracing: %d spans dropped (%s)%s%s", spans, reason, detail, more)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Export every interval, or when a batch is full, until cancelled."""
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self.export_all()
        finally:
            await self._close()

    async def export_all(self) -> bool:
        """Send everything buffered now; False if some of it had to be dropped."""
        ok = True
        async with self._lock:
            while len(self.buffer):
                spans = self.buffer.take(self.batch, self.batch_bytes)
                try:
                    ok = await self._export(spans) and ok
                except trio.Cancelled:
                    # The agent is stopping: the shutdown export sends these again (a
                    # collector that had already taken them sees them twice, not never).
                    self.buffer.put_back(spans)
                    raise
                except Exception as exc:  # a fault here must cost spans, never the agent
                    log.exception("tracing: export failed unexpectedly")
                    ok = self._failed("export-failed", len(spans), repr(exc))
        return ok

    async def aclose(self) -> None:
        """Export what is buffered (within the caller's deadline), then close.

        Spans still buffered when the deadline cancels the export are counted as dropped.
        """
        try:
            await self.export_all()
        finally:
            left = len(self.buffer)
            if left:
                self.buffer.take(left, self.buffer.bytes)
                self.drop("shutdown", left)
            await self._close()

    async def _export(self, spans: list[bytes]) -> bool:
        body = export_request(self.head, spans)
        why = ""
        for attempt in range(self.attempts):
            delay = min(self.backoff * (1 << attempt), MAX_BACKOFF)
            try:
                with trio.fail_after(self.timeout):
                    status, retry_after = await self._post(body)
            except h1wire.BadResponse as exc:  # not a collector speaking HTTP: no retry
                await self._close()
                return self._failed("bad-response", len(spans), str(exc))
            except (ExportFailed, trio.TooSlowError, *_SOCKET_ERRORS) as exc:
                await self._close()
                why = str(exc) or type(exc).__name__
            else:
                if 200 <= status < 300:
                    self.exported += len(spans)
                    return True
                why = f"the collector answered {status}"
                if status not in RETRYABLE:
                    return self._failed("rejected", len(spans), why)
                if retry_after is not None:
                    delay = min(retry_after, MAX_BACKOFF)
            if attempt + 1 < self.attempts:
                await trio.sleep(delay)
        return self._failed("export-failed", len(spans), why)

    def _failed(self, reason: str, spans: int, why: str) -> bool:
        self.failed_exports += 1
        self.drop(reason, spans, why)
        return False

    async def _connect(self) -> trio.abc.Stream:
        try:
            tcp = await trio.open_tcp_stream(self._host, self._port)
        except OSError as exc:
            raise ExportFailed(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        if self._tls is None:
            return tcp
        tls = trio.SSLStream(tcp, self._tls, server_hostname=self._host)
        await tls.do_handshake()
        return tls

    async def _post(self, body: bytes) -> tuple[int, float | None]:
        """(status, Retry-After seconds) of one POST, on the kept connection if any."""
        request = (
            h1wire.serialize_request(
                b"POST",
                self._target,
                [
                    (b"host", self._authority),
                    (b"content-type", b"application/x-protobuf"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
            + body
        )
        reused = self._stream is not None
        try:
            return await self._exchange(request)
        except _Stale:
            await self._close()
            if not reused:
                raise ExportFailed(
                    "the collector closed the connection without answering"
                ) from None
        # The kept connection had been closed by the collector: once more on a new one.
        try:
            return await self._exchange(request)
        except _Stale:
            await self._close()
            raise ExportFailed("the collector closed the connection without answering") from None

    async def _exchange(self, request: bytes) -> tuple[int, float | None]:
        if self._stream is None:
            self._stream = await self._connect()
        stream = self._stream
        reader = h1wire.ResponseReader(b"POST")
        answered = False
        try:
            await stream.send_all(request)
            status, retry_after, seen = 0, None, 0
            while True:
                event = reader.next_event()
                if isinstance(event, h1wire.NeedData):
                    data = await stream.receive_some(READ_SIZE)
                    if not data and not answered:
                        raise _Stale()
                    answered = True
                    reader.feed(bytes(data))
                elif isinstance(event, h1wire.ResponseHead):
                    status = event.status
                    retry_after = _retry_after(event.headers)
                elif isinstance(event, h1wire.EndOfMessage):
                    break
                else:
                    seen += len(event)
                    if seen > MAX_RESPONSE_BODY:  # an answer we will not read to its end
                        await self._close()
                        return status, retry_after
        except _SOCKET_ERRORS as exc:
            if not answered:
                raise _Stale() from exc
            raise
        if not reader.reusable:
            await self._close()
        return status, retry_after

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except _SOCKET_ERRORS:
                    pass


class _Stale(Exception):
    """The connection ended before any byte of an answer."""


def _retry_after(headers: list[h1wire.Header]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after" and value.isdigit():
            return float(int(value[:6]))
    return None
