"""The sidecar's client for its own app, over HTTP/1.1 or h2c as the app speaks."""

from __future__ import annotations

from typing import Literal

import trio

from peermesh.net.eager import EagerStream
from peermesh.net.http.exchange import H2UpstreamCall, UpstreamCall
from peermesh.net.http.h1client import AppUnavailable, H1AppClient
from peermesh.net.http.h2session import ConnectionUnavailable, H2Session
from peermesh.net.http.headers import RequestHead, head_to_h2

AppProtocol = Literal["h1", "h2c"]


class LocalApp:
    """Opens calls to the app at ``host:port``; h2c reuses one multiplexed connection."""

    def __init__(self, host: str, port: int, protocol: AppProtocol, nursery: trio.Nursery) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.nursery = nursery
        self._h1 = H1AppClient(host, port)
        self._h2: H2Session | None = None
        self._dial_lock = trio.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, head: RequestHead, *, has_body: bool) -> UpstreamCall:
        if self.protocol == "h1":
            return await self._h1.start(head, has_body=has_body)
        for _attempt in range(2):
            session = await self._h2_session()
            try:
                stream = await session.open_stream(
                    head_to_h2(head, scheme=b"http"), end_stream=not has_body
                )
            except ConnectionUnavailable:
                self._h2 = None
                continue
            return H2UpstreamCall(stream)
        raise AppUnavailable(f"local app at {self.address} closed its h2c connection")

    async def _h2_session(self) -> H2Session:
        async with self._dial_lock:
            if self._h2 is not None and self._h2.can_open_stream:
                return self._h2
            try:
                tcp = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                raise AppUnavailable(
                    f"local app at {self.address} refused the connection ({exc.strerror or exc})"
                ) from exc
            session = H2Session(EagerStream(tcp), client_side=True)
            self.nursery.start_soon(session.run)
            self._h2 = session
            return session
