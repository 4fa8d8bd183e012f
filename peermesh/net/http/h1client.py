"""HTTP/1.1 client (trio shell around ``h1wire``) for the sidecar's calls to its local app.

Idle keep-alive connections are reused for a short while; a request without a body
that fails on a reused connection before any response byte is retried once on a
fresh connection (the app may have closed an idle socket we had not noticed yet).
"""

from __future__ import annotations

from collections import deque

import trio

from peermesh.core.errors import TransportError
from peermesh.net.eager import EagerStream
from peermesh.net.http import h1wire
from peermesh.net.http.headers import Headers, RequestHead, head_to_h1

READ_SIZE = 1 << 16
IDLE_REUSE_SECONDS = 4.0  # below the 5 s keep-alive timeout most servers use
_SOCKET_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class AppUnavailable(TransportError):
    """The local app refused the connection or broke it before answering."""


class UpstreamBroken(TransportError):
    """The app's connection broke after the response had started."""


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = EagerStream(stream)
        self.idle_since = 0.0
        self.reused = False

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(
        self, reader: h1wire.ResponseReader
    ) -> h1wire.ResponseHead | bytes | h1wire.EndOfMessage:
        while True:
            event = reader.next_event()
            if event is not h1wire.NEED_DATA:
                assert not isinstance(event, h1wire.NeedData)
                return event
            reader.feed(bytes(await self.stream.receive_some(READ_SIZE)))


class H1AppClient:
    """Pool of HTTP/1.1 connections to one local app."""

    def __init__(self, host: str, port: int, *, max_idle: int = 64) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: deque[_Conn] = deque()

    async def _connect(self) -> _Conn:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise AppUnavailable(
                f"local app at {self.host}:{self.port} refused the connection ({why})"
            ) from exc
        return _Conn(stream)

    async def _checkout(self) -> _Conn:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_REUSE_SECONDS:
                conn.reused = True
                return conn
            await _close(conn)
        return await self._connect()

    def _checkin(self, conn: _Conn) -> bool:
        if len(self._idle) < self.max_idle:
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
            return True
        return False

    async def start(self, head: RequestHead, *, has_body: bool) -> H1UpstreamCall:
        """Send the request head; the caller then streams the body and reads the answer."""
        headers = head_to_h1(head)
        length: int | None = None
        for name, value in headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
        if has_body and length is None:
            headers = [(n, v) for n, v in headers if n != b"content-length"]
            headers.append((b"transfer-encoding", b"chunked"))
        elif not has_body:
            headers = [(n, v) for n, v in headers if n != b"transfer-encoding"]
        request = h1wire.serialize_request(head.method, head.path, headers)
        for attempt in range(2):
            conn = await self._checkout()
            try:
                await conn.send(request)
            except _SOCKET_ERRORS as exc:
                await _close(conn)
                if conn.reused and attempt == 0:
                    continue
                raise AppUnavailable(f"local app connection failed: {exc}") from exc
            return H1UpstreamCall(
                self, conn, head.method, has_body=has_body, length=length if has_body else None
            )
        raise AppUnavailable("local app connection failed twice")


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        try:
            await conn.stream.aclose()
        except _SOCKET_ERRORS:
            pass


class H1UpstreamCall:
    """One request to the local app over HTTP/1.1."""

    def __init__(
        self,
        client: H1AppClient,
        conn: _Conn,
        method: bytes,
        *,
        has_body: bool,
        length: int | None,
    ) -> None:
        self.client = client
        self.conn = conn
        self.has_body = has_body
        self._reader = h1wire.ResponseReader(method)
        self._chunked = has_body and length is None
        self._left = length  # bytes still due under the request's Content-Length
        self._request_done = not has_body
        self._trailers: Headers | None = None
        self._done = False
        self._aborted = False

    @property
    def trailers(self) -> Headers | None:
        return self._trailers

    async def send_data(self, data: bytes) -> None:
        if not data or self._request_done:
            return
        if self._left is not None:
            if len(data) > self._left:
                raise UpstreamBroken("request body is longer than its Content-Length")
            self._left -= len(data)
        try:
            await self.conn.send(h1wire.chunk(data) if self._chunked else data)
        except _SOCKET_ERRORS as exc:
            raise UpstreamBroken(f"local app stopped reading the request: {exc}") from exc

    async def finish(self, trailers: Headers | None = None) -> None:
        if self._request_done:
            return
        self._request_done = True
        if self._left:
            raise UpstreamBroken(f"request body is {self._left} bytes short of its Content-Length")
        if not self._chunked:
            return
        try:
            end = h1wire.last_chunk(trailers)
        except h1wire.BadRequest:
            end = h1wire.last_chunk(None)  # trailers HTTP/1.1 cannot carry are dropped
        try:
            await self.conn.send(end)
        except _SOCKET_ERRORS as exc:
            raise UpstreamBroken(f"local app stopped reading the request: {exc}") from exc

    async def receive_response(self) -> tuple[int, Headers]:
        event = await self._next_event(
            AppUnavailable, "broke the connection", "sent an invalid response"
        )
        if isinstance(event, h1wire.ResponseHead):
            return event.status, event.headers
        raise AppUnavailable("local app closed the connection without answering")

    async def receive_data(self) -> bytes:
        if self._done:
            return b""
        while True:
            event = await self._next_event(
                UpstreamBroken, "broke the connection mid-response", "sent an invalid body"
            )
            if isinstance(event, bytes):
                if event:
                    return event
                continue
            if isinstance(event, h1wire.EndOfMessage):
                self._done = True
                if event.trailers:
                    self._trailers = event.trailers
                if not (
                    self._request_done and self._reader.reusable and self.client._checkin(self.conn)
                ):
                    await _close(self.conn)
                return b""
            raise UpstreamBroken("local app sent a second response head")

    async def _next_event(
        self, error: type[TransportError], broke: str, invalid: str
    ) -> h1wire.ResponseHead | bytes | h1wire.EndOfMessage:
        """The next response event; a broken socket or bad bytes raise ``error``."""
        try:
            return await self.conn.next_event(self._reader)
        except _SOCKET_ERRORS as exc:
            raise error(f"local app {broke}: {exc}") from exc
        except h1wire.BadResponse as exc:
            self._discard()
            raise error(f"local app {invalid}: {exc}") from exc

    def _discard(self) -> None:
        """A connection that carried bad bytes is never reused."""
        self._aborted = True
        try:
            self.conn.stream.socket.close()
        except OSError:
            pass

    def abort(self) -> None:
        if self._aborted or self._done:
            return
        self._aborted = True
        # Closing is async; a forgotten socket would linger, so close it synchronously.
        try:
            self.conn.stream.socket.close()
        except OSError:
            pass
