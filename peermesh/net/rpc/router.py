"""Control RPCs under ``/peermesh.v1/``: served by the agent itself, never by the app.

Control traffic rides the same mTLS HTTP/2 connections as data. Bodies are msgpack;
each method declares its request and response messages (``RpcMethod``), the router
decodes and validates the request before the handler runs, and each handler learns the
caller's verified SPIFFE ID, so it can authorize by identity.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from certs.spiffe import SpiffeId
from peermesh.core.bounded import BoundsError, check_bounds
from peermesh.core.errors import PeermeshError, TransportError
from peermesh.net.http.exchange import BodySource, ResponseWriter
from peermesh.net.http.headers import RequestHead

from .method import ControlRequest, Req, Resp, RpcMethod

log = logging.getLogger(__name__)

PREFIX = "/peermesh.v1/"
CONTENT_TYPE = b"application/msgpack"
MAX_BODY = 64 << 20  # a whole policy document for a new agent fits (10k objects ≈ 7 MB)


def _unpack(data: bytes) -> Any:
    """msgpack with bounds: nesting depth and 64-bit integers (see :mod:`peermesh.core.bounded`).

    msgpack's own length limits default to the buffer size, already capped by MAX_BODY.
    """
    payload = msgpack.unpackb(data, raw=False)
    check_bounds(payload)
    return payload


class _Served:
    """One registered method: decodes the body, calls the handler, encodes the result."""

    __slots__ = ("handler", "method")

    def __init__(self, method: RpcMethod[Any, Any], handler: Callable[..., Awaitable[Any]]) -> None:
        self.method = method
        self.handler = handler

    async def __call__(
        self, name: str, peer: SpiffeId, payload: Any, node: str | None = None
    ) -> Any:
        body = self.method.request.from_wire(payload)
        result = await self.handler(ControlRequest(method=name, peer=peer, body=body, node=node))
        return result.to_wire()


class ControlRouter:
    """Maps ``/peermesh.v1/<method>`` to handlers registered by each subsystem."""

    def __init__(self, *, on_internal_error: Callable[[str], None] | None = None) -> None:
        self._handlers: dict[str, _Served] = {}
        self.calls = 0
        self.errors = 0
        self.internal_errors = 0
        self.on_internal_error = on_internal_error

    def serve(
        self,
        method: RpcMethod[Req, Resp],
        handler: Callable[[ControlRequest[Req]], Awaitable[Resp]],
    ) -> None:
        if method.name in self._handlers:
            raise ValueError(f"control method {method.name!r} is already registered")
        self._handlers[method.name] = _Served(method, handler)

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(
        self, method: RpcMethod[Req, Resp], peer: SpiffeId, body: Req, node: str | None = None
    ) -> Resp:
        """Call a method of this agent's own in-process, as a peer's call would run it."""
        served = self._handlers.get(method.name)
        if served is None:
            raise PeermeshError(f"no control method {method.name!r}", status=404)
        return method.response.from_wire(await served(method.name, peer, body.to_wire(), node))

    @staticmethod
    def owns(path: bytes) -> bool:
        return path.startswith(PREFIX.encode())

    async def handle(
        self,
        head: RequestHead,
        body: BodySource,
        writer: ResponseWriter,
        peer: SpiffeId,
        node: str | None = None,
    ) -> int:
        """Serve one control call; returns the status sent."""
        self.calls += 1
        method = head.path.decode("ascii", "replace")[len(PREFIX) :].split("?", 1)[0]
        handler = self._handlers.get(method)
        if handler is None:
            return await self._refuse(writer, 404, f"no control method {method!r}")
        if head.method != b"POST":
            return await self._refuse(writer, 405, "control methods take POST")
        chunks: list[bytes] = []
        size = 0
        while chunk := await body.receive_data():
            size += len(chunk)
            if size > MAX_BODY:
                return await self._refuse(writer, 413, f"control body over {MAX_BODY} bytes")
            chunks.append(chunk)
        try:
            payload = _unpack(b"".join(chunks)) if chunks else None
        except BoundsError as exc:
            return await self._refuse(writer, 400, f"body refused: {exc}")
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            return await self._refuse(writer, 400, f"body is not valid msgpack: {exc}")
        try:
            result = await handler(method, peer, payload, node)
        except TransportError:
            raise  # our own stream is gone: there is nobody to refuse to
        except PeermeshError as exc:
            return await self._refuse(writer, exc.status, exc.message, exc.code)
        except Exception:
            # One peer's call must not end the agent: answer 500, log, count, go on.
            self.internal_errors += 1
            log.exception("control method %s failed for %s", method, peer)
            if self.on_internal_error is not None:
                self.on_internal_error("control")
            return await self._refuse(writer, 500, "internal error; the agent logged it")
        return await self._reply(writer, 200, {"result": result})

    async def refuse(
        self, writer: ResponseWriter, status: int, message: str, code: str | None = None
    ) -> int:
        """Answer a control call with an error the caller's client decodes."""
        return await self._refuse(writer, status, message, code)

    async def _refuse(
        self, writer: ResponseWriter, status: int, message: str, code: str | None = None
    ) -> int:
        payload: dict[str, Any] = {"error": message}
        if code:
            payload["code"] = code
        return await self._reply(writer, status, payload)

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
