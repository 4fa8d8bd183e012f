"""One try of a request against one upstream: send the body, look at the answer, then
either commit it to the downstream or abandon it (so a retry can take its place).

Request bodies come either streamed from the client (the try can then not be repeated
once a byte left) or from a ``BufferedBody`` replayed from memory, which is how a
request with a small body stays retryable.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType

import trio

from peermesh.core.errors import TransportError
from peermesh.net.http.exchange import BodySource, ResponseWriter, UpstreamCall
from peermesh.net.http.h1client import AppUnavailable, UpstreamBroken
from peermesh.net.http.h1server import ClientGone
from peermesh.net.http.h2session import StreamReset
from peermesh.net.http.headers import Headers

UPSTREAM_ERRORS = (StreamReset, AppUnavailable, UpstreamBroken)
DOWNSTREAM_ERRORS = (StreamReset, ClientGone)


class DownstreamGone(TransportError):
    """The client of this exchange went away; nothing is left to answer."""


@dataclass
class RelayResult:
    """What happened, for metrics and logs."""

    status: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    error_code: str = ""


#: Bodies up to this size are held so that the request can be retried.
REPLAY_BUFFER_LIMIT = 64 << 10


@dataclass
class BufferedBody:
    """A whole request body held in memory; each ``reader()`` replays it from the start."""

    chunks: list[bytes] = field(default_factory=list)
    trailers: Headers | None = None

    def reader(self) -> _Replay:
        return _Replay(self)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


class _Replay:
    def __init__(self, body: BufferedBody) -> None:
        self._chunks = list(body.chunks)
        self.trailers = body.trailers

    async def receive_data(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


class PrefixedBody:
    """A body whose first chunks were already read (while trying to buffer it)."""

    def __init__(self, prefix: list[bytes], rest: BodySource) -> None:
        self._prefix = list(prefix)
        self._rest = rest

    async def receive_data(self) -> bytes:
        if self._prefix:
            return self._prefix.pop(0)
        return await self._rest.receive_data()

    @property
    def trailers(self) -> Headers | None:
        return self._rest.trailers


async def buffer_body(
    body: BodySource, limit: int = REPLAY_BUFFER_LIMIT
) -> BufferedBody | BodySource:
    """Read up to ``limit`` bytes: the whole body (replayable), or a stream to continue."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await body.receive_data()
        except DOWNSTREAM_ERRORS as exc:
            raise DownstreamGone(f"client went away while sending the body: {exc}") from exc
        if not chunk:
            return BufferedBody(chunks, body.trailers)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return PrefixedBody(chunks, body)


class UpstreamAttempt:
    """Async context: request body pumped in the background while we read the answer."""

    def __init__(self, call: UpstreamCall, body: BodySource | None) -> None:
        self.call = call
        self.body = body
        self.result = RelayResult()
        self.committed = False
        self._stack = AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self.body_error: BaseException | None = None

    async def __aenter__(self) -> UpstreamAttempt:
        # Only a request body needs a task (and so a nursery): most requests have none.
        if self.body is not None:
            self._nursery = await self._stack.enter_async_context(trio.open_nursery())
            self._nursery.start_soon(self._pump_request, self.body)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        if not self.committed or exc is not None:
            self.call.abort()
        # The body's exception is not handed to the nursery (trio would wrap it in an
        # ExceptionGroup): the nursery only holds the request pump, which never raises,
        # and the caller's exception propagates as itself.
        if self._nursery is not None:
            await self._stack.__aexit__(None, None, None)
        return None

    async def _pump_request(self, body: BodySource) -> None:
        """Never raises: a client that goes away is recorded, and the upstream reset."""
        while True:
            try:
                chunk = await body.receive_data()
            except DOWNSTREAM_ERRORS as exc:
                self.body_error = exc
                self.call.abort()
                return
            try:
                if not chunk:
                    await self.call.finish(body.trailers)
                    return
                self.result.request_bytes += len(chunk)
                await self.call.send_data(chunk)
            except UPSTREAM_ERRORS:
                return  # the response side reports the failure

    async def response(self) -> tuple[int, Headers]:
        """The upstream's response head; raises one of ``UPSTREAM_ERRORS``."""
        status, headers = await self.call.receive_response()
        self.result.status = status
        return status, headers

    async def commit(
        self,
        writer: ResponseWriter,
        status: int,
        headers: Headers,
        *,
        ended: bool,
    ) -> RelayResult:
        """Send this attempt's response downstream and stream the rest of it."""
        self.committed = True
        try:
            await writer.send_head(status, headers, end=ended)
        except DOWNSTREAM_ERRORS as exc:
            raise DownstreamGone(str(exc)) from exc
        if not ended:
            await _pump_response(self.call, writer, self.result)
        return self.result


async def _pump_response(call: UpstreamCall, writer: ResponseWriter, result: RelayResult) -> None:
    while True:
        try:
            chunk = await call.receive_data()
        except UPSTREAM_ERRORS as exc:
            result.error_code = "upstream-reset"
            writer.abort()
            raise DownstreamGone(f"upstream broke mid-response: {exc}") from exc
        try:
            if not chunk:
                await writer.finish(call.trailers)
                return
            result.response_bytes += len(chunk)
            await writer.send_data(chunk)
        except DOWNSTREAM_ERRORS as exc:
            raise DownstreamGone(f"client went away mid-response: {exc}") from exc
