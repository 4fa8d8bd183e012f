"""Version-neutral views of one request/response exchange.

The proxy relays between any pair of HTTP/1.1 and HTTP/2 ends; it only sees these
protocols, so the relay logic is written once.
"""

from __future__ import annotations

from typing import Protocol

from peermesh.net.http.h2session import ErrorCode, H2Stream
from peermesh.net.http.headers import Headers, response_to_h2, status_of


class BodySource(Protocol):
    """A message body being received: chunks until b"", then maybe trailers."""

    async def receive_data(self) -> bytes: ...

    @property
    def trailers(self) -> Headers | None: ...


class ResponseWriter(Protocol):
    """Where a response goes (back to whoever sent the request)."""

    @property
    def headers_sent(self) -> bool: ...

    async def send_head(self, status: int, headers: Headers, *, end: bool = False) -> None: ...

    async def send_data(self, data: bytes) -> None: ...

    async def finish(self, trailers: Headers | None = None) -> None: ...

    def abort(self) -> None:
        """Tear the response down mid-way (RST_STREAM, or close an HTTP/1.1 connection)."""


class UpstreamCall(Protocol):
    """A request in flight to the next hop: write its body, read its response."""

    async def send_data(self, data: bytes) -> None: ...

    async def finish(self, trailers: Headers | None = None) -> None: ...

    async def receive_response(self) -> tuple[int, Headers]: ...

    async def receive_data(self) -> bytes: ...

    @property
    def trailers(self) -> Headers | None: ...

    def abort(self) -> None: ...


class H2StreamBody:
    """The request body of a server-side HTTP/2 stream."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    async def receive_data(self) -> bytes:
        return await self.stream.receive_data()

    @property
    def trailers(self) -> Headers | None:
        return self.stream.trailers


class H2ResponseWriter:
    """Answers on a server-side HTTP/2 stream."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream
        self._headers_sent = False

    @property
    def headers_sent(self) -> bool:
        return self._headers_sent

    async def send_head(self, status: int, headers: Headers, *, end: bool = False) -> None:
        self._headers_sent = True
        await self.stream.send_headers(response_to_h2(status, headers), end_stream=end)

    async def send_data(self, data: bytes) -> None:
        await self.stream.send_data(data)

    async def finish(self, trailers: Headers | None = None) -> None:
        await self.stream.end(trailers)

    def abort(self) -> None:
        self.stream.reset(ErrorCode.INTERNAL_ERROR)


class H2UpstreamCall:
    """A client-side HTTP/2 stream as an upstream call."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    async def send_data(self, data: bytes) -> None:
        await self.stream.send_data(data)

    async def finish(self, trailers: Headers | None = None) -> None:
        await self.stream.end(trailers)

    async def receive_response(self) -> tuple[int, Headers]:
        headers = await self.stream.receive_headers()
        status = status_of(headers)
        return status, [(n, v) for n, v in headers if not n.startswith(b":")]

    async def receive_data(self) -> bytes:
        return await self.stream.receive_data()

    @property
    def trailers(self) -> Headers | None:
        return self.stream.trailers

    def abort(self) -> None:
        self.stream.reset(ErrorCode.CANCEL)
