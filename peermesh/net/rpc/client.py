"""Client for peers' ``/peermesh.v1/`` control RPCs, over the pooled mTLS connections."""

from __future__ import annotations

from typing import Any

import msgpack
import trio

from certs.spiffe import SpiffeId
from peermesh.core.endpoint import Endpoint
from peermesh.core.wire import WireError
from peermesh.net.errors import ProxyError
from peermesh.net.http.h2session import ConnectionUnavailable, StreamReset
from peermesh.net.pool import PeerPool

from .errors import RpcError
from .method import Req, Resp, RpcMethod
from .router import CONTENT_TYPE, MAX_BODY, PREFIX


class ControlClient:
    """Calls a method on a peer agent and returns its decoded, validated result."""

    def __init__(self, pool: PeerPool) -> None:
        self.pool = pool

    async def call(
        self,
        endpoint: Endpoint,
        method: RpcMethod[Req, Resp],
        body: Req,
        *,
        timeout: float = 5.0,
        expect: SpiffeId | None = None,
    ) -> Resp:
        result = await self._call(endpoint, method.name, body.to_wire(), timeout, expect)
        try:
            return method.response.from_wire(result)
        except WireError as exc:
            raise RpcError(502, f"{method.name} from {endpoint.address}: {exc}") from None

    async def _call(
        self,
        endpoint: Endpoint,
        method: str,
        body: Any,
        timeout: float,
        expect: SpiffeId | None,
    ) -> Any:
        data = msgpack.packb(body, use_bin_type=True)
        where = f"{method} to {endpoint.address}"
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
                            raise RpcError(502, f"{method}: reply over {MAX_BODY} bytes")
                        chunks.append(chunk)
                finally:
                    if not stream.closed:
                        stream.reset()
            except ProxyError as exc:
                raise RpcError(503, f"{where}: {exc.message}", code=exc.code) from exc
            except (StreamReset, ConnectionUnavailable) as exc:
                raise RpcError(503, f"{where}: {exc}", code="unreachable") from exc
        if scope.cancelled_caught:
            raise RpcError(504, f"{where}: no reply within {timeout}s")
        status = next((int(v) for n, v in headers if n == b":status"), 0)
        try:
            reply = msgpack.unpackb(b"".join(chunks), raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise RpcError(502, f"{method}: reply is not msgpack (status {status})") from exc
        if status == 200 and isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        error = reply.get("error") if isinstance(reply, dict) else reply
        code = reply.get("code") if isinstance(reply, dict) else None
        raise RpcError(
            status if 400 <= status < 600 else 502,
            f"{method} refused by {endpoint.address} ({status}): {error}",
            code=code if isinstance(code, str) else None,
            reason=str(error),
        )
