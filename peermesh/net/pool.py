"""Connections to peer agents: one multiplexed mTLS HTTP/2 connection per peer.

Opened lazily on first use; a second one is opened when the first reaches the
peer's MAX_CONCURRENT_STREAMS. After a failed dial the peer is in backoff (full
jitter, doubling to a cap): requests meanwhile fail fast with 503 rather than hang,
which is what a caller on the wrong side of a partition needs.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from certs.spiffe import SpiffeId
from peermesh.core.endpoint import Endpoint
from peermesh.net import errors
from peermesh.net.eager import EagerStream
from peermesh.net.http.h2session import H2Session
from peermesh.net.tls import MeshTls, PeerIdentityError, TlsNotReady, peer_identity

BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0
# While requests wait on a peer that has sent nothing for PROBE_AFTER seconds, a PING
# must come back within PROBE_TIMEOUT or the connection is declared dead (its streams
# fail with 503 peer-unreachable and may retry elsewhere).
PROBE_AFTER = 1.0
PROBE_TIMEOUT = 1.0
# Unacknowledged data on a peer socket for this long kills it in the kernel too
# (TCP_USER_TIMEOUT, Linux), and idle sockets send TCP keepalives.
TCP_USER_TIMEOUT_MS = 5000
TCP_KEEPIDLE_S = 10
TCP_KEEPINTVL_S = 2
TCP_KEEPCNT = 3


@dataclass
class _PeerState:
    sessions: list[H2Session] = field(default_factory=list)
    dialing: trio.Lock = field(default_factory=trio.Lock)
    failures: int = 0
    retry_at: float = 0.0
    last_error: errors.ProxyError | None = None


@dataclass(frozen=True)
class PeerStatus:
    """One peer's connections as ``/v1/status`` and the metrics show them."""

    address: str
    connections: int
    streams: int
    identity: str | None
    failures: int
    last_error: str | None


class PeerPool:
    """Hands out an H2 session to a peer's inbound listener, dialling when needed."""

    def __init__(
        self,
        tls: MeshTls,
        nursery: trio.Nursery,
        *,
        connect_timeout: float = 2.0,
        ping_interval: float | None = 30.0,
        probe_after: float | None = PROBE_AFTER,
        probe_timeout: float = PROBE_TIMEOUT,
        rng: random.Random | None = None,
        on_tls_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.tls = tls
        self.nursery = nursery
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.probe_after = probe_after
        self.probe_timeout = probe_timeout
        self.rng = rng or random.Random()
        self.on_tls_failure = on_tls_failure
        self._peers: dict[tuple[str, int], _PeerState] = {}
        self.dials = 0

    def sessions(self) -> list[H2Session]:
        return [s for p in self._peers.values() for s in p.sessions if not s.is_closed]

    def status(self) -> list[PeerStatus]:
        out: list[PeerStatus] = []
        for (host, port), state in sorted(self._peers.items()):
            live = [s for s in state.sessions if not s.is_closed]
            out.append(
                PeerStatus(
                    address=f"{host}:{port}",
                    connections=len(live),
                    streams=sum(s.open_streams for s in live),
                    identity=str(live[0].peer) if live else None,
                    failures=state.failures,
                    last_error=str(state.last_error) if state.last_error else None,
                )
            )
        return out

    async def session_for(self, endpoint: Endpoint, *, expect: SpiffeId | None) -> H2Session:
        """A session that can open a stream now, or a ProxyError saying why not."""
        key = (endpoint.host, endpoint.port)
        state = self._peers.setdefault(key, _PeerState())
        session = self._pick(state)
        if session is not None:
            return self._checked(session, endpoint, expect)
        self.tls.maybe_reload()
        if not self.tls.loaded:
            # Our own missing certificate says nothing about the peer: no backoff for it,
            # so the first request once the certificate is here dials at once.
            raise errors.no_identity()
        self._raise_if_backing_off(state)
        # Bounded wait for a connection: behind a dial into a partition, waiters would
        # otherwise queue up, each dialling in turn, until their callers give up.
        with trio.move_on_after(self.connect_timeout) as waited:
            await state.dialing.acquire()
        if waited.cancelled_caught:
            raise errors.peer_unreachable(
                endpoint.service,
                endpoint.address,
                f"no connection within {self.connect_timeout}s (another dial is pending)",
            )
        try:
            session = self._pick(state)  # someone else may have dialled meanwhile
            if session is not None:
                return self._checked(session, endpoint, expect)
            self._raise_if_backing_off(state)  # the dial we waited for failed
            try:
                session = await self._dial(endpoint)
            except errors.ProxyError as exc:
                state.failures += 1
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(state.failures, 16))
                state.retry_at = trio.current_time() + self.rng.uniform(0, delay)
                state.last_error = exc
                raise
            state.failures = 0
            state.last_error = None
            state.sessions.append(session)
        finally:
            state.dialing.release()
        return self._checked(session, endpoint, expect)

    @staticmethod
    def _raise_if_backing_off(state: _PeerState) -> None:
        if trio.current_time() < state.retry_at and state.last_error is not None:
            raise state.last_error

    @staticmethod
    def _pick(state: _PeerState) -> H2Session | None:
        state.sessions = [s for s in state.sessions if not s.is_closed]
        for session in state.sessions:
            if session.can_open_stream:
                return session
        return None

    @staticmethod
    def _checked(session: H2Session, endpoint: Endpoint, expect: SpiffeId | None) -> H2Session:
        if expect is not None and session.peer != expect:
            raise errors.tls_refused(
                endpoint.service,
                endpoint.address,
                f"peer identity is {session.peer}, expected {expect}",
            )
        return session

    async def _dial(self, endpoint: Endpoint) -> H2Session:
        try:
            context = self.tls.client_context()
        except TlsNotReady:
            raise errors.no_identity() from None
        self.dials += 1
        tcp: trio.SocketStream | None = None
        with trio.move_on_after(self.connect_timeout) as scope:
            try:
                tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            except OSError as exc:
                raise errors.peer_unreachable(
                    endpoint.service, endpoint.address, exc.strerror or str(exc)
                ) from None
            _tune_socket(tcp)
            tls_stream = trio.SSLStream(
                EagerStream(tcp), context, server_hostname=endpoint.service or None
            )
            try:
                await tls_stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                await trio.aclose_forcefully(tls_stream)
                reason = _tls_reason(exc)
                if self.on_tls_failure is not None:
                    self.on_tls_failure(reason)
                raise errors.tls_refused(endpoint.service, endpoint.address, reason) from None
            except trio.Cancelled:
                # A caller's shorter deadline (a TrafficPolicy connectTimeout) gave up on
                # this dial: the socket goes now, not whenever it is collected.
                await trio.aclose_forcefully(tcp)
                raise
        if scope.cancelled_caught:
            if tcp is not None:
                await trio.aclose_forcefully(tcp)
            raise errors.peer_unreachable(
                endpoint.service, endpoint.address, f"no answer within {self.connect_timeout}s"
            )
        if tls_stream.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(tls_stream)
            raise errors.tls_refused(endpoint.service, endpoint.address, "peer did not accept h2")
        try:
            identity = peer_identity(tls_stream, self.tls.trust_domain)
        except PeerIdentityError as exc:
            await trio.aclose_forcefully(tls_stream)
            if self.on_tls_failure is not None:
                self.on_tls_failure("peer-identity")
            raise errors.tls_refused(endpoint.service, endpoint.address, str(exc)) from None
        session = H2Session(
            tls_stream,
            client_side=True,
            ping_interval=self.ping_interval,
            probe_after=self.probe_after,
            probe_timeout=self.probe_timeout,
            peer=identity,
        )
        self.nursery.start_soon(session.run)
        # The server's SETTINGS carry its stream limit; using the connection before they
        # arrive would let a burst overrun it.
        with trio.move_on_after(self.connect_timeout):
            if await session.wait_settings():
                return session
        session.close("no SETTINGS from peer")
        raise errors.peer_unreachable(
            endpoint.service, endpoint.address, "peer sent no HTTP/2 SETTINGS"
        )

    def close_peer(self, host: str, port: int, reason: str) -> int:
        """Drop every connection to one peer now (membership says it is not alive).

        A partitioned peer's TCP connection does not fail by itself: requests on it would
        wait for the keepalive. Closing it makes them fail (and retry elsewhere) at once,
        and the next dial fails fast into backoff if the peer is still unreachable.
        """
        live = self._take_live_sessions(host, port)
        for session in live:
            session.close(reason)
        return len(live)

    def drain_peer(self, host: str, port: int) -> int:
        """Send no new request to one peer, but let the streams open on it finish.

        What a peer that announced it is leaving gets: it is draining too, so the
        requests it already accepted complete (Envoy's drain, Linkerd's wait for
        in-flight requests); a later request dials afresh or goes elsewhere.
        """
        live = self._take_live_sessions(host, port)
        for session in live:
            session.start_drain()
        return len(live)

    def _take_live_sessions(self, host: str, port: int) -> list[H2Session]:
        """The peer's open sessions, which new requests will no longer be given."""
        state = self._peers.get((host, port))
        if state is None:
            return []
        live = [session for session in state.sessions if not session.is_closed]
        state.sessions = []
        return live

    def drain(self) -> None:
        """Stop using every connection once its streams finish."""
        for state in self._peers.values():
            for session in state.sessions:
                session.start_drain()


def _tune_socket(tcp: trio.SocketStream) -> None:
    """Kernel-side dead-peer detection on a peer connection (best effort per platform)."""
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), TCP_KEEPIDLE_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), TCP_KEEPINTVL_S),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), TCP_KEEPCNT),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), TCP_USER_TIMEOUT_MS),
    ]
    for level, option, value in options:
        if option is None:
            continue
        try:
            tcp.setsockopt(level, option, value)
        except OSError:
            pass


def _tls_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause)
    return str(cause) or type(cause).__name__
