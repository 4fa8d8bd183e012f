"""HTTP/1.1 server connections (trio shell around h11) for apps talking to their sidecar.

Keep-alive, chunked bodies, trailers and ``Expect: 100-continue`` come from h11; we
send the 100 only when the proxy starts reading the body, as RFC 9110 intends.

Given ``timeouts``, every read has a deadline (``timeouts`` computes it, the read sleeps
until it): the whole request head within the header timeout (from the connection's start
for the first request, from its first byte for the next ones), each body read within the
body timeout, and the next request's first byte within the keep-alive timeout. A head or
body that times out is answered 408 and the connection closed; an idle connection, or one
that sent nothing of a request, is just closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import h11
import trio

from peermesh.core.errors import TransportError
from peermesh.net.caps import Refusal, StreamBudget
from peermesh.net.http.h1strict import FramingError, HeadTooLarge, RequestFraming
from peermesh.net.http.headers import HeaderError, Headers, RequestHead, h1_request_to_head
from peermesh.net.http.timeouts import Expiry, Timeouts, after

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 << 10
READ_SIZE = 1 << 16
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


class ClientGone(TransportError):
    """The HTTP/1.1 client closed or broke its connection mid-exchange."""


class ClientTimedOut(ClientGone):
    """The client made no progress within one of the server's timeouts."""

    def __init__(self, expiry: Expiry, *, silent: bool) -> None:
        super().__init__(f"{expiry.value}: no progress from the client in time")
        self.expiry = expiry
        #: Nothing of a request had arrived: close without an answer.
        self.silent = silent


@dataclass(frozen=True)
class H1Request:
    """A parsed request plus what the server knows about its connection."""

    head: RequestHead
    http_version: bytes


class H1ServerConnection:
    """Serves one HTTP/1.1 connection: each request goes to ``handler`` in turn."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        handler: Callable[[RequestHead, H1RequestBody, H1ResponseWriter], Awaitable[None]],
        *,
        initial_data: bytes = b"",
        client_address: str | None = None,
        on_bad_request: Callable[[str], None] | None = None,
        timeouts: Timeouts | None = None,
        started: float | None = None,
        stream_budget: StreamBudget | None = None,
        on_breach: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.handler = handler
        self.client_address = client_address
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._initial = initial_data
        self._on_bad_request = on_bad_request
        # Every byte passes the strict framing check before h11 (lenient) may see it.
        self._framing = RequestFraming()
        self.framing_error: FramingError | None = None
        self.draining = False
        self.busy = False
        self._timeouts = timeouts
        #: When the connection began (its first request's head clock starts there).
        self._started = started
        self._budget = stream_budget
        self._on_breach = on_breach
        self.timed_out: ClientTimedOut | None = None

    async def _read_more(self, deadline: float = math.inf, expiry: Expiry = Expiry.BODY) -> int:
        with trio.move_on_at(deadline) as scope:
            try:
                data = await self.transport.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ClientGone(str(exc)) from exc
        if scope.cancelled_caught:
            # A head clock that ran out before any byte of the request is a silent close.
            silent = expiry is Expiry.KEEPALIVE or (
                expiry is Expiry.HEADER and not self.conn.trailing_data[0]
            )
            self.timed_out = ClientTimedOut(expiry, silent=silent)
            raise self.timed_out
        self._framing.feed(bytes(data))
        self.conn.receive_data(bytes(data))
        return len(data)

    async def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """The next h11 event of a request body; each read within the body timeout."""
        body = self._timeouts.body if self._timeouts is not None else 0.0
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                await self._read_more(after(trio.current_time(), body), Expiry.BODY)
                continue
            return event

    async def _next_request(
        self, *, first: bool
    ) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """The next request's head, within the keep-alive and header timeouts."""
        timeouts = self._timeouts
        now = trio.current_time()
        since = self._started if first and self._started is not None else now
        # The head clock starts at its first byte (for the first request: at the start).
        head_since = since if first or self.conn.trailing_data[0] else None
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if timeouts is None:
                await self._read_more()
            elif head_since is None:
                if await self._read_more(after(since, timeouts.keepalive), Expiry.KEEPALIVE):
                    head_since = trio.current_time()
            else:
                await self._read_more(after(head_since, timeouts.header), Expiry.HEADER)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            try:
                await self.transport.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ClientGone(str(exc)) from exc

    async def run(self) -> None:
        """Serve requests until the client leaves, an error, or drain."""
        try:
            if self._initial:
                self._framing.feed(self._initial)
                self.conn.receive_data(self._initial)
            first = True
            while True:
                try:
                    event = await self._next_request(first=first)
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc)
                    return
                except FramingError as exc:
                    await self._refuse_framing(exc)
                    return
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if not isinstance(event, h11.Request):
                    return
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > MAX_HEADER_BYTES:
                    # h11 only bounds *incomplete* heads; a big one arriving whole gets here.
                    if self._on_bad_request is not None:
                        self._on_bad_request("headers too large")
                    await self._simple(
                        431,
                        "headers-too-large",
                        f"request head is {size} bytes; the limit is {MAX_HEADER_BYTES}",
                        close=True,
                    )
                    await self._lingering_close()
                    return
                try:
                    head = h1_request_to_head(
                        event.method,
                        event.target,
                        list(event.headers),
                        client_address=self.client_address,
                    )
                except HeaderError as exc:
                    await self._simple(400, "bad-request", str(exc), close=True)
                    return
                first = False
                body = H1RequestBody(self, has_body=_has_body(event.headers))
                writer = H1ResponseWriter(self, event.http_version, head.method)
                if self._budget is not None and not self._budget.acquire():
                    self._breach(Refusal.STREAMS.value)
                    await self._simple(
                        503, "overloaded", "the sidecar is at its concurrent request cap",
                        close=True,
                    )  # fmt: skip
                    await self._lingering_close()
                    return
                self.busy = True
                try:
                    await self.handler(head, body, writer)
                finally:
                    self.busy = False
                    if self._budget is not None:
                        self._budget.release()
                if self.timed_out is not None:
                    await self._answer_timeout(self.timed_out)
                    return
                if self.framing_error is not None:
                    await self._refuse_framing(self.framing_error)
                    return
                if writer.aborted or self.conn.our_state is not h11.DONE:
                    if self.conn.their_state is not h11.DONE:
                        await self._lingering_close()
                    return
                # If the handler answered without reading the whole body, drain a bounded amount.
                if self.conn.their_state is not h11.DONE and not await body.discard(limit=1 << 20):
                    if self.timed_out is not None:  # answered already: counted, then closed
                        await self._answer_timeout(self.timed_out)
                    return
                if self.draining or self.conn.our_state is h11.MUST_CLOSE:
                    return
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except ClientTimedOut as exc:
            await self._answer_timeout(exc)
            return
        except ClientGone:
            return
        except FramingError as exc:
            await self._refuse_framing(exc)
            return
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await self.transport.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    def _breach(self, reason: str) -> None:
        if self._on_breach is not None:
            self._on_breach(reason)

    async def _answer_timeout(self, exc: ClientTimedOut) -> None:
        """408 and close, unless nothing of a request came (then just close)."""
        self._breach(exc.expiry.value)
        if exc.silent or self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        try:
            await self._simple(408, exc.expiry.value, str(exc), close=True)
        except (ClientGone, h11.LocalProtocolError):
            return
        await self._lingering_close()

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        reason = str(exc) or "malformed HTTP/1.1 request"
        if self._on_bad_request is not None:
            self._on_bad_request(reason)
        code = "headers-too-large" if status == 431 else "bad-request"
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._simple(status, code, reason, close=True)
            except (ClientGone, h11.LocalProtocolError):
                return
            await self._lingering_close()

    async def _refuse_framing(self, exc: FramingError) -> None:
        """400 (when no response has started) and close: the stream is no longer HTTP."""
        if self._on_bad_request is not None:
            self._on_bad_request("bad-framing")
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            big = isinstance(exc, HeadTooLarge)
            status, code = (431, "headers-too-large") if big else (400, "bad-request")
            try:
                await self._simple(status, code, str(exc), close=True)
            except (ClientGone, h11.LocalProtocolError):
                return
            await self._lingering_close()

    async def _lingering_close(self) -> None:
        """Half-close and drain what the client is still sending before closing.

        Closing a socket with unread input makes the kernel send RST, which can destroy
        the error response before the client reads it (nginx's lingering_close).
        """
        send_eof = getattr(self.transport, "send_eof", None)
        if send_eof is None:
            return
        try:
            await send_eof()
            with trio.move_on_after(LINGER_SECONDS):
                drained = 0
                while drained < LINGER_BYTES:
                    chunk = await self.transport.receive_some(READ_SIZE)
                    if not chunk:
                        break
                    drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _simple(self, status: int, code: str, text: str, *, close: bool) -> None:
        body = (text + "\n").encode()
        headers: Headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-peermesh-error", code.encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        if self.conn.our_state is h11.SEND_RESPONSE or self.conn.our_state is h11.IDLE:
            if self.conn.our_state is h11.IDLE:
                # h11 refuses to answer before a request; write the bytes ourselves.
                raw = f"HTTP/1.1 {status} {h11_reason(status)}\r\n".encode()
                raw += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body
                try:
                    await self.transport.send_all(raw)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                return
            await self.send(
                h11.Response(status_code=status, headers=headers, reason=h11_reason(status))
            )
            await self.send(h11.Data(data=body))
            await self.send(h11.EndOfMessage())


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP/1.1 request carries a body (RFC 9112 §6.3)."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() != b"0"
    return False


def h11_reason(status: int) -> str:
    """The standard reason phrase (RFC 9110), so strict HTTP/1.1 clients accept the line.

    RFC 9112 allows an empty one, but some clients (h2load ``--h1``) count such a response
    as failed. Unregistered codes get a generic phrase by class.
    """
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {4: "Client Error", 5: "Server Error"}.get(status // 100, "Status")


class H1RequestBody:
    """The body of the request being served, read on demand (so TCP pushes back)."""

    def __init__(self, server: H1ServerConnection, *, has_body: bool) -> None:
        self.server = server
        self.has_body = has_body
        self._trailers: Headers | None = None
        self._done = False

    @property
    def trailers(self) -> Headers | None:
        return self._trailers

    async def receive_data(self) -> bytes:
        if self._done:
            return b""
        conn = self.server.conn
        if conn.they_are_waiting_for_100_continue:
            await self.server.send(h11.InformationalResponse(status_code=100, headers=[]))
        while True:
            try:
                event = await self.server.next_event()
            except h11.RemoteProtocolError as exc:
                raise ClientGone(f"malformed request body: {exc}") from exc
            except FramingError as exc:
                self.server.framing_error = exc
                raise ClientGone(f"malformed request body: {exc}") from exc
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            if isinstance(event, h11.EndOfMessage):
                self._done = True
                if event.headers:
                    self._trailers = list(event.headers)
                return b""
            if isinstance(event, h11.ConnectionClosed):
                raise ClientGone("client closed the connection before the body ended")
            raise ClientGone(f"unexpected event while reading body: {event!r}")

    async def discard(self, limit: int) -> bool:
        """Read and drop the rest of the body; False if it was larger than ``limit``."""
        if self.server.conn.they_are_waiting_for_100_continue:
            return False
        seen = 0
        while not self._done:
            try:
                seen += len(await self.receive_data())
            except ClientGone:
                return False
            if seen > limit:
                return False
        return True


class H1ResponseWriter:
    """Writes the response to the request being served."""

    def __init__(self, server: H1ServerConnection, http_version: bytes, method: bytes) -> None:
        self.server = server
        self.http_version = http_version
        self.method = method
        self._headers_sent = False
        self._chunked = False
        self.aborted = False

    @property
    def headers_sent(self) -> bool:
        return self._headers_sent

    async def send_head(self, status: int, headers: Headers, *, end: bool = False) -> None:
        from peermesh.net.http.headers import join_cookies, strip_hop_by_hop

        out = join_cookies(strip_hop_by_hop(headers, keep_te_trailers=False))
        if self.server.draining:
            out.append((b"connection", b"close"))
        has_length = any(n == b"content-length" for n, _ in out)
        if end and not has_length and status not in (204, 304) and self.method != b"HEAD":
            out.append((b"content-length", b"0"))
        self._chunked = not has_length and not end
        self._headers_sent = True
        try:
            await self.server.send(
                h11.Response(status_code=status, headers=out, reason=h11_reason(status))
            )
        except h11.LocalProtocolError as exc:
            self.abort()
            raise ClientGone(f"cannot send response: {exc}") from exc
        if end:
            await self.server.send(h11.EndOfMessage())

    async def send_data(self, data: bytes) -> None:
        if data:
            await self.server.send(h11.Data(data=data))

    async def finish(self, trailers: Headers | None = None) -> None:
        if self.server.conn.our_state is not h11.SEND_BODY:
            return
        if trailers and self.http_version == b"1.1" and self._chunked:
            await self.server.send(h11.EndOfMessage(headers=trailers))
        else:
            await self.server.send(h11.EndOfMessage())

    def abort(self) -> None:
        """HTTP/1.1 has no stream reset: closing the connection is the only signal."""
        self.aborted = True
        self.server.conn.send_failed()
