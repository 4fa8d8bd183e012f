"""A trio shell around a sans-IO HTTP/2 engine, for both ends of a connection.

One reader task feeds bytes to the engine (``h2engine``: ``h2`` or ``nghttp2``) and
routes its events to per-stream state; any task may send. Flow control gives real
backpressure: received DATA is acknowledged only when the consumer takes it, so a slow
reader stalls its peer instead of growing our memory, and senders wait for window
before writing.

The engines are in ``h2conn`` (h2) and ``nghttp2``; the stream API in ``h2stream``;
the exceptions in ``h2errors``; routing engine events to streams in ``h2events``.
Callers import all of them from here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from peermesh.net.caps import StreamBudget
from peermesh.net.http.h2engine import (
    CONNECTION_WINDOW,
    HIGH_WATER,
    MAX_FRAME,
    MAX_HEADER_LIST,
    READ_SIZE,
    STREAM_WINDOW,
    EngineError,
    EngineName,
)
from peermesh.net.http.h2errors import (
    ConnectionLost,
    ConnectionUnavailable,
    ErrorCode,
    PeerUnresponsive,
    StreamReset,
)
from peermesh.net.http.h2events import H2EventRouter, SessionStats, StreamHandler
from peermesh.net.http.h2limits import Flood, FloodGuard, FrameScanner, H2Limits
from peermesh.net.http.h2select import new_engine
from peermesh.net.http.h2stream import H2Stream
from peermesh.net.http.h2timers import H2Timers, StreamTimedOut
from peermesh.net.http.headers import Headers
from peermesh.net.http.timeouts import Timeouts

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_FRAME",
    "MAX_HEADER_LIST",
    "STREAM_WINDOW",
    "ConnectionLost",
    "ConnectionUnavailable",
    "ErrorCode",
    "H2Limits",
    "H2Session",
    "H2Stream",
    "PeerUnresponsive",
    "SessionStats",
    "StreamHandler",
    "StreamReset",
    "StreamTimedOut",
]

log = logging.getLogger(__name__)


class H2Session(H2EventRouter, H2Timers):
    """One HTTP/2 connection over any trio stream (TCP for h2c, TLS for mTLS).

    Server sessions pass ``handler``: every request stream runs it in its own task,
    inside a cancel scope that a peer's RST_STREAM cancels. ``run()`` must live in a
    nursery; it returns when the connection is over.

    A server session given ``timeouts`` enforces the preface, connection idle, stream
    idle and body-progress deadlines (``h2timers``); one given ``stream_budget`` refuses
    a request stream (REFUSED_STREAM) while the agent-wide budget is spent. Each breach
    is reported to ``on_breach`` with its counter reason.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        client_side: bool,
        handler: StreamHandler | None = None,
        max_concurrent_streams: int = 1000,
        initial_data: bytes = b"",
        ping_interval: float | None = None,
        ping_timeout: float = 10.0,
        probe_after: float | None = None,
        probe_timeout: float = 1.0,
        on_protocol_error: Callable[[str], None] | None = None,
        on_limit: Callable[[str], None] | None = None,
        limits: H2Limits | None = None,
        peer: Any = None,
        engine: EngineName | None = None,
        timeouts: Timeouts | None = None,
        stream_budget: StreamBudget | None = None,
        on_breach: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.client_side = client_side
        self.peer = peer
        self._handler = handler
        self._initial_data = initial_data
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._probe_after = probe_after
        self._probe_timeout = probe_timeout
        self._last_received = 0.0
        self._lost: ConnectionLost | None = None
        self._on_protocol_error = on_protocol_error
        # Called with a Flood value or a stream fault ("refused", "malformed"): a counter.
        self._on_limit = on_limit
        self.guard = FloodGuard(limits)
        self._scanner = FrameScanner(server_side=not client_side)
        self.conn = new_engine(
            engine, client_side=client_side, max_concurrent_streams=max_concurrent_streams
        )
        self._streams: dict[int, H2Stream] = {}
        self._send_lock = trio.Lock()
        self._unsent = 0  # bytes of DATA queued in the engine since the last flush
        self._unread = self._owed = 0  # received DATA buffered in streams (h2events)
        self._writer_wakeup = trio.Event()
        self._closed = trio.Event()
        self._handlers: trio.Nursery | None = None
        self._reader_done = False
        self._ping_acked = trio.Event()
        self._settings_received = trio.Event()
        self.goaway_received: int | None = None  # last_stream_id the peer will process
        self.draining = False
        self.close_reason = ""
        self.stats = SessionStats()
        self.highest_stream_id = 0
        self._timeouts = None if client_side else timeouts
        self._budget = None if client_side else stream_budget
        self._on_breach = on_breach
        self._timer_scope: trio.CancelScope | None = None
        self._started_at = 0.0
        self._idle_since: float | None = None

    # status --------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def can_open_stream(self) -> bool:
        """True while a new request may start on this connection."""
        if self.is_closed or self.goaway_received is not None or self.draining:
            return False
        limit = self.conn.remote_max_concurrent_streams
        # Our own count: h2's open_outbound_streams scans every stream on each call.
        return len(self._streams) < limit

    # lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Read, dispatch and write until the connection ends."""
        try:
            async with trio.open_nursery() as nursery:
                self._handlers = nursery
                nursery.start_soon(self._writer)
                if self._timeouts is not None:
                    self._started_at = self._idle_since = trio.current_time()
                    nursery.start_soon(self._timers)
                if self._ping_interval or self._probe_after:
                    self._last_received = trio.current_time()
                    nursery.start_soon(self._keepalive)
                await self._flush_quietly()
                if not self._initial_data or await self._feed(self._initial_data):
                    await self._reader()
                self._reader_done = True
                # A GOAWAY saying why we stop (a flood verdict) is still queued: send it,
                # but never wait long on a peer that does not read.
                with trio.move_on_after(1):
                    if await self._flush_quietly() and self.stats.flood is not None:
                        await self._linger()
                nursery.cancel_scope.cancel()
        finally:
            self._mark_closed(self.close_reason or "connection closed")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await self.transport.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _linger(self) -> None:
        """Half-close and drop what the peer still sends (bounded), then let run() close.

        Closing with unread input makes the kernel send RST, which can destroy the
        GOAWAY that says why before the peer reads it (Envoy's delayed close).
        """
        send_eof = getattr(self.transport, "send_eof", None)  # TLS streams have none
        try:
            if send_eof is not None:
                await send_eof()
            for _ in range(16):  # at most 1 MiB
                if not await self.transport.receive_some(READ_SIZE):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.transport.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.close_reason = f"transport error: {exc}"
                return
            if not data:
                self.close_reason = "peer closed the connection"
                return
            if self._probe_after is not None:
                self._last_received = trio.current_time()
            if not await self._feed(bytes(data)):
                return
            if self.draining and not self._streams:
                self.close_reason = "drained"
                await self._flush_quietly()
                return

    async def _feed(self, data: bytes) -> bool:
        now = trio.current_time()
        for kind in self._scanner.scan(data):
            self._check(self.guard.received(kind, now))
            if self.is_closed:
                await self._flush_quietly()
                return False
        try:
            events = self.conn.receive(data)
        except EngineError as exc:
            self.stats.protocol_errors += 1
            self.close_reason = f"protocol error: {exc}"
            if self._on_protocol_error is not None:
                self._on_protocol_error(type(exc).__name__)
            await self._flush_quietly()  # the engine has queued the GOAWAY that says why
            return False
        faults = self.conn.stream_faults
        if faults:
            for why in faults:
                self.stats.stream_faults += 1
                if self._on_limit is not None:
                    self._on_limit(why)
                self._check(self.guard.queued(control=1))  # the RST_STREAM we queued
            faults.clear()
        for event in events:
            if self.is_closed:
                break
            self._dispatch(event)
        self._kick_if_pending()
        return not self.conn.is_closed

    def _check(self, verdict: Flood | None) -> None:
        """Close the connection with ENHANCE_YOUR_CALM when the guard says so."""
        if verdict is None or self.is_closed:
            return
        self.stats.flood = verdict
        if self._on_limit is not None:
            self._on_limit(verdict.value)
        log.warning("closing HTTP/2 connection from %s: %s", self.peer, verdict.value)
        self._abort(ErrorCode.ENHANCE_YOUR_CALM, f"{verdict.value} from peer")

    def _abort(self, error_code: int | None, reason: str) -> None:
        """Close the connection now (after flushing what the engine has queued)."""
        if self.is_closed:
            return
        self.close_reason = reason
        if error_code is not None:
            try:
                self.conn.close_connection(error_code=error_code)
            except EngineError:
                pass
        self.kick_writer()
        self._mark_closed(reason)
        if self._handlers is not None:
            # Give the writer one chance to send the GOAWAY, then stop.
            try:
                self._handlers.start_soon(self._close_soon)
            except RuntimeError:  # the session's nursery already ended
                pass

    async def _close_soon(self) -> None:
        await self._flush_quietly()
        if self._reader_done:
            return  # run() is past the reader: it flushes, lingers and closes itself
        assert self._handlers is not None
        self._handlers.cancel_scope.cancel()

    def _mark_closed(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for stream in list(self._streams.values()):
            if stream._error is None and not stream.closed:
                stream._error = self._lost or ConnectionLost(reason)
            stream._wake()
            stream._window_opened()
            if stream._handler_scope is not None:
                stream._handler_scope.cancel()
        self._streams.clear()

    async def wait_settings(self) -> bool:
        """Wait for the peer's first SETTINGS (its stream limit); False if it closed first."""
        async with trio.open_nursery() as nursery:

            async def closed() -> None:
                await self._closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(closed)
            await self._settings_received.wait()
            nursery.cancel_scope.cancel()
        return self._settings_received.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def start_drain(self) -> None:
        """Graceful shutdown: GOAWAY now, finish streams already started, then close."""
        if self.draining or self.is_closed:
            return
        self.draining = True
        if not self.client_side:
            self.conn.send_graceful_goaway(self.highest_stream_id)
        self.kick_writer()
        if not self._streams:
            self._abort(None, "drained")

    def close(self, reason: str = "closed locally") -> None:
        """Hard close (GOAWAY NO_ERROR, cancel everything)."""
        self._abort(ErrorCode.NO_ERROR, reason)

    # writing -------------------------------------------------------------------
    def kick_writer(self) -> None:
        self._writer_wakeup.set()

    def _kick_if_pending(self) -> None:
        """Wake the writer only if the engine queued bytes (most received frames queue none).

        Waking it for nothing costs a task switch and an empty flush per received chunk.
        """
        if self.draining or self.conn.has_output:
            self._writer_wakeup.set()

    async def _writer(self) -> None:
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            # A flush under way (a stream sending inline) takes the engine's output until
            # it is empty before it lets go of the lock, so it sends what woke us too:
            # queueing behind it would only cost a lock hand-off and an empty flush.
            if not self._send_lock.locked() and not await self._flush_quietly():
                return
            if self.draining and not self._streams and not self.is_closed:
                self._abort(None, "drained")

    async def queued(self, nbytes: int, *, final: bool = False) -> None:
        """Frames were queued in the engine: let the writer task send them in one batch.

        Sending each frame as it is made costs a syscall (and a TLS record) per frame;
        batching what every stream queued in one scheduling round costs one. Past
        ``HIGH_WATER`` unsent bytes the caller flushes itself, which is the backpressure.
        A stream that just ended its side (``final``) and is alone on the connection has
        nothing to batch with: it sends at once, saving the writer's scheduling round
        (the latency of a lone request).
        """
        if self.is_closed:
            raise ConnectionLost(self.close_reason or "connection closed")
        self._unsent += nbytes
        if self._unsent >= HIGH_WATER or (final and len(self._streams) <= 1):
            await self._flush()
        else:
            self.kick_writer()

    async def _flush(self, *, shield: bool = True) -> None:
        # Uncontended (the usual case) the lock is taken without a scheduling round trip.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            self._unsent = 0
            data = self.conn.data_to_send()
            self._dispatch_sent()
            while data:
                try:
                    if shield:
                        # Bytes taken from the engine must reach the wire whole. A stream's task
                        # cancelled mid-write would leave half a frame on a connection
                        # other streams share, and desynchronise HPACK for all of them.
                        with trio.CancelScope(shield=True):
                            await self.transport.send_all(data)
                    else:
                        await self.transport.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self.close_reason = f"transport error: {exc}"
                    self._mark_closed(self.close_reason)
                    if self._handlers is not None:
                        self._handlers.cancel_scope.cancel()
                    raise ConnectionLost(self.close_reason) from exc
                data = self.conn.data_to_send()
                self._dispatch_sent()
            self.guard.flushed()
        finally:
            self._send_lock.release()

    def _dispatch_sent(self) -> None:
        """Route what the engine reported while serialising (nghttp2 closes streams then)."""
        for event in self.conn.pop_events():
            self._dispatch(event)

    async def _flush_quietly(self) -> bool:
        """Flush for the session's own tasks: a dead transport ends the session, never the
        caller's nursery (and so never the agent). Returns False once the transport is gone.

        Unshielded: only the session's own tasks call this, and they are cancelled only
        when the whole connection ends, when a half-written frame no longer matters.
        """
        try:
            await self._flush(shield=False)
        except ConnectionLost:
            return False
        return True

    def acknowledge(self, stream_id: int, flow: int, connection: int) -> None:
        """A reader took ``flow`` bytes; ``connection`` of them still owe connection credit."""
        try:
            self._taken(flow, connection)
            if connection == flow:
                self.conn.acknowledge_received_data(flow, stream_id)
            else:
                if connection:
                    self.conn.acknowledge_connection_data(connection)
                self.conn.acknowledge_stream_data(flow, stream_id)
        except EngineError:
            return
        self._kick_if_pending()  # WINDOW_UPDATE goes out only once enough is consumed

    def forget_if_closed(self, stream: H2Stream) -> None:
        if stream.closed and stream._handler_scope is None:
            self._streams.pop(stream.stream_id, None)

    async def _keepalive(self) -> None:
        """PING every ``ping_interval``, and sooner while streams wait on a silent peer.

        A partitioned peer's TCP connection does not fail by itself: a request waiting
        on it would wait until its caller gives up. So while streams are open and the
        peer has sent nothing for ``probe_after`` seconds, a PING must be answered within
        ``probe_timeout`` (gRPC's keepalive, with a deadline short enough to fail over);
        a slow app does not trip it, since the peer agent acknowledges the PING itself.
        """
        interval = self._ping_interval or math.inf
        probe = self._probe_after
        last_ping = trio.current_time()
        while True:
            now = trio.current_time()
            due = last_ping + interval
            if probe is not None and self._streams:
                due = min(due, max(self._last_received, last_ping) + probe)
            if now < due:
                # Streams may open meanwhile: look again at least every probe period.
                await trio.sleep(min(due - now, probe if probe is not None else math.inf))
                continue
            probing = probe is not None and bool(self._streams)
            timeout = self._probe_timeout if probing else self._ping_timeout
            last_ping = now
            self._ping_acked = trio.Event()
            self.conn.ping(b"pmkeepal")
            with trio.move_on_after(timeout):
                if not await self._flush_quietly():
                    return
                await self._ping_acked.wait()
                continue
            reason = f"peer did not answer a PING within {timeout:g}s"
            if probing:
                self._lost = PeerUnresponsive(reason)
            self._abort(ErrorCode.NO_ERROR, reason)
            return

    # client side ---------------------------------------------------------------
    async def open_stream(self, headers: Headers, *, end_stream: bool = False) -> H2Stream:
        """Start a request; raises ConnectionUnavailable when no stream can be opened."""
        if not self.can_open_stream:
            raise ConnectionUnavailable(self.close_reason or "connection not accepting streams")
        try:
            block = self.conn.prepare_outbound(headers, response=False, trailer=False)
        except EngineError as exc:
            raise ConnectionUnavailable(str(exc)) from exc
        stream_id = self.conn.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self._streams[stream_id] = stream
        self.stats.streams_opened += 1
        try:
            self.conn.send_headers(stream_id, block, end_stream=end_stream)
        except EngineError as exc:
            self._streams.pop(stream_id, None)
            raise ConnectionUnavailable(str(exc)) from exc
        if end_stream:
            stream.local_ended = True
        # Sent with whatever else this scheduling round queued (one TLS record and one
        # syscall for many streams, see _queued); a dead transport fails the stream.
        try:
            await self.queued(0, final=end_stream)
        except ConnectionLost as exc:
            self._streams.pop(stream_id, None)
            raise ConnectionUnavailable(str(exc)) from exc
        return stream
