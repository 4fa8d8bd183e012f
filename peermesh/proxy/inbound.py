"""Inbound listener: peers' requests reach the local app here (default 0.0.0.0:15443).

TLS 1.3 with a client certificate is required; after the handshake the peer's SPIFFE
ID (its single URI SAN) is checked and travels with every request, to control
handlers, to authorization (a later feature) and to the app as
``x-forwarded-client-cert``. Requests under ``/peermesh.v1/`` are the agent's own.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import trio

from certs.spiffe import SpiffeId
from peermesh.control.router import ControlRouter
from peermesh.http.exchange import H2ResponseWriter, H2StreamBody
from peermesh.http.h1client import AppUnavailable
from peermesh.http.h2session import H2Session, H2Stream
from peermesh.http.headers import (
    CLIENT_CERT_HEADER,
    HeaderError,
    RequestHead,
    h2_request_to_head,
)
from peermesh.metrics import AgentMetrics
from peermesh.policy.compiled import AuthzDecision, CompiledPolicy
from peermesh.proxy import errors
from peermesh.proxy.localapp import LocalApp
from peermesh.proxy.relay import DownstreamGone, relay
from peermesh.proxy.tracker import ConnectionTracker
from peermesh.tls import MeshTls, PeerIdentityError, TlsNotReady, peer_identity

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
    ) -> None:
        self.service = service
        self.tls = tls
        self.app = app
        self.control = control
        self.metrics = metrics
        self.tracker = tracker
        self.handshake_timeout = handshake_timeout
        self.policy = policy
        self.port = 0  # set by the agent once the listener is bound

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
        stream = trio.SSLStream(tcp, context, server_side=True)
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

        async def on_stream(h2_stream: H2Stream) -> None:
            await self._handle_stream(h2_stream, identity, peer_ip)

        session = H2Session(
            stream,
            client_side=False,
            handler=on_stream,
            peer=identity,
            on_protocol_error=lambda why: self.metrics.reject("inbound", "h2-protocol-error"),
        )
        if self.tracker.draining:
            session.start_drain()
        self.tracker.h2.add(session)
        self.metrics.open_connections.labels("inbound").inc()
        try:
            await session.run()
        finally:
            self.tracker.h2.discard(session)
            self.metrics.open_connections.labels("inbound").dec()

    def _authorize(self, head: RequestHead, peer: SpiffeId) -> AuthzDecision | None:
        """The compiled AuthorizationPolicy verdict; None when the request may pass."""
        if self.policy is None:
            return None
        compiled = self.policy()
        headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in head.headers}
        decision = compiled.authorize(
            self.service,
            str(peer),
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
        if decision.allowed:
            return None
        self.metrics.authz_denials.labels(decision.policy_name or "", decision.action).inc()
        return decision

    async def _handle_stream(self, stream: H2Stream, peer: SpiffeId, peer_ip: str) -> None:
        writer = H2ResponseWriter(stream)
        body = H2StreamBody(stream)
        started = trio.current_time()
        status = 0
        try:
            try:
                head = h2_request_to_head(stream.headers or [], client_address=peer_ip)
            except HeaderError as exc:
                raise errors.bad_request(str(exc)) from None
            if ControlRouter.owns(head.path):
                status = await self.control.handle(head, body, writer, peer)
                method = head.path.decode("ascii", "replace").split("?", 1)[0]
                known = method[len("/peermesh.v1/") :]
                label = known if known in self.control.methods else "unknown"
                self.metrics.control_calls.labels(label, str(status)).inc()
                return
            denial = self._authorize(head, peer)
            if denial is not None:
                status = 403
                await _send_denial(writer, denial)
                return
            head = _with_client_cert(head, peer, self.tls)
            has_body = not stream.headers_only
            try:
                call = await self.app.start(head, has_body=has_body)
            except AppUnavailable as exc:
                raise errors.app_unavailable(str(exc)) from None
            result = await relay(body, call, writer, request_has_body=has_body)
            status = result.status
            if result.error_code:
                self.metrics.sidecar_errors.labels("inbound", result.error_code).inc()
        except errors.ProxyError as exc:
            status = exc.status
            self.metrics.sidecar_errors.labels("inbound", exc.code).inc()
            await errors.send_error(writer, exc)
        except DownstreamGone:
            status = status or 499
        finally:
            if not ControlRouter.owns(
                (stream.headers and dict(stream.headers).get(b":path")) or b""
            ):
                self.metrics.record_request(
                    "inbound",
                    peer.service or str(peer),
                    self.service,
                    status or 499,
                    trio.current_time() - started,
                )


async def _send_denial(writer: H2ResponseWriter, decision: AuthzDecision) -> None:
    body = (
        f"RBAC: access denied: {decision.reason}"
        + (f" (policy {decision.policy_name})" if decision.policy_name else "")
        + "\n"
    ).encode()
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


def _with_client_cert(head: RequestHead, peer: SpiffeId, tls: MeshTls) -> RequestHead:
    """Replace any client-supplied XFCC with what the handshake proved (Envoy's format)."""
    try:
        ours = str(tls.identity)
    except TlsNotReady:
        ours = ""
    headers = [(n, v) for n, v in head.headers if n != CLIENT_CERT_HEADER]
    headers.append((CLIENT_CERT_HEADER, f"By={ours};URI={peer}".encode()))
    return RequestHead(head.method, head.scheme, head.authority, head.path, tuple(headers))


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLError):
        return (cause.reason or "ssl-error").lower().replace("_", "-")
    return "connection-broken"
