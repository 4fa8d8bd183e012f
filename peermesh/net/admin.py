"""Admin listener (loopback only, default 127.0.0.1:15000): health, status, metrics.

Later features add their ``/v1/...`` routes through ``AdminServer.route``.

Loopback is not a boundary against the browser on the same host: any page can send a
"simple" cross-origin request, and DNS rebinding makes a foreign name resolve to
127.0.0.1. So every request passes :class:`~peermesh.net.admin_guard.BrowserGuard` first
(Host, Origin, the mutation header), and a route that raises is answered with a 500; it
never reaches the listener's nursery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio

from peermesh.core.bounded import json_bounds_problem
from peermesh.net.admin_guard import BrowserGuard
from peermesh.net.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.net.http.headers import RequestHead

log = logging.getLogger(__name__)

MAX_ADMIN_BODY = 16 << 20

#: Called with a component name for every unexpected exception a request caused.
InternalErrorHook = Callable[[str], None]


class AdminResponse:
    """What an admin route returns."""

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers  # sent after content-type and content-length

    @classmethod
    def json(cls, status: int, payload: Any) -> AdminResponse:
        return cls(status, json.dumps(payload, indent=2, default=str).encode() + b"\n")

    @classmethod
    def text(cls, status: int, text: str) -> AdminResponse:
        return cls(status, text.encode() + b"\n", b"text/plain; charset=utf-8")


AdminRoute = Callable[[bytes, str, bytes], Awaitable[AdminResponse]]


class AdminServer:
    """A tiny HTTP/1.1 router for operators and the CLI."""

    def __init__(
        self,
        *,
        admin_hosts: Collection[str] = (),
        on_internal_error: InternalErrorHook | None = None,
    ) -> None:
        self._routes: list[tuple[str, AdminRoute]] = []
        self.guard = BrowserGuard(admin_hosts)
        self.on_internal_error = on_internal_error
        self.internal_errors = 0

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
            refusal = self.guard.check(head)
            if refusal is not None:
                response = AdminResponse.json(refusal.status, {"error": refusal.reason})
        if response is None:
            response = await self._dispatch(head.method, path, b"".join(chunks))
        await writer.send_head(
            response.status,
            [
                (b"content-type", response.content_type),
                (b"content-length", str(len(response.body)).encode()),
                *response.headers,
            ],
        )
        await writer.send_data(response.body)
        await writer.finish()

    def _find(self, path: str) -> tuple[str, AdminRoute] | None:
        for prefix, handler in self._routes:
            if (
                path == prefix
                or path.startswith(prefix.rstrip("/") + "/")
                or (path.startswith(prefix + "?"))
            ):
                return prefix, handler
        return None

    async def _dispatch(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if body:
            problem = json_bounds_problem(body)
            if problem is not None:
                return AdminResponse.json(400, {"error": f"request body refused: {problem}"})
        found = self._find(path)
        if found is None:
            return AdminResponse.json(404, {"error": f"no admin route for {path}"})
        prefix, handler = found
        try:
            return await handler(method, path, body)
        except Exception:
            # One request's bug must not end the agent: answer it, log it, count it.
            self.internal_errors += 1
            log.exception("admin route %s failed on %s %s", prefix, method.decode(), path[:200])
            if self.on_internal_error is not None:
                self.on_internal_error("admin")
            return AdminResponse.json(
                500, {"error": "internal error; the agent logged the traceback"}
            )
