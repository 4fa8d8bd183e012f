"""Routing an HTTP/2 engine's events to the streams of the session that read them.

``H2Session`` reads bytes and feeds its engine; what the engine reports (a request,
a response head, DATA, an end, a reset, a GOAWAY) lands here and becomes per-stream
state: woken readers and writers, started handler tasks, cancelled handler scopes.
It is a base of ``H2Session`` and owns no state of its own: the attributes it names
are the session's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from peermesh.net.caps import Refusal, StreamBudget
from peermesh.net.http.h2engine import UNREAD_CAP, Ev, Event, H2Engine, Header
from peermesh.net.http.h2errors import (
    ConnectionLost,
    ErrorCode,
    StreamRefused,
    StreamReset,
    error_name,
)
from peermesh.net.http.h2limits import Flood, FloodGuard
from peermesh.net.http.h2stream import H2Stream
from peermesh.net.http.headers import Headers
from peermesh.net.http.timeouts import StreamTimes

# The session's logger: a handler's failure is logged under the session it ran in.
log = logging.getLogger("peermesh.net.http.h2session")

StreamHandler = Callable[[H2Stream], Awaitable[None]]


@dataclass
class SessionStats:
    """Counters a session keeps for status pages and metrics."""

    streams_opened: int = 0
    protocol_errors: int = 0
    #: Streams reset for a fault of their own (malformed, over the stream limit).
    stream_faults: int = 0
    #: Why the connection was closed with ENHANCE_YOUR_CALM, if it was.
    flood: Flood | None = None


class H2EventRouter:
    """The event half of ``H2Session``: engine events in, stream state out."""

    client_side: bool
    conn: H2Engine
    guard: FloodGuard
    stats: SessionStats
    goaway_received: int | None
    draining: bool
    highest_stream_id: int
    _streams: dict[int, H2Stream]
    _unread: int  # flow-controlled bytes buffered in streams, not yet taken by readers
    _owed: int  # ... of which the connection-level credit has not gone back yet
    _handler: StreamHandler | None
    _handlers: trio.Nursery | None
    _settings_received: trio.Event
    _ping_acked: trio.Event
    _budget: StreamBudget | None
    _on_breach: Callable[[str], None] | None

    if TYPE_CHECKING:
        # Defined by H2Session.

        @property
        def is_closed(self) -> bool: ...

        def _abort(self, error_code: int | None, reason: str) -> None: ...

        def _check(self, verdict: Flood | None) -> None: ...

        def kick_writer(self) -> None: ...

        def forget_if_closed(self, stream: H2Stream) -> None: ...

        def acknowledge(self, stream_id: int, flow: int, connection: int) -> None: ...

        async def queued(self, nbytes: int, *, final: bool = False) -> None: ...

        def _stream_times(self, headers: Headers) -> StreamTimes | None: ...

        def _streams_changed(self, now: float) -> None: ...

        def body_wait_started(self, stream: H2Stream) -> None: ...

    def _dispatch(self, event: Event) -> None:
        tag = event[0]
        if tag == Ev.DATA:
            stream = self._streams.get(event[1])
            if stream is None or stream.reset_code is not None:
                self.conn.acknowledge_received_data(event[3], event[1])
            else:
                stream._active()
                flow = event[3]
                stream._chunks.append((event[2], flow))
                # Buffered: the connection's credit goes back now, so a reader that never
                # reads pins only its stream's window (Envoy's per-stream buffer limit),
                # up to UNREAD_CAP per connection; past it, it waits for room.
                if flow and self._unread - self._owed + flow <= UNREAD_CAP:
                    self.conn.acknowledge_connection_data(flow)
                else:
                    stream._conn_owed += flow
                    self._owed += flow
                self._unread += flow
                stream._wake()
        elif tag == Ev.REQUEST:
            self._on_request(event[1], event[2], event[3])
        elif tag == Ev.RESPONSE:
            stream = self._streams.get(event[1])
            if stream is not None:
                stream.headers = list(event[2])
                stream.headers_only = event[3]
                stream._wake()
        elif tag == Ev.TRAILERS:
            stream = self._streams.get(event[1])
            if stream is not None:
                stream.trailers = list(event[2])
                stream._active()
        elif tag == Ev.END:
            stream = self._streams.get(event[1])
            if stream is not None:
                stream.remote_ended = True
                stream._active()
                stream._wake()
                self.forget_if_closed(stream)
        elif tag == Ev.RESET:
            self._on_reset(event[1], event[2], remote=True)
        elif tag == Ev.CLOSED:
            # The engine reset or refused the stream itself; a clean close needs nothing,
            # unless the end of the peer's message never reached the stream: its reader
            # would wait forever, so it fails instead.
            code = event[2]
            if not code:
                stream = self._streams.get(event[1])
                if stream is not None and not stream.remote_ended:
                    code = ErrorCode.INTERNAL_ERROR
            if code:
                self._on_reset(event[1], code, remote=False)
        elif tag == Ev.WINDOW:
            if event[1] == 0:
                for stream in self._streams.values():
                    stream._window_opened()
            else:
                stream = self._streams.get(event[1])
                if stream is not None:
                    stream._active()
                    stream._window_opened()
        elif tag == Ev.SETTINGS:
            if not event[1]:
                self._settings_received.set()
                for stream in self._streams.values():
                    stream._window_opened()
        elif tag == Ev.GOAWAY:
            self._on_goaway(event[1], event[2])
        elif tag == Ev.PING_ACK:
            self._ping_acked.set()

    def _taken(self, flow: int, connection: int) -> None:
        """A reader took ``flow`` buffered bytes, ``connection`` of them still owing credit.

        The room this frees under UNREAD_CAP pays back credit other streams still owe,
        so the connection window never stays held by bytes that fit under the cap.
        """
        self._unread -= flow
        self._owed -= connection
        room = UNREAD_CAP - (self._unread - self._owed)
        if not self._owed or room <= 0:
            return
        for stream in self._streams.values():
            pay = min(stream._conn_owed, room)
            if pay:
                stream._conn_owed -= pay
                self._owed -= pay
                room -= pay
                self.conn.acknowledge_connection_data(pay)
                if not room or not self._owed:
                    return

    def _on_request(self, stream_id: int, headers: list[Header], ended: bool) -> None:
        stream = H2Stream(self, stream_id, headers=list(headers))
        self.highest_stream_id = max(self.highest_stream_id, stream_id)
        if self.draining or self._handler is None or self._handlers is None:
            # Arrived after our GOAWAY (or we are a client): tell the peer to retry elsewhere.
            self.conn.reset_stream(stream_id, error_code=ErrorCode.REFUSED_STREAM)
            return
        if self._budget is not None and not self._budget.acquire():
            # The agent's stream budget is spent: refuse this stream only (retryable).
            self.conn.reset_stream(stream_id, error_code=ErrorCode.REFUSED_STREAM)
            self.stats.stream_faults += 1
            if self._on_breach is not None:
                self._on_breach(Refusal.STREAMS.value)
            return
        if ended:
            stream.remote_ended = True
            stream.headers_only = True
        stream.times = self._stream_times(stream.headers or [])
        self._streams[stream_id] = stream
        now = trio.current_time()
        self._streams_changed(now)
        self.stats.streams_opened += 1
        self.guard.stream_opened(now)
        self._handlers.start_soon(self._run_handler, stream)

    async def _run_handler(self, stream: H2Stream) -> None:
        try:
            await self._serve_stream(stream)
        finally:
            if self._budget is not None:
                self._budget.release()

    async def _serve_stream(self, stream: H2Stream) -> None:
        assert self._handler is not None
        with trio.CancelScope() as scope:
            stream._handler_scope = scope
            try:
                if stream.reset_code is None and stream._error is None:
                    await self._handler(stream)
                # else: reset (or the connection lost) before its task first ran, e.g.
                # HEADERS and RST_STREAM in one read: the request must not reach the app.
            except StreamReset:
                pass
            except Exception:
                log.exception("request handler failed on stream %d", stream.stream_id)
                stream.reset(ErrorCode.INTERNAL_ERROR)
        if stream.reset_code is None and not self.is_closed:
            if not stream.local_ended:
                # A handler cancelled mid-answer (deadline, drain) is a cancellation, which
                # a gRPC client reports as CANCELLED rather than INTERNAL.
                cancelled = scope.cancelled_caught
                stream.reset(ErrorCode.CANCEL if cancelled else ErrorCode.INTERNAL_ERROR)
            elif not stream.remote_ended:
                # We answered before reading the whole request: tell the client to stop.
                stream.reset(ErrorCode.NO_ERROR)
        if not self.is_closed:
            stream._release_unread()  # body the handler left unread
        self._streams.pop(stream.stream_id, None)
        self._streams_changed(trio.current_time())
        if self.draining and not self._streams:
            self.kick_writer()

    def _on_reset(self, stream_id: int, error_code: int, *, remote: bool) -> None:
        stream = self._streams.pop(stream_id, None)
        if remote:
            self.note_reset()
        if stream is None:
            return
        if not remote and stream.reset_code is not None:
            return  # we reset it ourselves; the engine only confirms the close
        stream.reset_code = int(error_code)
        stream._release_unread()
        if error_code == ErrorCode.REFUSED_STREAM:
            stream._error = StreamRefused(int(error_code), "stream refused by peer")
        stream._wake()
        stream._window_opened()
        if stream._handler_scope is not None:
            stream._handler_scope.cancel()

    def _on_goaway(self, code: int, last: int) -> None:
        self.goaway_received = last
        for stream_id, stream in list(self._streams.items()):
            # last-stream-id names streams the *sender* of GOAWAY may have processed: it
            # only covers streams we initiated, i.e. the client side's requests.
            beyond = self.client_side and stream_id > last
            if beyond or code != 0:
                self._streams.pop(stream_id, None)
                stream._error = ConnectionLost(
                    f"peer sent GOAWAY ({error_name(code)}); stream {stream_id} not processed"
                )
                stream.reset_code = code or int(ErrorCode.REFUSED_STREAM)
                stream._release_unread()
                stream._wake()
                stream._window_opened()
                if stream._handler_scope is not None:
                    stream._handler_scope.cancel()
        if code != 0 or not self._streams:
            self._abort(None, f"peer sent GOAWAY ({error_name(code)})")

    def note_reset(self) -> None:
        """A stream ended by RST_STREAM, sent by either side.

        Only a server's connections judge resets: a client's are the peer's decision
        (a peer agent relaying its own clients' cancellations is not abusing us).
        """
        if not self.client_side:
            self._check(self.guard.stream_reset(trio.current_time()))
