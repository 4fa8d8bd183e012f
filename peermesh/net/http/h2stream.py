"""One HTTP/2 stream as its handler or caller sees it: read the message, write ours, reset."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import trio

from peermesh.net.http.h2engine import EngineError, H2Engine
from peermesh.net.http.h2errors import ErrorCode, StreamReset
from peermesh.net.http.headers import Headers
from peermesh.net.http.timeouts import StreamTimes


class StreamOwner(Protocol):
    """What a stream needs from the session that carries it."""

    client_side: bool

    @property
    def conn(self) -> H2Engine: ...

    def acknowledge(self, stream_id: int, flow: int, connection: int) -> None: ...

    async def queued(self, nbytes: int, *, final: bool = False) -> None: ...

    def forget_if_closed(self, stream: H2Stream) -> None: ...

    def kick_writer(self) -> None: ...

    def note_reset(self) -> None: ...

    def body_wait_started(self, stream: H2Stream) -> None: ...


@dataclass(eq=False)
class H2Stream:
    """One HTTP/2 stream: read its message, write ours, or reset it."""

    session: StreamOwner
    stream_id: int
    headers: Headers | None = None
    trailers: Headers | None = None
    remote_ended: bool = False
    local_ended: bool = False
    reset_code: int | None = None
    #: True when the request HEADERS carried END_STREAM: a message without a body.
    headers_only: bool = False
    _chunks: deque[tuple[bytes, int]] = field(default_factory=deque)
    #: Flow-controlled bytes in ``_chunks`` whose connection-level credit is still owed
    #: (the session returns it on arrival while the connection's unread bytes are few).
    _conn_owed: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)
    _window: trio.Event = field(default_factory=trio.Event)
    _handler_scope: trio.CancelScope | None = None
    _error: StreamReset | None = None
    _final_sent: bool = False  # our final (non-1xx) response head went out
    #: Deadline inputs of a server stream under timeouts (None: no timeouts apply).
    times: StreamTimes | None = None

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
        while True:
            while not self._chunks:
                if self.remote_ended:
                    return b""
                self._raise_if_reset()
                times = self.times
                if times is None:
                    await self._changed.wait()
                    continue
                # The body timeout runs only while we want bytes the peer does not send.
                times.waiting_since = trio.current_time()
                self.session.body_wait_started(self)
                try:
                    await self._changed.wait()
                finally:
                    times.waiting_since = None
            data, flow = self._chunks.popleft()
            if flow and self.reset_code is None:
                owed = min(flow, self._conn_owed)
                self._conn_owed -= owed
                self.session.acknowledge(self.stream_id, flow, owed)
            # b"" means the end of the message to our callers: an empty DATA frame
            # (padding only, or nothing) is not the end, only END_STREAM is.
            if data:
                return data

    def _active(self) -> None:
        """A frame of this stream went either way: its idle clock starts again."""
        if self.times is not None:
            self.times.last_activity = trio.current_time()

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
        block = self.session.conn.prepare_outbound(headers, response=not trailer, trailer=trailer)
        if not trailer and not (block and block[0][1][:1] == b"1"):  # not a 1xx
            self._final_sent = True
        self.session.conn.send_headers(self.stream_id, block, end_stream=end_stream)
        self._active()
        if end_stream:
            self.local_ended = True
        await self.session.queued(0, final=end_stream)
        self.session.forget_if_closed(self)

    async def send_data(self, data: bytes, *, end_stream: bool = False) -> None:
        """Send body bytes, waiting for flow-control window as needed."""
        conn = self.session.conn
        view = memoryview(data)
        while True:
            self._raise_if_reset()
            if not view:
                if end_stream:
                    conn.end_stream(self.stream_id)
                    self._active()
                    self.local_ended = True
                    await self.session.queued(0, final=True)
                    self.session.forget_if_closed(self)
                return
            window = conn.local_flow_control_window(self.stream_id)
            size = min(window, conn.max_outbound_frame_size, len(view))
            if size <= 0:
                await self._window.wait()
                continue
            last = end_stream and size == len(view)
            conn.send_data(self.stream_id, view[:size].tobytes(), end_stream=last)
            self._active()
            view = view[size:]
            if last:
                self.local_ended = True
            await self.session.queued(size, final=last)
            if last:
                self.session.forget_if_closed(self)
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
        owed, self._conn_owed = self._conn_owed, 0
        if unread:
            self.session.acknowledge(self.stream_id, unread, owed)

    def reset(self, error_code: int = ErrorCode.CANCEL) -> None:
        """Abandon the stream (RST_STREAM); safe to call more than once."""
        self._release_unread()
        if self.reset_code is not None or self.closed:
            return
        self.reset_code = int(error_code)
        try:
            self.session.conn.reset_stream(self.stream_id, error_code=error_code)
        except EngineError:
            pass
        if error_code != ErrorCode.NO_ERROR:
            self.session.note_reset()  # NO_ERROR: we answered early, the stream succeeded
        self.session.kick_writer()
        self._wake()
        self._window.set()
        self.session.forget_if_closed(self)

    def _window_opened(self) -> None:
        self._window.set()
        self._window = trio.Event()
