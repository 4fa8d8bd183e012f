"""HTTP/1.1 client (trio shell around h11) for the sidecar's calls to its local app.

Idle keep-alive connections are reused for a short while; a request without a body
that fails on a reused connection before any response byte is retried once on a
fresh connection (the app may have closed an idle socket we had not noticed yet).
"""

from __future__ import annotations

from collections import deque

import h11
import trio

from peermesh.http.headers import Headers, RequestHead, head_to_h1

READ_SIZE = 1 << 16
IDLE_REUSE_SECONDS = 4.0  # below the 5 s keep-alive timeout most servers use


class AppUnavailable(Exception):
    """The local app refused the connection or broke it before answering."""


class UpstreamBroken(Exception):
    """The app's connection broke after the response had started."""


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10)
        self.idle_since = 0.0
        self.reused = False

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(bytes(await self.stream.receive_some(READ_SIZE)))
                continue
            assert event is not h11.NEED_DATA
            return event  # type: ignore[return-value]


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

    def _checkin(self, conn: _Conn) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return
            if len(self._idle) < self.max_idle:
                conn.idle_since = trio.current_time()
                self._idle.append(conn)
                return

    async def start(self, head: RequestHead, *, has_body: bool) -> H1UpstreamCall:
        """Send the request head; the caller then streams the body and reads the answer."""
        headers = head_to_h1(head)
        if has_body and not any(n == b"content-length" for n, _ in headers):
            headers.append((b"transfer-encoding", b"chunked"))
        request = h11.Request(method=head.method, target=head.path, headers=headers)
        for attempt in range(2):
            conn = await self._checkout()
            try:
                await conn.send(request)
                if not has_body:
                    await conn.send(h11.EndOfMessage())
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await _close(conn)
                if conn.reused and attempt == 0:
                    continue
                raise AppUnavailable(f"local app connection failed: {exc}") from exc
            return H1UpstreamCall(self, conn, has_body=has_body, retry_fresh=conn.reused)
        raise AppUnavailable("local app connection failed twice")


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        try:
            await conn.stream.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class H1UpstreamCall:
    """One request to the local app over HTTP/1.1."""

    def __init__(
        self, client: H1AppClient, conn: _Conn, *, has_body: bool, retry_fresh: bool
    ) -> None:
        self.client = client
        self.conn = conn
        self.has_body = has_body
        self._trailers: Headers | None = None
        self._done = False
        self._aborted = False

    @property
    def trailers(self) -> Headers | None:
        return self._trailers

    async def send_data(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self.conn.send(h11.Data(data=data))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise UpstreamBroken(f"local app stopped reading the request: {exc}") from exc

    async def finish(self, trailers: Headers | None = None) -> None:
        if self.conn.h11.our_state is not h11.SEND_BODY:
            return
        try:
            await self.conn.send(h11.EndOfMessage(headers=trailers or []))
        except h11.LocalProtocolError:
            await self.conn.send(h11.EndOfMessage())
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise UpstreamBroken(f"local app stopped reading the request: {exc}") from exc

    async def receive_response(self) -> tuple[int, Headers]:
        while True:
            try:
                event = await self.conn.next_event()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise AppUnavailable(f"local app broke the connection: {exc}") from exc
            except h11.RemoteProtocolError as exc:
                raise AppUnavailable(f"local app sent an invalid response: {exc}") from exc
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                return event.status_code, list(event.headers)
            raise AppUnavailable("local app closed the connection without answering")

    async def receive_data(self) -> bytes:
        if self._done:
            return b""
        while True:
            try:
                event = await self.conn.next_event()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise UpstreamBroken(f"local app broke the connection mid-response: {exc}") from exc
            except h11.RemoteProtocolError as exc:
                raise UpstreamBroken(f"local app sent an invalid body: {exc}") from exc
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                self._done = True
                if event.headers:
                    self._trailers = list(event.headers)
                if self.conn.h11.our_state is h11.DONE:
                    self.client._checkin(self.conn)
                else:
                    await _close(self.conn)
                return b""
            raise UpstreamBroken("local app closed the connection mid-response")

    def abort(self) -> None:
        if self._aborted or self._done:
            return
        self._aborted = True
        self.conn.h11.send_failed()
        # Closing is async; a forgotten socket would linger, so close it synchronously.
        try:
            self.conn.stream.socket.close()
        except OSError:
            pass
