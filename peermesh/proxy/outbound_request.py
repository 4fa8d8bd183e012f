"""Pieces of one outbound request that need only the pool, not the whole proxy.

Opening the upstream stream, ending a gRPC call that ran out of time mid-response,
and mirroring a copy of a request to a shadow destination.
"""

from __future__ import annotations

import random

import trio

from certs.spiffe import SpiffeId
from peermesh.core.endpoint import Endpoint, EndpointSource
from peermesh.net import errors
from peermesh.net.http.exchange import BodySource, H2UpstreamCall, ResponseWriter
from peermesh.net.http.h2session import ConnectionUnavailable
from peermesh.net.http.headers import RequestHead, head_to_h2
from peermesh.net.pool import PeerPool
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.compiled import RouteDecision
from peermesh.proxy.attempt import BufferedBody, UpstreamAttempt
from peermesh.proxy.relay import UPSTREAM_ERRORS
from peermesh.proxy.traffic import matching

#: How long a mirrored copy may take before it is dropped.
MIRROR_TIMEOUT = 10.0


async def open_upstream(
    pool: PeerPool,
    endpoint: Endpoint,
    head: RequestHead,
    *,
    expect: SpiffeId | None,
    has_body: bool,
) -> H2UpstreamCall:
    """Open the request's stream on a pooled session to ``endpoint``."""
    headers = head_to_h2(head, scheme=b"https")
    headers = [(n, v) for n, v in headers if n != b"x-forwarded-client-cert"]
    for _attempt in range(2):
        session = await pool.session_for(endpoint, expect=expect)
        try:
            stream = await session.open_stream(headers, end_stream=not has_body)
        except ConnectionUnavailable:
            continue  # raced with GOAWAY or a full connection: take another
        return H2UpstreamCall(stream)
    raise errors.peer_unreachable(
        endpoint.service, endpoint.address, "connection closed while opening the stream"
    )


async def end_grpc_deadline(writer: ResponseWriter, target: str) -> None:
    """End a gRPC response already under way with DEADLINE_EXCEEDED trailers."""
    trailers = [
        (b"grpc-status", str(int(errors.GrpcStatus.DEADLINE_EXCEEDED)).encode()),
        (b"grpc-message", errors.grpc_message(f"{target} did not answer within the timeout")),
        (b"x-peermesh-error", b"timeout"),
    ]
    try:
        with trio.move_on_after(1):
            await writer.finish(trailers)
            return
    except Exception:  # the client is gone or the stream broke: nothing left to tell
        pass
    writer.abort()


class Mirror:
    """Fire-and-forget copies of requests to a route's mirror destination."""

    def __init__(
        self,
        *,
        pool: PeerPool,
        endpoints: EndpointSource,
        trust_domain: str,
        metrics: AgentMetrics,
        rng: random.Random,
        background: trio.Nursery | None,
    ) -> None:
        self.pool = pool
        self.endpoints = endpoints
        self.trust_domain = trust_domain
        self.metrics = metrics
        self.rng = rng
        self.background = background

    def maybe_send(
        self,
        decision: RouteDecision,
        head: RequestHead,
        source: BufferedBody | BodySource | None,
        *,
        has_body: bool,
    ) -> None:
        """Start a copy; only requests whose body is fully buffered (or empty)."""
        mirror = decision.mirror
        if mirror is None or self.rng.random() * 100 >= decision.mirror_percentage:
            return
        if has_body and not isinstance(source, BufferedBody):
            return
        if self.background is None:
            return
        body = source if isinstance(source, BufferedBody) else None
        labels = tuple(mirror.labels or ())
        self.background.start_soon(self._send, mirror.host, labels, head, body)

    async def _send(
        self,
        host: str,
        labels: tuple[tuple[str, str], ...],
        head: RequestHead,
        body: BufferedBody | None,
    ) -> None:
        """Send the copy; its response is read and dropped, its failures only counted."""
        with trio.move_on_after(MIRROR_TIMEOUT):
            try:
                endpoints = matching(self.endpoints.endpoints(host) or [], labels)
                if not endpoints:
                    return
                endpoint = self.rng.choice(endpoints)
                shadow = RequestHead(
                    head.method, head.scheme, head.authority, head.path,
                    (*head.headers, (b"x-peermesh-mirror", b"1")),
                )  # fmt: skip
                expect = SpiffeId.for_service(self.trust_domain, endpoint.service)
                call = await open_upstream(
                    self.pool, endpoint, shadow, expect=expect, has_body=body is not None
                )
                async with UpstreamAttempt(call, body.reader() if body else None) as attempt:
                    await attempt.response()
                    while await call.receive_data():
                        pass
                    attempt.committed = True
                self.metrics.mirrored.labels(host).inc()
            except (errors.ProxyError, *UPSTREAM_ERRORS):
                return
