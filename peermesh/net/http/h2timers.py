"""The timeout half of a server ``H2Session``: sleep until the next deadline, act on it.

Deadlines come from ``timeouts`` (data in, deadline out); this task only sleeps. The
sleep is one cancel scope whose deadline is pulled in when something starts a shorter
clock (a stream opens, a handler starts waiting for body bytes); progress only pushes
deadlines later, which the task finds when it wakes and recomputes.

What each expiry does: no preface (SETTINGS) in time closes the connection; idle with no
streams sends GOAWAY NO_ERROR; a stream idle or a stalled body answers 408 (or a gRPC
DEADLINE_EXCEEDED) if nothing was answered yet, then RST_STREAM CANCEL, for that stream
only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from peermesh.net.http.h2engine import EngineError, H2Engine
from peermesh.net.http.h2errors import ErrorCode, StreamReset
from peermesh.net.http.h2stream import H2Stream
from peermesh.net.http.headers import Headers
from peermesh.net.http.timeouts import (
    Expiry,
    StreamTimes,
    Timeouts,
    connection_due,
    stream_due,
)

log = logging.getLogger("peermesh.net.http.h2session")

GRPC_DEADLINE_EXCEEDED = b"4"


class StreamTimedOut(StreamReset):
    """The stream was ended by one of the server's timeouts."""

    def __init__(self, expiry: Expiry) -> None:
        super().__init__(int(ErrorCode.CANCEL), expiry.value)
        self.expiry = expiry


def timeout_answer(expiry: Expiry, *, grpc: bool) -> Headers:
    """The response head for a stream that timed out before anything was answered."""
    text = f"{expiry.value}: no progress on the request in time".encode()
    if grpc:
        return [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", GRPC_DEADLINE_EXCEEDED),
            (b"grpc-message", text),
            (b"x-peermesh-error", expiry.value.encode()),
        ]
    return [
        (b":status", b"408"),
        (b"content-length", b"0"),
        (b"x-peermesh-error", expiry.value.encode()),
    ]


class H2Timers:
    """Base of ``H2Session`` (server side): its attributes are the session's."""

    client_side: bool
    conn: H2Engine
    _streams: dict[int, H2Stream]
    _timeouts: Timeouts | None
    _on_breach: Callable[[str], None] | None
    _timer_scope: trio.CancelScope | None
    _started_at: float
    _idle_since: float | None
    _settings_received: trio.Event
    peer: object

    if TYPE_CHECKING:

        @property
        def is_closed(self) -> bool: ...

        def _abort(self, error_code: int | None, reason: str) -> None: ...

        def kick_writer(self) -> None: ...

    def _stream_times(self, headers: Headers) -> StreamTimes | None:
        if self._timeouts is None:
            return None
        tunnel = grpc = False
        for name, value in headers:
            if name == b":method":
                tunnel = value == b"CONNECT"
            elif name == b"content-type":
                grpc = value.lower().startswith(b"application/grpc")
        return StreamTimes(last_activity=trio.current_time(), tunnel=tunnel, grpc=grpc)

    def _nudge(self, deadline: float) -> None:
        """Something started a clock that may end before the timer task's next wake."""
        scope = self._timer_scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def body_wait_started(self, stream: H2Stream) -> None:
        if self._timeouts is not None and self._timeouts.body > 0:
            self._nudge(trio.current_time() + self._timeouts.body)

    def _streams_changed(self, now: float) -> None:
        """A stream opened or ended: the idle clock restarts (or stops), stream clocks start."""
        self._idle_since = None if self._streams else now
        timeouts = self._timeouts
        if timeouts is None:
            return
        if self._streams:
            if timeouts.stream_idle > 0:
                self._nudge(now + min(timeouts.stream_idle, timeouts.tunnel_idle or math.inf))
        elif timeouts.idle > 0:
            self._nudge(now + timeouts.idle)

    async def _timers(self) -> None:
        """Sleep until the next deadline, act on what expired, repeat until the end."""
        while not self.is_closed:
            deadline = self._expire(trio.current_time())
            with trio.CancelScope(deadline=deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None

    def _expire(self, now: float) -> float:
        """Act on every deadline at or before ``now``; the earliest one still ahead."""
        timeouts = self._timeouts
        assert timeouts is not None
        due, expiry = connection_due(
            timeouts,
            started=self._started_at,
            preface_done=self._settings_received.is_set(),
            idle_since=None if self._streams else (self._idle_since or self._started_at),
        )
        if due <= now:
            self._breach(expiry)
            if expiry is Expiry.PREFACE:
                self._abort(None, "no HTTP/2 preface in time")
            else:
                self._abort(ErrorCode.NO_ERROR, "idle timeout")
            return math.inf
        earliest = due
        for stream in list(self._streams.values()):
            if stream.times is None:
                continue
            when, what = stream_due(timeouts, stream.times)
            if when <= now:
                self._expire_stream(stream, what)
            else:
                earliest = min(earliest, when)
        return earliest

    def _breach(self, expiry: Expiry) -> None:
        if self._on_breach is not None:
            self._on_breach(expiry.value)

    def _expire_stream(self, stream: H2Stream, expiry: Expiry) -> None:
        """Answer (if nothing was) and reset one stream; the rest of the connection goes on."""
        self._breach(expiry)
        stream.times = None
        if stream.reset_code is not None:
            return
        try:
            if not stream._final_sent and not stream.local_ended:
                grpc = any(
                    n == b"content-type" and v.lower().startswith(b"application/grpc")
                    for n, v in stream.headers or []
                )
                block = self.conn.prepare_outbound(
                    timeout_answer(expiry, grpc=grpc), response=True, trailer=False
                )
                self.conn.send_headers(stream.stream_id, block, end_stream=True)
                stream._final_sent = stream.local_ended = True
            if not stream.remote_ended or not stream.local_ended:
                self.conn.reset_stream(stream.stream_id, error_code=ErrorCode.CANCEL)
        except EngineError:
            pass
        # Not counted as a reset by the peer's side of the rapid-reset rule: it is ours.
        stream.reset_code = int(ErrorCode.CANCEL)
        stream._error = StreamTimedOut(expiry)
        stream._release_unread()
        stream._wake()
        stream._window_opened()
        if stream._handler_scope is not None:
            stream._handler_scope.cancel()
        self.kick_writer()
