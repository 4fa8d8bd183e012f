"""Client for peers' ``/peermesh.v1/`` control RPCs, over the pooled mTLS connections."""

from __future__ import annotations

from typing import Any

import msgpack
import trio

from certs.spiffe import SpiffeId
from peermesh.http.h2session import ConnectionUnavailable, StreamReset
from peermesh.proxy.endpoints import Endpoint
from peermesh.proxy.errors import ProxyError
from peermesh.proxy.pool import PeerPool

from .router import CONTENT_TYPE, MAX_BODY, PREFIX


class ControlCallError(Exception):
    """A control call that did not return a result; the message says why."""


class ControlClient:
    """Calls a method on a peer agent and returns its decoded result."""

    def __init__(self, pool: PeerPool) -> None:
        self.pool = pool

    async def call(
        self,
        endpoint: Endpoint,
        method: str,
        body: Any = None,
        *,
        timeout: float = 5.0,
        expect: SpiffeId | None = None,
    ) -> Any:
        data = msgpack.packb(body, use_bin_type=True)
        with trio.move_on_after(timeout) as scope:
            try:
                session = await self.pool.session_for(endpoint, expect=expect)
                stream = await session.open_stream(
                    [
                        (b":method", b"POST"),
                        (b":scheme", b"https"),
                        (b":authority", endpoint.address.encode()),
                        (b":path", (PREFIX + method).encode()),
                        (b"content-type", CONTENT_TYPE),
                        (b"content-length", str(len(data)).encode()),
                    ]
                )
                try:
                    await stream.send_data(data, end_stream=True)
                    headers = await stream.receive_headers()
                    chunks: list[bytes] = []
                    size = 0
                    while chunk := await stream.receive_data():
                        size += len(chunk)
                        if size > MAX_BODY:
                            raise ControlCallError(f"{method}: reply over {MAX_BODY} bytes")
                        chunks.append(chunk)
                finally:
                    if not stream.closed:
                        stream.reset()
            except ProxyError as exc:
                raise ControlCallError(f"{method} to {endpoint.address}: {exc.message}") from exc
            except (StreamReset, ConnectionUnavailable) as exc:
                raise ControlCallError(f"{method} to {endpoint.address}: {exc}") from exc
        if scope.cancelled_caught:
            raise ControlCallError(f"{method} to {endpoint.address}: no reply within {timeout}s")
        status = next((int(v) for n, v in headers if n == b":status"), 0)
        try:
            reply = msgpack.unpackb(b"".join(chunks), raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise ControlCallError(f"{method}: reply is not msgpack (status {status})") from exc
        if status != 200 or not isinstance(reply, dict) or "result" not in reply:
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise ControlCallError(f"{method} refused by {endpoint.address} ({status}): {error}")
        return reply["result"]
