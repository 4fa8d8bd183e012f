"""Admin listener (loopback only, default 127.0.0.1:15000): health, status, metrics.

Later features add their ``/v1/...`` routes through ``AdminServer.route``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from peermesh.net.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.net.http.headers import RequestHead

MAX_ADMIN_BODY = 16 << 20


class AdminResponse:
    """What an admin route returns."""

    def __init__(self, status: int, body: bytes, content_type: bytes = b"application/json"):
        self.status = status
        self.body = body
        self.content_type = content_type

    @classmethod
    def json(cls, status: int, payload: Any) -> AdminResponse:
        return cls(status, json.dumps(payload, indent=2, default=str).encode() + b"\n")

    @classmethod
    def text(cls, status: int, text: str) -> AdminResponse:
        return cls(status, text.encode() + b"\n", b"text/plain; charset=utf-8")


AdminRoute = Callable[[bytes, str, bytes], Awaitable[AdminResponse]]


class AdminServer:
    """A tiny HTTP/1.1 router for operators and the CLI."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, AdminRoute]] = []

    def route(self, prefix: str, handler: AdminRoute) -> None:
        """Serve paths starting with ``prefix``; longest prefix wins."""
        self._routes.append((prefix, handler))
        self._routes.sort(key=lambda item: -len(item[0]))

    async def serve_connection(self, transport: trio.SocketStream) -> None:
        await H1ServerConnection(transport, self._handle).run()

    async def _handle(
        self, head: RequestHead, body: H1RequestBody, writer: H1ResponseWriter
    ) -> None:
        path = head.path.decode("ascii", "replace")
        chunks: list[bytes] = []
        size = 0
        response: AdminResponse | None = None
        while chunk := await body.receive_data():
            size += len(chunk)
            if size > MAX_ADMIN_BODY:
                response = AdminResponse.json(413, {"error": "request body too large"})
                break
            chunks.append(chunk)
        if response is None:
            for prefix, handler in self._routes:
                if (
                    path == prefix
                    or path.startswith(prefix.rstrip("/") + "/")
                    or (path.startswith(prefix + "?"))
                ):
                    response = await handler(head.method, path, b"".join(chunks))
                    break
            else:
                response = AdminResponse.json(404, {"error": f"no admin route for {path}"})
        await writer.send_head(
            response.status,
            [
                (b"content-type", response.content_type),
                (b"content-length", str(len(response.body)).encode()),
            ],
        )
        await writer.send_data(response.body)
        await writer.finish()
