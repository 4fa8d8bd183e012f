"""Outbound listener: the app's requests enter the mesh here (default 127.0.0.1:15001).

Apps speak HTTP/1.1 (also as an ``HTTP_PROXY``) or HTTP/2 with prior knowledge; the
connection preface tells them apart. The destination service comes from the
authority; the request leaves on a pooled mTLS HTTP/2 connection to a peer agent.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import trio

from certs.spiffe import SpiffeId
from peermesh.http.exchange import (
    BodySource,
    H2ResponseWriter,
    H2StreamBody,
    H2UpstreamCall,
    ResponseWriter,
)
from peermesh.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.http.h2session import ConnectionUnavailable, H2Session, H2Stream, StreamReset
from peermesh.http.headers import (
    HeaderError,
    RequestHead,
    destination_service,
    h2_request_to_head,
    head_to_h2,
)
from peermesh.metrics import AgentMetrics
from peermesh.proxy import errors
from peermesh.proxy.endpoints import Endpoint, EndpointSource
from peermesh.proxy.pool import PeerPool
from peermesh.proxy.relay import DownstreamGone, relay
from peermesh.proxy.tracker import ConnectionTracker

log = logging.getLogger(__name__)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FIRST_BYTES_TIMEOUT = 30.0


async def sniff_preface(
    transport: trio.abc.Stream, timeout: float = FIRST_BYTES_TIMEOUT
) -> tuple[str, bytes]:
    """Read just enough to tell h2c from HTTP/1.1: ("h2c"|"h1"|"truncated"|"timeout", bytes)."""
    data = b""
    with trio.move_on_after(timeout):
        while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            try:
                chunk = await transport.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return "truncated", data
            if not chunk:
                return ("truncated" if data else "closed"), data
            data += chunk
        if data.startswith(H2_PREFACE):
            return "h2c", data
        return "h1", data
    return "timeout", data


class OutboundProxy:
    """Routes app requests to peer agents."""

    def __init__(
        self,
        *,
        local_service: str,
        trust_domain: str,
        endpoints: EndpointSource,
        pool: PeerPool,
        metrics: AgentMetrics,
        tracker: ConnectionTracker,
    ) -> None:
        self.local_service = local_service
        self.trust_domain = trust_domain
        self.endpoints = endpoints
        self.pool = pool
        self.metrics = metrics
        self.tracker = tracker
        self._rr = itertools.count()

    async def serve_connection(self, transport: trio.SocketStream) -> None:
        """One app connection: sniff its protocol and serve it until it ends."""
        client = _peer_ip(transport)
        kind, data = await sniff_preface(transport)
        if kind in ("truncated", "timeout"):
            self.metrics.reject("outbound", "bad-preface" if kind == "truncated" else "timeout")
            await trio.aclose_forcefully(transport)
            return
        if kind == "closed":
            await trio.aclose_forcefully(transport)
            return
        self.metrics.open_connections.labels("outbound").inc()
        try:
            if kind == "h2c":
                await self._serve_h2c(transport, data, client)
            else:
                await self._serve_h1(transport, data, client)
        finally:
            self.metrics.open_connections.labels("outbound").dec()

    async def _serve_h2c(self, transport: trio.SocketStream, data: bytes, client: str) -> None:
        async def on_stream(stream: H2Stream) -> None:
            await self._handle_h2_stream(stream, client)

        session = H2Session(
            transport,
            client_side=False,
            handler=on_stream,
            initial_data=data,
            on_protocol_error=lambda why: self.metrics.reject("outbound", "h2-protocol-error"),
        )
        if self.tracker.draining:
            session.start_drain()
        self.tracker.h2.add(session)
        try:
            await session.run()
        finally:
            self.tracker.h2.discard(session)

    async def _serve_h1(self, transport: trio.SocketStream, data: bytes, client: str) -> None:
        async def on_request(
            head: RequestHead, body: H1RequestBody, writer: H1ResponseWriter
        ) -> None:
            await self.handle(head, body, writer, has_body=body.has_body)

        conn = H1ServerConnection(
            transport,
            on_request,
            initial_data=data,
            client_address=client,
            on_bad_request=lambda why: self.metrics.reject("outbound", "h1-bad-request"),
        )
        conn.draining = self.tracker.draining
        with trio.CancelScope() as scope:
            self.tracker.h1[conn] = scope
            try:
                await conn.run()
            finally:
                self.tracker.h1.pop(conn, None)

    async def _handle_h2_stream(self, stream: H2Stream, client: str) -> None:
        writer = H2ResponseWriter(stream)
        try:
            head = h2_request_to_head(stream.headers or [], client_address=client)
        except HeaderError as exc:
            await errors.send_error(writer, errors.bad_request(str(exc)))
            return
        await self.handle(head, H2StreamBody(stream), writer, has_body=not stream.headers_only)

    async def handle(
        self, head: RequestHead, body: BodySource, writer: ResponseWriter, *, has_body: bool
    ) -> None:
        """Route one request to a peer and relay the exchange."""
        started = trio.current_time()
        service = "unknown"
        status = 0
        try:
            try:
                service = destination_service(head.authority)
            except HeaderError as exc:
                raise errors.bad_request(str(exc)) from None
            endpoint = self._pick(service, self.endpoints.endpoints(service))
            call = await self._open(endpoint, head, has_body=has_body)
            result = await relay(body, call, writer, request_has_body=has_body)
            status = result.status
            if result.error_code:
                self.metrics.sidecar_errors.labels("outbound", result.error_code).inc()
        except errors.ProxyError as exc:
            status = exc.status
            self.metrics.sidecar_errors.labels("outbound", exc.code).inc()
            try:
                await errors.send_error(writer, exc)
            except (StreamReset, DownstreamGone, Exception) as send_exc:  # client gone too
                log.debug("could not deliver %s: %s", exc.code, send_exc)
        except DownstreamGone:
            status = status or 499
        finally:
            self.metrics.record_request(
                "outbound",
                self.local_service,
                service,
                status or 499,
                trio.current_time() - started,
            )

    def _pick(self, service: str, endpoints: Sequence[Endpoint] | None) -> Endpoint:
        if endpoints is None:
            raise errors.no_route(service)
        if not endpoints:
            raise errors.no_endpoints(service)
        return endpoints[next(self._rr) % len(endpoints)]

    async def _open(
        self, endpoint: Endpoint, head: RequestHead, *, has_body: bool
    ) -> H2UpstreamCall:
        expect = SpiffeId.for_service(self.trust_domain, endpoint.service)
        headers = head_to_h2(head, scheme=b"https")
        headers = [(n, v) for n, v in headers if n != b"x-forwarded-client-cert"]
        for _attempt in range(2):
            session = await self.pool.session_for(endpoint, expect=expect)
            try:
                stream = await session.open_stream(headers, end_stream=not has_body)
            except ConnectionUnavailable:
                continue  # raced with GOAWAY or a full connection: take another
            return H2UpstreamCall(stream)
        raise errors.peer_unreachable(
            endpoint.service, endpoint.address, "connection closed while opening the stream"
        )


def _peer_ip(transport: trio.SocketStream) -> str:
    try:
        return str(transport.socket.getpeername()[0])
    except OSError:
        return ""
