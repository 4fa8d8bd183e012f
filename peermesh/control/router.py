"""Control RPCs under ``/peermesh.v1/``: served by the agent itself, never by the app.

Control traffic rides the same mTLS HTTP/2 connections as data. Bodies are msgpack;
each handler learns the caller's verified SPIFFE ID, so later features (policy sync,
FROST rounds, certificate requests) can authorize by identity.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from certs.spiffe import SpiffeId
from peermesh.http.exchange import BodySource, ResponseWriter
from peermesh.http.headers import RequestHead

log = logging.getLogger(__name__)

PREFIX = "/peermesh.v1/"
CONTENT_TYPE = b"application/msgpack"
MAX_BODY = 64 << 20  # a whole policy document for a new agent fits (10k objects ≈ 7 MB)


@dataclass(frozen=True)
class ControlRequest:
    """One decoded control call."""

    method: str
    peer: SpiffeId
    body: Any


class ControlError(Exception):
    """A handler's refusal: becomes a msgpack ``{"error": ..}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


ControlHandler = Callable[[ControlRequest], Awaitable[Any]]


class ControlRouter:
    """Maps ``/peermesh.v1/<method>`` to handlers registered by each subsystem."""

    def __init__(self) -> None:
        self._handlers: dict[str, ControlHandler] = {}
        self.calls = 0
        self.errors = 0

    def register(self, method: str, handler: ControlHandler) -> None:
        if method in self._handlers:
            raise ValueError(f"control method {method!r} is already registered")
        self._handlers[method] = handler

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    @staticmethod
    def owns(path: bytes) -> bool:
        return path.startswith(PREFIX.encode())

    async def handle(
        self, head: RequestHead, body: BodySource, writer: ResponseWriter, peer: SpiffeId
    ) -> int:
        """Serve one control call; returns the status sent."""
        self.calls += 1
        method = head.path.decode("ascii", "replace")[len(PREFIX) :].split("?", 1)[0]
        handler = self._handlers.get(method)
        if handler is None:
            return await self._reply(writer, 404, {"error": f"no control method {method!r}"})
        if head.method != b"POST":
            return await self._reply(writer, 405, {"error": "control methods take POST"})
        chunks: list[bytes] = []
        size = 0
        while chunk := await body.receive_data():
            size += len(chunk)
            if size > MAX_BODY:
                return await self._reply(
                    writer, 413, {"error": f"control body over {MAX_BODY} bytes"}
                )
            chunks.append(chunk)
        try:
            payload = msgpack.unpackb(b"".join(chunks), raw=False) if chunks else None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            return await self._reply(writer, 400, {"error": f"body is not valid msgpack: {exc}"})
        try:
            result = await handler(ControlRequest(method=method, peer=peer, body=payload))
        except ControlError as exc:
            return await self._reply(writer, exc.status, {"error": exc.message})
        return await self._reply(writer, 200, {"result": result})

    async def _reply(self, writer: ResponseWriter, status: int, payload: Any) -> int:
        if status != 200:
            self.errors += 1
        data = msgpack.packb(payload, use_bin_type=True)
        await writer.send_head(
            status,
            [(b"content-type", CONTENT_TYPE), (b"content-length", str(len(data)).encode())],
        )
        await writer.send_data(data)
        await writer.finish()
        return status
