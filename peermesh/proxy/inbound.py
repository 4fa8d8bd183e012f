"""Inbound listener: peers' requests reach the local app here (default 0.0.0.0:15443).

TLS 1.3 with a client certificate is required; after the handshake the peer's SPIFFE
ID (its single URI SAN) is checked and travels with every request, to control
handlers, to authorization (a later feature) and to the app as
``x-forwarded-client-cert``. Requests under ``/peermesh.v1/`` are the agent's own.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import trio

from certs.spiffe import SpiffeId
from peermesh.net import errors
from peermesh.net.eager import EagerStream
from peermesh.net.http.exchange import BodySource, H2ResponseWriter, H2StreamBody, ResponseWriter
from peermesh.net.http.h1client import AppUnavailable
from peermesh.net.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.net.http.h1wire import BadRequest
from peermesh.net.http.h2session import H2Stream
from peermesh.net.http.headers import (
    CLIENT_CERT_HEADER,
    HeaderError,
    RequestHead,
    h2_request_to_head,
)
from peermesh.net.rpc.router import ControlRouter
from peermesh.net.tls import (
    MeshTls,
    PeerIdentityError,
    TlsNotReady,
    peer_identity,
    peer_node_name,
)
from peermesh.observability.context import CountingBody, CountingWriter, note_authz
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.compiled import AuthzDecision, CompiledPolicy
from peermesh.proxy.guard import ListenerGuard
from peermesh.proxy.localapp import LocalApp
from peermesh.proxy.relay import DownstreamGone, relay
from peermesh.proxy.sniff import peer_ip as tcp_peer
from peermesh.proxy.sniff import sniff_preface
from peermesh.proxy.tracker import ConnectionTracker
from peermesh.proxy.tunnel import access_log_of, tunnel_in
from peermesh.traffic.limits import RateLimiter

if TYPE_CHECKING:
    from peermesh.observability.hub import Observability

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class InboundProxy:
    """Terminates mTLS from peers and serves their streams."""

    def __init__(
        self,
        *,
        service: str,
        tls: MeshTls,
        app: LocalApp,
        control: ControlRouter,
        metrics: AgentMetrics,
        tracker: ConnectionTracker,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        policy: Callable[[], CompiledPolicy] | None = None,
        guard: ListenerGuard | None = None,
        plain_guard: ListenerGuard | None = None,
    ) -> None:
        self.service = service
        #: Timeouts and caps of the mTLS listener (per SPIFFE ID) and of the plaintext one.
        self.guard = guard or ListenerGuard("inbound", metrics)
        self.plain_guard = plain_guard or ListenerGuard(
            "plaintext", metrics, timeouts=self.guard.timeouts, streams=self.guard.streams
        )
        self.tls = tls
        self.app = app
        self.control = control
        self.metrics = metrics
        self.tracker = tracker
        self.handshake_timeout = handshake_timeout
        self.policy = policy
        self._limiter: RateLimiter | None = None
        self._limiter_config: object = None
        self.port = 0  # set by the agent once the listener is bound
        self.observer: Observability | None = None  # set by the agent

    async def serve_connection(self, tcp: trio.SocketStream) -> None:
        """Handshake, authenticate, then serve HTTP/2 until the connection ends."""
        try:
            peer_ip = str(tcp.socket.getpeername()[0])
        except OSError:
            peer_ip = ""
        try:
            context = self.tls.server_context()
        except TlsNotReady:
            self.metrics.tls_failures.labels("server", "no-local-certificate").inc()
            await trio.aclose_forcefully(tcp)
            return
        stream = trio.SSLStream(EagerStream(tcp), context, server_side=True)
        with trio.move_on_after(self.handshake_timeout) as scope:
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                self.metrics.tls_failures.labels("server", _reason(exc)).inc()
                log.info("refused TLS from %s: %s", peer_ip, _reason(exc))
                await trio.aclose_forcefully(stream)
                return
        if scope.cancelled_caught:
            self.metrics.tls_failures.labels("server", "handshake-timeout").inc()
            await trio.aclose_forcefully(stream)
            return
        if stream.selected_alpn_protocol() != "h2":
            self.metrics.tls_failures.labels("server", "no-alpn-h2").inc()
            await trio.aclose_forcefully(stream)
            return
        try:
            identity = peer_identity(stream, self.tls.trust_domain)
        except PeerIdentityError as exc:
            self.metrics.tls_failures.labels("server", "peer-identity").inc()
            log.info("refused peer %s: %s", peer_ip, exc)
            await trio.aclose_forcefully(stream)
            return

        if self.policy is not None and self.policy().is_revoked(str(identity)):
            self.metrics.tls_failures.labels("server", "revoked-identity").inc()
            log.info("refused revoked identity %s from %s", identity, peer_ip)
            await trio.aclose_forcefully(stream)
            return

        if self.guard.admit_identity(str(identity)) is not None:
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_session(stream, identity, peer_ip)
        finally:
            self.guard.counts.release_peer(str(identity))

    async def _serve_session(
        self, stream: trio.SSLStream[EagerStream], identity: SpiffeId, peer_ip: str
    ) -> None:
        node = peer_node_name(stream)

        async def on_stream(h2_stream: H2Stream) -> None:
            await self._handle_stream(h2_stream, identity, peer_ip, node)

        session = self.guard.h2_session(stream, on_stream, peer=identity, identity=identity)
        if self.tracker.draining:
            session.start_drain()
        self.tracker.h2.add(session)
        self.metrics.open_connections.labels("inbound").inc()
        try:
            await session.run()
        finally:
            self.tracker.h2.discard(session)
            self.metrics.open_connections.labels("inbound").dec()

    def _authorize(self, head: RequestHead, peer: SpiffeId | None) -> AuthzDecision | None:
        """The compiled AuthorizationPolicy verdict; None when the request may pass."""
        if self.policy is None:
            return None
        compiled = self.policy()
        headers = _LazyHeaders(head.headers)  # decoded only if a policy looks at them
        decision = compiled.authorize(
            self.service,
            str(peer) if peer is not None else None,
            head.method.decode("ascii", "replace"),
            head.path.decode("ascii", "replace"),
            self.port,
            headers,
        )
        for name in decision.audited:
            log.info(
                "AUDIT %s: %s %s %s -> %s (%s)",
                name,
                peer,
                head.method.decode(),
                head.path.decode("ascii", "replace"),
                "allow" if decision.allowed else "deny",
                decision.reason,
            )
        if decision.policy_name:
            note_authz(decision.policy_name)
        if decision.allowed:
            return None
        self.metrics.authz_denials.labels(decision.policy_name or "", decision.action).inc()
        return decision

    def _authorize_tcp(self, peer: SpiffeId, port: int) -> bool:
        """AuthorizationPolicy for a TCP tunnel: the caller's SPIFFE ID and the app port."""
        if self.policy is None:
            return True
        decision = self.policy().authorize(self.service, str(peer), "CONNECT", "", port, {})
        if not decision.allowed:
            self.metrics.authz_denials.labels(decision.policy_name or "", decision.action).inc()
            log.info("tcp tunnel from %s to port %d denied: %s", peer, port, decision.reason)
        return decision.allowed

    async def _handle_stream(
        self, stream: H2Stream, peer: SpiffeId, peer_ip: str, node: str | None = None
    ) -> None:
        if stream.headers and (b":method", b"CONNECT") in stream.headers:
            await tunnel_in(
                stream,
                service=self.service,
                peer=peer,
                app=(self.app.host, self.app.port),
                authorize=lambda port: self._authorize_tcp(peer, port),
                authorize_http=lambda head: self._authorize(head, peer) is None,
                metrics=self.metrics,
                access_log=access_log_of(self.observer),
            )
            return
        writer = H2ResponseWriter(stream)
        body = H2StreamBody(stream)
        try:
            head = h2_request_to_head(stream.headers or [], client_address=peer_ip)
        except HeaderError as exc:
            self.metrics.sidecar_errors.labels("inbound", "bad-request").inc()
            await errors.send_error(writer, errors.bad_request(str(exc)))
            return
        if ControlRouter.owns(head.path):
            if self.policy is not None and self.policy().is_revoked(str(peer)):
                # Checked per call, not only at the handshake: a connection opened before
                # the revocation arrived must not keep renewing or pushing policy.
                self.metrics.control_calls.labels("revoked", "403").inc()
                await self.control.refuse(
                    writer, 403, f"identity {peer} is revoked by the MeshConfig", "revoked"
                )
                return
            status = await self.control.handle(head, body, writer, peer, node)
            method = head.path.decode("ascii", "replace").split("?", 1)[0]
            known = method[len("/peermesh.v1/") :]
            label = known if known in self.control.methods else "unknown"
            self.metrics.control_calls.labels(label, str(status)).inc()
            return
        await self.serve_request(head, body, writer, has_body=not stream.headers_only, peer=peer)

    async def serve_request(
        self,
        head: RequestHead,
        body: BodySource,
        writer: ResponseWriter,
        *,
        has_body: bool,
        peer: SpiffeId | None,
    ) -> None:
        """Authorize, rate-limit, then forward to the local app (any HTTP version)."""
        started = trio.current_time()
        status = 0
        source = (peer.service or str(peer)) if peer is not None else "plaintext"
        observer = self.observer
        record = None
        if observer is not None:
            record, head = observer.begin("inbound", head, source=source, destination=self.service)
            record.source_identity = str(peer) if peer is not None else ""
            body = CountingBody(body, record)
            writer = CountingWriter(writer, record)
        try:
            grpc = errors.is_grpc(head)
            denial = self._authorize(head, peer)
            if denial is not None:
                status = 403
                await _send_denial(writer, denial, grpc=grpc)
                return
            limited = self._rate_limited(peer)
            if limited is not None:
                status = 429
                await _send_rate_limited(writer, limited, grpc=grpc)
                return
            head = _with_client_cert(head, peer, self.tls)
            try:
                call = await self.app.start(head, has_body=has_body)
            except AppUnavailable as exc:
                raise errors.app_unavailable(str(exc)) from None
            except BadRequest as exc:  # a head HTTP/1.1 cannot carry to the app
                raise errors.bad_request(str(exc)) from None
            result = await relay(body, call, writer, request_has_body=has_body, grpc=grpc)
            status = result.status
            if result.error_code:
                self.metrics.sidecar_errors.labels("inbound", result.error_code).inc()
        except errors.ProxyError as exc:
            status = exc.status
            self.metrics.sidecar_errors.labels("inbound", exc.code).inc()
            await errors.send_error(writer, exc, grpc=errors.is_grpc(head))
        except DownstreamGone:
            status = status or 499
        finally:
            elapsed = trio.current_time() - started
            self.metrics.record_request(
                "inbound",
                source,
                self.service,
                status or 499,
                elapsed,
                grpc_status=record.grpc_status if record is not None else "",
            )
            if observer is not None and record is not None:
                observer.end(record, status or 499, elapsed)

    def _rate_limited(self, peer: SpiffeId | None) -> float | None:
        """Seconds to wait if the local rate limit (TrafficPolicy of our service) says no."""
        if self.policy is None:
            return None
        compiled = self.policy()
        destination = compiled.destination_policy(self.service)
        config = destination.spec.rate_limit if destination is not None else None
        if config is None:
            self._limiter = None
            return None
        if self._limiter is None or self._limiter_config != config:
            self._limiter = RateLimiter(config)
            self._limiter_config = config
        allowed, retry_after = self._limiter.check(
            trio.current_time(), str(peer) if peer is not None else None
        )
        if allowed:
            return None
        self.metrics.rate_limited.labels(self.service).inc()
        return retry_after

    async def serve_plaintext(self, tcp: trio.SocketStream) -> None:
        """PERMISSIVE mode: non-mesh clients over plain HTTP/1.1 or h2c (migration only)."""
        accepted = trio.current_time()
        guard = self.plain_guard
        kind, data = await sniff_preface(tcp, guard.timeouts.header or math.inf)
        if kind == "timeout":
            guard.breach("header-timeout", tcp_peer(tcp))
        if kind not in ("h1", "h2c"):
            await trio.aclose_forcefully(tcp)
            return
        try:
            client = str(tcp.socket.getpeername()[0])
        except OSError:
            client = ""

        async def plain(
            head: RequestHead, body: BodySource, writer: ResponseWriter, has_body: bool
        ) -> None:
            if self.policy is not None and self.policy().mtls_mode(self.service) != "PERMISSIVE":
                self.metrics.sidecar_errors.labels("inbound", "mtls-required").inc()
                await errors.send_error(
                    writer,
                    errors.ProxyError(
                        403,
                        "mtls-required",
                        f"{self.service} accepts mesh (mTLS) traffic only: MeshConfig mtls"
                        " mode is STRICT; set it to PERMISSIVE for this service to migrate",
                    ),
                )
                return
            await self.serve_request(head, body, writer, has_body=has_body, peer=None)

        if kind == "h2c":

            async def on_stream(stream: H2Stream) -> None:
                writer = H2ResponseWriter(stream)
                try:
                    head = h2_request_to_head(stream.headers or [], client_address=client)
                except HeaderError as exc:
                    await errors.send_error(writer, errors.bad_request(str(exc)))
                    return
                await plain(head, H2StreamBody(stream), writer, not stream.headers_only)

            await guard.h2_session(
                EagerStream(tcp), on_stream, peer=client, initial_data=data
            ).run()
        else:

            async def on_request(
                head: RequestHead, body: H1RequestBody, writer: H1ResponseWriter
            ) -> None:
                await plain(head, body, writer, body.has_body)

            await H1ServerConnection(
                EagerStream(tcp),
                on_request,
                initial_data=data,
                client_address=client,
                timeouts=guard.timeouts,
                started=accepted,
                stream_budget=guard.streams,
                on_breach=guard.breach_from(client),
            ).run()


class _LazyHeaders(Mapping[str, str]):
    """Request headers as the policy matchers read them, decoded on first use."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: tuple[tuple[bytes, bytes], ...]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _map(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {n.decode("latin-1"): v.decode("latin-1") for n, v in self._raw}
        return self._decoded

    def __getitem__(self, key: str) -> str:
        return self._map()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())

    def __bool__(self) -> bool:
        return bool(self._raw)


async def _send_rate_limited(
    writer: ResponseWriter, retry_after: float, *, grpc: bool = False
) -> None:
    body = b"local rate limit exceeded\n"
    if grpc:
        await errors.send_grpc_status(
            writer,
            errors.grpc_status_for(errors.ProxyError(429, "rate-limited", "")),
            body.decode().strip(),
            [(b"x-peermesh-error", b"rate-limited")],
        )
        return
    await writer.send_head(
        429,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry_after))).encode()),
            (b"x-peermesh-error", b"rate-limited"),
        ],
    )
    await writer.send_data(body)
    await writer.finish()


async def _send_denial(
    writer: ResponseWriter, decision: AuthzDecision, *, grpc: bool = False
) -> None:
    body = (
        f"RBAC: access denied: {decision.reason}"
        + (f" (policy {decision.policy_name})" if decision.policy_name else "")
        + "\n"
    ).encode()
    if grpc:
        await errors.send_grpc_status(
            writer,
            errors.GrpcStatus.PERMISSION_DENIED,
            body.decode().strip(),
            [
                (b"x-peermesh-error", b"denied"),
                (b"x-peermesh-policy", (decision.policy_name or "").encode()),
            ],
        )
        return
    await writer.send_head(
        403,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-peermesh-error", b"denied"),
            (b"x-peermesh-policy", (decision.policy_name or "").encode()),
        ],
    )
    await writer.send_data(body)
    await writer.finish()


def _with_client_cert(head: RequestHead, peer: SpiffeId | None, tls: MeshTls) -> RequestHead:
    """Replace any client-supplied XFCC with what the handshake proved (Envoy's format)."""
    try:
        ours = str(tls.identity)
    except TlsNotReady:
        ours = ""
    headers = [(n, v) for n, v in head.headers if n != CLIENT_CERT_HEADER]
    if peer is not None:
        headers.append((CLIENT_CERT_HEADER, f"By={ours};URI={peer}".encode()))
    return RequestHead(head.method, head.scheme, head.authority, head.path, tuple(headers))


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLError):
        return (cause.reason or "ssl-error").lower().replace("_", "-")
    return "connection-broken"
