"""A trio shell around the sans-IO ``h2`` state machine, for both ends of a connection.

One reader task feeds bytes to h2 and routes its events to per-stream state; any task
may send. Flow control gives real backpressure: received DATA is acknowledged only
when the consumer takes it, so a slow reader stalls its peer instead of growing our
memory, and senders wait for window before writing.

h2 treats any GOAWAY (sent or received) as the end of the whole connection; we need
graceful drain (streams below last-stream-id finish), so ``_DrainingH2Connection``
keeps the state machine open on a NO_ERROR GOAWAY and sends ours as a raw frame.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, PushPromiseFrame, RstStreamFrame

from peermesh.core.errors import TransportError
from peermesh.net.http.h2fast import FastDecoder, FastEncoder, check_received, prepare_outbound
from peermesh.net.http.headers import Headers

log = logging.getLogger(__name__)

STREAM_WINDOW = 1 << 20  # 1 MiB per stream bounds what one slow reader can pin
CONNECTION_WINDOW = 8 << 20  # 8 MiB per connection bounds the whole connection
MAX_FRAME = 1 << 16
MAX_HEADER_LIST = 64 << 10
RESET_FLOOD_LIMIT = 200  # peer-initiated resets per second before we call it an attack
READ_SIZE = 1 << 16
HIGH_WATER = 256 << 10  # unsent bytes after which a sender flushes itself

ErrorCode = h2.errors.ErrorCodes


class StreamReset(TransportError):
    """The peer (or the connection going away) reset a stream."""

    def __init__(self, error_code: int, message: str = "") -> None:
        self.error_code = error_code
        name = _error_name(error_code)
        super().__init__(message or f"stream reset by peer ({name})")


class ConnectionLost(StreamReset):
    """The whole connection ended while the stream was still open."""

    def __init__(self, message: str = "connection closed") -> None:
        super().__init__(int(ErrorCode.CONNECT_ERROR), message)


class ConnectionUnavailable(TransportError):
    """The connection cannot take new streams (closed, GOAWAY, or full)."""


class _StreamRefused(StreamReset):
    pass


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


_RESPONSE_EVENTS = (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)
_HEADER_EVENTS = (
    h2.events.RequestReceived,
    h2.events.ResponseReceived,
    h2.events.InformationalResponseReceived,
    h2.events.TrailersReceived,
    h2.events.PushedStreamReceived,
)


class _DrainingH2Connection(h2.connection.H2Connection):
    """h2's connection, minus tearing everything down on a graceful GOAWAY.

    Two hot-path changes (see ``h2fast``): received header blocks are validated by
    ``check_received`` (same rules and messages as h2's ``validate_inbound_headers``,
    which is switched off), and ``_receive_frame`` no longer formats ``repr(frame)``
    for a trace log that h2's dummy logger throws away.
    """

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        # h2 4.4's _receive_frame, minus the eager repr(frame) for its trace log.
        events: list[h2.events.Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCode.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_headers_frame(self, frame: HeadersFrame) -> Any:
        frames, events = super()._receive_headers_frame(frame)
        _check_events(events)
        return frames, events

    def _receive_push_promise_frame(self, frame: PushPromiseFrame) -> Any:
        frames, events = super()._receive_push_promise_frame(frame)
        _check_events(events)
        return frames, events

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCode.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        """Queue a NO_ERROR GOAWAY without closing h2's state machine."""
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=0)
        self._prepare_for_sending([frame])


def _check_events(events: list[h2.events.Event]) -> None:
    """Validate every received header block (raises h2's ProtocolError, as h2 would)."""
    for event in events:
        if isinstance(event, _HEADER_EVENTS):
            check_received(
                event.headers or [],
                response=isinstance(event, _RESPONSE_EVENTS),
                trailer=isinstance(event, h2.events.TrailersReceived),
            )


@dataclass(eq=False)
class H2Stream:
    """One HTTP/2 stream: read its message, write ours, or reset it."""

    session: H2Session
    stream_id: int
    headers: Headers | None = None
    trailers: Headers | None = None
    remote_ended: bool = False
    local_ended: bool = False
    reset_code: int | None = None
    #: True when the request HEADERS carried END_STREAM: a message without a body.
    headers_only: bool = False
    _chunks: deque[tuple[bytes, int]] = field(default_factory=deque)
    _changed: trio.Event = field(default_factory=trio.Event)
    _window: trio.Event = field(default_factory=trio.Event)
    _handler_scope: trio.CancelScope | None = None
    _error: StreamReset | None = None
    _final_sent: bool = False  # our final (non-1xx) response head went out

    @property
    def closed(self) -> bool:
        return self.reset_code is not None or (self.remote_ended and self.local_ended)

    # receiving -----------------------------------------------------------------
    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def receive_headers(self) -> Headers:
        """The response header block (client side); informational 1xx are skipped."""
        while self.headers is None:
            self._raise_if_reset()
            await self._changed.wait()
        return self.headers

    async def receive_data(self) -> bytes:
        """Next body chunk, or b"" at the end of the message.

        Acknowledging here, not on arrival, is what makes flow control push back.
        """
        while not self._chunks:
            if self.remote_ended:
                return b""
            self._raise_if_reset()
            await self._changed.wait()
        data, flow = self._chunks.popleft()
        if flow and self.reset_code is None:
            self.session._acknowledge(self.stream_id, flow)
        return data

    def _raise_if_reset(self) -> None:
        if self._error is not None:
            raise self._error
        if self.reset_code is not None:
            raise StreamReset(self.reset_code)

    # sending -------------------------------------------------------------------
    async def send_headers(self, headers: Headers, *, end_stream: bool = False) -> None:
        self._raise_if_reset()
        # A client stream's request went out with open_stream: what follows is trailers.
        trailer = self.session.client_side or self._final_sent
        block = prepare_outbound(headers, response=not trailer, trailer=trailer)
        if not trailer and not (block and block[0][1][:1] == b"1"):  # not a 1xx
            self._final_sent = True
        self.session._conn.send_headers(self.stream_id, block, end_stream=end_stream)
        if end_stream:
            self.local_ended = True
        await self.session._queued(0, final=end_stream)
        self.session._forget_if_closed(self)

    async def send_data(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting for flow-control window as needed."""
        conn = self.session._conn
        view = memoryview(data)
        while True:
            self._raise_if_reset()
            if not view:
                if end_stream:
                    conn.end_stream(self.stream_id)
                    self.local_ended = True
                    await self.session._queued(0, final=True)
                    self.session._forget_if_closed(self)
                return
            window = conn.local_flow_control_window(self.stream_id)
            size = min(window, conn.max_outbound_frame_size, len(view))
            if size <= 0:
                await self._window.wait()
                continue
            last = end_stream and size == len(view)
            conn.send_data(self.stream_id, view[:size].tobytes(), end_stream=last)
            view = view[size:]
            if last:
                self.local_ended = True
            await self.session._queued(size, final=last)
            if last:
                self.session._forget_if_closed(self)
                return

    async def end(self, trailers: Headers | None = None) -> None:
        """Finish our side of the stream, with trailers if any."""
        if self.local_ended:
            return
        if trailers:
            await self.send_headers(trailers, end_stream=True)
        else:
            await self.send_data(b"", end_stream=True)

    def _release_unread(self) -> None:
        """Give back the flow-control credit of DATA nobody will read any more.

        Received DATA is acknowledged when the consumer takes it; a stream abandoned
        with chunks still queued (reset, or a handler that answered without reading the
        whole body) would otherwise keep that credit forever, and once the abandoned
        bytes add up to the connection window every stream on the connection stalls.
        """
        if not self._chunks:
            return
        unread = sum(flow for _, flow in self._chunks)
        self._chunks.clear()
        if unread:
            self.session._acknowledge(self.stream_id, unread)

    def reset(self, error_code: int = ErrorCode.CANCEL) -> None:
        """Abandon the stream (RST_STREAM); safe to call more than once."""
        self._release_unread()
        if self.reset_code is not None or self.closed:
            return
        self.reset_code = int(error_code)
        try:
            self.session._conn.reset_stream(self.stream_id, error_code=error_code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.session._kick_writer()
        self._wake()
        self._window.set()
        self.session._forget_if_closed(self)

    def _window_opened(self) -> None:
        self._window.set()
        self._window = trio.Event()


StreamHandler = Callable[[H2Stream], Awaitable[None]]


@dataclass
class SessionStats:
    """Counters a session keeps for status pages and metrics."""

    streams_opened: int = 0
    protocol_errors: int = 0


class H2Session:
    """One HTTP/2 connection over any trio stream (TCP for h2c, TLS for mTLS).

    Server sessions pass ``handler``: every request stream runs it in its own task,
    inside a cancel scope that a peer's RST_STREAM cancels. ``run()`` must live in a
    nursery; it returns when the connection is over.
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
        on_protocol_error: Callable[[str], None] | None = None,
        peer: Any = None,
    ) -> None:
        self.transport = transport
        self.client_side = client_side
        self.peer = peer
        self._handler = handler
        self._initial_data = initial_data
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_protocol_error = on_protocol_error
        # Header validation and normalisation are done by h2fast (same rules, one pass):
        # inbound in _DrainingH2Connection, outbound in prepare_outbound before sending.
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._conn = _DrainingH2Connection(config=config)
        self._conn.encoder = FastEncoder()  # type: ignore[assignment]
        decoder = FastDecoder()
        decoder.max_header_list_size = self._conn.decoder.max_header_list_size
        decoder.max_allowed_table_size = self._conn.decoder.max_allowed_table_size
        self._conn.decoder = decoder
        self._conn.initiate_connection()
        # Announced after the preface; h2 applies each value when the peer ACKs it.
        settings: dict[h2.settings.SettingCodes | int, int] = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }
        if client_side:
            settings[h2.settings.SettingCodes.ENABLE_PUSH] = 0
        self._conn.update_settings(settings)
        self._conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._streams: dict[int, H2Stream] = {}
        self._send_lock = trio.Lock()
        self._unsent = 0  # bytes of DATA queued in h2 since the last flush
        self._writer_wakeup = trio.Event()
        self._closed = trio.Event()
        self._handlers: trio.Nursery | None = None
        self._ping_acked = trio.Event()
        self._settings_received = trio.Event()
        self._resets_window_start = 0.0
        self._resets_in_window = 0
        self.goaway_received: int | None = None  # last_stream_id the peer will process
        self.draining = False
        self.close_reason = ""
        self.stats = SessionStats()
        self.highest_stream_id = 0

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
        limit = self._conn.remote_settings.max_concurrent_streams
        # Our own count: h2's open_outbound_streams scans every stream on each call.
        return len(self._streams) < limit

    # lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        """Read, dispatch and write until the connection ends."""
        try:
            async with trio.open_nursery() as nursery:
                self._handlers = nursery
                nursery.start_soon(self._writer)
                if self._ping_interval:
                    nursery.start_soon(self._keepalive)
                await self._flush_quietly()
                if not self._initial_data or await self._feed(self._initial_data):
                    await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            self._mark_closed(self.close_reason or "connection closed")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await self.transport.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

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
            if not await self._feed(bytes(data)):
                return
            if self.draining and not self._streams:
                self.close_reason = "drained"
                await self._flush_quietly()
                return

    async def _feed(self, data: bytes) -> bool:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.stats.protocol_errors += 1
            self.close_reason = f"protocol error: {exc}"
            if self._on_protocol_error is not None:
                self._on_protocol_error(type(exc).__name__)
            await self._flush_quietly()  # h2 has queued the GOAWAY that says why
            return False
        for event in events:
            self._dispatch(event)
        self._kick_if_pending()
        return self._conn.state_machine.state != h2.connection.ConnectionState.CLOSED

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.headers = list(event.headers)
                stream.headers_only = event.stream_ended is not None
                stream._wake()
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None or stream.reset_code is not None:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream._chunks.append((event.data, event.flow_controlled_length))
                stream._wake()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.remote_ended = True
                stream._wake()
                self._forget_if_closed(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in self._streams.values():
                    stream._window_opened()
            else:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._window_opened()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_received.set()
            for stream in self._streams.values():
                stream._window_opened()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_acked.set()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream = H2Stream(self, event.stream_id, headers=list(event.headers))
        self.highest_stream_id = max(self.highest_stream_id, event.stream_id)
        if self.draining or self._handler is None or self._handlers is None:
            # Arrived after our GOAWAY (or we are a client): tell the peer to retry elsewhere.
            self._conn.reset_stream(event.stream_id, error_code=ErrorCode.REFUSED_STREAM)
            return
        if event.stream_ended is not None:
            stream.remote_ended = True
            stream.headers_only = True
        self._streams[event.stream_id] = stream
        self.stats.streams_opened += 1
        self._handlers.start_soon(self._run_handler, stream)

    async def _run_handler(self, stream: H2Stream) -> None:
        assert self._handler is not None
        with trio.CancelScope() as scope:
            stream._handler_scope = scope
            try:
                await self._handler(stream)
            except StreamReset:
                pass
            except Exception:
                log.exception("request handler failed on stream %d", stream.stream_id)
                stream.reset(ErrorCode.INTERNAL_ERROR)
        if stream.reset_code is None and not self.is_closed:
            if not stream.local_ended:
                stream.reset(ErrorCode.INTERNAL_ERROR)
            elif not stream.remote_ended:
                # We answered before reading the whole request: tell the client to stop.
                stream.reset(ErrorCode.NO_ERROR)
        if not self.is_closed:
            stream._release_unread()  # body the handler left unread
        self._streams.pop(stream.stream_id, None)
        if self.draining and not self._streams:
            self._kick_writer()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if event.remote_reset:
            now = trio.current_time()
            if now - self._resets_window_start > 1.0:
                self._resets_window_start = now
                self._resets_in_window = 0
            self._resets_in_window += 1
            if self._resets_in_window > RESET_FLOOD_LIMIT:
                self._abort(ErrorCode.ENHANCE_YOUR_CALM, "stream reset flood from peer")
        if stream is None:
            return
        stream.reset_code = int(event.error_code)
        stream._release_unread()
        if event.error_code == ErrorCode.REFUSED_STREAM:
            stream._error = _StreamRefused(int(event.error_code), "stream refused by peer")
        stream._wake()
        stream._window_opened()
        if stream._handler_scope is not None:
            stream._handler_scope.cancel()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        self.goaway_received = last
        code = int(event.error_code) if event.error_code is not None else 0
        for stream_id, stream in list(self._streams.items()):
            # last-stream-id names streams the *sender* of GOAWAY may have processed: it
            # only covers streams we initiated, i.e. the client side's requests.
            beyond = self.client_side and stream_id > last
            if beyond or code != 0:
                self._streams.pop(stream_id, None)
                stream._error = ConnectionLost(
                    f"peer sent GOAWAY ({_error_name(code)}); stream {stream_id} not processed"
                )
                stream.reset_code = code or int(ErrorCode.REFUSED_STREAM)
                stream._release_unread()
                stream._wake()
                stream._window_opened()
                if stream._handler_scope is not None:
                    stream._handler_scope.cancel()
        if code != 0 or not self._streams:
            self._abort(None, f"peer sent GOAWAY ({_error_name(code)})")

    def _abort(self, error_code: int | None, reason: str) -> None:
        """Close the connection now (after flushing what h2 has queued)."""
        if self.is_closed:
            return
        self.close_reason = reason
        if error_code is not None:
            try:
                self._conn.close_connection(error_code=error_code)
            except h2.exceptions.ProtocolError:
                pass
        self._kick_writer()
        self._mark_closed(reason)
        if self._handlers is not None:
            # Give the writer one chance to send the GOAWAY, then stop.
            try:
                self._handlers.start_soon(self._close_soon)
            except RuntimeError:  # the session's nursery already ended
                pass

    async def _close_soon(self) -> None:
        await self._flush_quietly()
        assert self._handlers is not None
        self._handlers.cancel_scope.cancel()

    def _mark_closed(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for stream in list(self._streams.values()):
            if stream._error is None and not stream.closed:
                stream._error = ConnectionLost(reason)
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
            self._conn.send_graceful_goaway(self.highest_stream_id)
        self._kick_writer()
        if not self._streams:
            self._abort(None, "drained")

    def close(self, reason: str = "closed locally") -> None:
        """Hard close (GOAWAY NO_ERROR, cancel everything)."""
        self._abort(ErrorCode.NO_ERROR, reason)

    # writing -------------------------------------------------------------------
    def _kick_writer(self) -> None:
        self._writer_wakeup.set()

    def _kick_if_pending(self) -> None:
        """Wake the writer only if h2 queued bytes (most received frames queue none).

        Waking it for nothing costs a task switch and an empty flush per received chunk.
        ``_data_to_send`` is h2's outgoing buffer (h2 4.x; tests/test_dataplane_stalls.py
        checks it is still there).
        """
        if self.draining or self._conn._data_to_send:
            self._writer_wakeup.set()

    async def _writer(self) -> None:
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            if not await self._flush_quietly():
                return
            if self.draining and not self._streams and not self.is_closed:
                self._abort(None, "drained")

    async def _queued(self, nbytes: int, *, final: bool = False) -> None:
        """Frames were queued in h2: let the writer task send them in one batch.

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
            self._kick_writer()

    async def _flush(self, *, shield: bool = True) -> None:
        # Uncontended (the usual case) the lock is taken without a scheduling round trip.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            self._unsent = 0
            data = self._conn.data_to_send()
            while data:
                try:
                    if shield:
                        # Bytes taken from h2 must reach the wire whole. A stream's task
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
                data = self._conn.data_to_send()
        finally:
            self._send_lock.release()

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

    def _acknowledge(self, stream_id: int, flow: int) -> None:
        try:
            self._conn.acknowledge_received_data(flow, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self._kick_if_pending()  # h2 sends WINDOW_UPDATE only once enough is consumed

    def _forget_if_closed(self, stream: H2Stream) -> None:
        if stream.closed and stream._handler_scope is None:
            self._streams.pop(stream.stream_id, None)

    async def _keepalive(self) -> None:
        """PING when idle-ish; no ack within the timeout means the peer is gone."""
        assert self._ping_interval is not None
        while True:
            await trio.sleep(self._ping_interval)
            self._ping_acked = trio.Event()
            self._conn.ping(b"pmkeepal")
            if not await self._flush_quietly():
                return
            with trio.move_on_after(self._ping_timeout):
                await self._ping_acked.wait()
                continue
            self._abort(ErrorCode.NO_ERROR, "keepalive PING not answered")
            return

    # client side ---------------------------------------------------------------
    async def open_stream(self, headers: Headers, *, end_stream: bool = False) -> H2Stream:
        """Start a request; raises ConnectionUnavailable when no stream can be opened."""
        if not self.can_open_stream:
            raise ConnectionUnavailable(self.close_reason or "connection not accepting streams")
        try:
            block = prepare_outbound(headers, response=False, trailer=False)
        except h2.exceptions.ProtocolError as exc:
            raise ConnectionUnavailable(str(exc)) from exc
        stream_id = self._conn.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self._streams[stream_id] = stream
        self.stats.streams_opened += 1
        try:
            self._conn.send_headers(stream_id, block, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            self._streams.pop(stream_id, None)
            raise ConnectionUnavailable(str(exc)) from exc
        if end_stream:
            stream.local_ended = True
        # Sent with whatever else this scheduling round queued (one TLS record and one
        # syscall for many streams, see _queued); a dead transport fails the stream.
        try:
            await self._queued(0, final=end_stream)
        except ConnectionLost as exc:
            self._streams.pop(stream_id, None)
            raise ConnectionUnavailable(str(exc)) from exc
        return stream
