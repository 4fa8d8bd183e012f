"""TCP through the mesh: one HTTP/2 CONNECT stream (RFC 9113 §8.5) per app connection.

Outbound, a captured connection whose first bytes are not HTTP/1.1 or HTTP/2 (or that sends
nothing within :data:`DETECT_TIMEOUT`, as server-speaks-first protocols do) is carried as a
CONNECT stream on the pooled mTLS connection to an agent of the destination service, like
Istio's HBONE; that agent is picked by the destination's balancer, and an open that fails
before any byte reached an app is tried on another. Inbound, the agent authorizes the
caller's SPIFFE ID for the requested port (AuthorizationPolicy ``to.ports``), dials its
local app and relays. Flow control is the stream's own (DATA is acknowledged only as it is
written on); a FIN becomes END_STREAM and back, and a reset on either side becomes a reset
(TCP RST / RST_STREAM CONNECT_ERROR) on the other.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

import trio

from certs.spiffe import SpiffeId
from peermesh.core.endpoint import Endpoint
from peermesh.net.errors import ProxyError
from peermesh.net.http.h2errors import ConnectionLost, StreamRefused
from peermesh.net.http.h2session import ConnectionUnavailable, ErrorCode, H2Stream, StreamReset
from peermesh.net.http.headers import Headers, RequestHead
from peermesh.net.pool import PeerPool
from peermesh.observability.accesslog import AccessLog
from peermesh.observability.context import iso_utc
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.compiled import CompiledPolicy
from peermesh.policy.model import Retries
from peermesh.proxy.sniff import H2_PREFACE
from peermesh.proxy.traffic import DestinationState, TrafficTable
from peermesh.proxy.upgrade import (
    TUNNEL_HEADER,
    UPGRADE,
    HeadTooLarge,
    head_end,
    parse_head,
    read_stream_head,
    refusal,
)
from peermesh.traffic.retry import backoff

if TYPE_CHECKING:
    from peermesh.observability.hub import Observability

log = logging.getLogger(__name__)
access = logging.getLogger("peermesh.access.tcp")

#: How long a captured connection may stay silent before it is taken to be plain TCP.
DETECT_TIMEOUT = 1.0
CHUNK = 1 << 16
_METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")
_STREAM_ERRORS = (StreamReset, ConnectionUnavailable)
_TCP_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def classify(data: bytes) -> str | None:
    """ "h2c", "h1" or "tcp" once ``data`` decides it; None while it still could be HTTP."""
    if H2_PREFACE.startswith(data[: len(H2_PREFACE)]) and data:
        return "h2c" if data.startswith(H2_PREFACE) else None
    for method in _METHODS:
        word = method + b" "
        if data.startswith(word):
            return "h1"
        if word.startswith(data):
            return None
    return "tcp"


async def detect(transport: trio.abc.Stream, timeout: float = DETECT_TIMEOUT) -> tuple[str, bytes]:
    """("h2c"|"h1"|"tcp"|"closed", bytes read); silence until ``timeout`` means "tcp"."""
    data = b""
    with trio.move_on_after(timeout):
        while True:
            try:
                chunk = await transport.receive_some(CHUNK)
            except _TCP_ERRORS:
                return "closed", data
            if not chunk:
                return ("tcp" if data else "closed"), data
            data += chunk
            kind = classify(data)
            if kind is not None:
                return kind, data
    return "tcp", data


@dataclass
class TunnelRecord:
    """One tunnelled connection, for the access log and the metrics."""

    direction: str
    source: str
    destination: str
    port: int
    peer: str = ""  # the far agent's address (outbound) or the caller's SPIFFE ID (inbound)
    peer_identity: str = ""  # the SPIFFE ID the far side proved (or must prove)
    sent: int = 0  # towards the destination
    received: int = 0  # back towards the caller
    outcome: str = "ok"
    attempts: int = 0  # CONNECT streams opened to get this connection through (outbound)
    started: float = field(default_factory=trio.current_time)
    started_wall: float = field(default_factory=time.time)
    duration: float = 0.0

    def log_line(self) -> bytes:
        """The access-log line of this connection (JSON, as the HTTP lines are)."""
        return (
            json.dumps(
                {
                    "time": iso_utc(self.started_wall),
                    "protocol": "tcp",
                    "direction": self.direction,
                    "source": self.source,
                    "destination": self.destination,
                    "port": self.port,
                    "peer": self.peer or None,
                    "peer_identity": self.peer_identity or None,
                    "sent_bytes": self.sent,
                    "received_bytes": self.received,
                    "duration_ms": round(self.duration * 1000, 3),
                    "outcome": self.outcome,
                    "attempts": self.attempts or None,
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )

    def finish(self, metrics: AgentMetrics, access_log: AccessLog | None = None) -> None:
        seconds = self.duration = trio.current_time() - self.started
        if access_log is not None:
            access_log.offer(self)
        metrics.tcp_connections.labels(
            self.direction, self.source, self.destination, self.outcome
        ).inc()
        metrics.tcp_bytes.labels(self.direction, self.destination, "sent").inc(self.sent)
        metrics.tcp_bytes.labels(self.direction, self.destination, "received").inc(self.received)
        metrics.tcp_duration.labels(self.direction, self.destination).observe(seconds)
        access.info(
            "tcp %s %s -> %s:%d peer=%s outcome=%s attempts=%d sent=%d received=%d"
            " duration=%.3fs",
            self.direction, self.source, self.destination, self.port, self.peer or "-",
            self.outcome, self.attempts, self.sent, self.received, seconds,
        )  # fmt: skip


def access_log_of(observer: Observability | None) -> AccessLog | None:
    """The access log finished connections go to now, or None when not logging."""
    return observer.access_log if observer is not None and observer.logging_requests else None


def _hard_close(tcp: trio.SocketStream) -> None:
    """Close with a TCP RST (SO_LINGER 0): how a reset on the stream reaches the app."""
    try:
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


async def relay(
    tcp: trio.SocketStream, stream: H2Stream, record: TunnelRecord, initial: bytes
) -> None:
    """Both directions until both have ended; a reset on one side resets the other."""

    def fail(outcome: str) -> None:
        if record.outcome == "ok":
            record.outcome = outcome
        if outcome == "app-reset":
            stream.reset(ErrorCode.CONNECT_ERROR)
        _hard_close(tcp)
        nursery.cancel_scope.cancel()

    async def tcp_to_stream() -> None:
        try:
            if initial:
                await stream.send_data(initial)
                record.sent += len(initial)
            while True:
                try:
                    chunk = await tcp.receive_some(CHUNK)
                except _TCP_ERRORS:
                    fail("app-reset")
                    return
                if not chunk:
                    await stream.end()  # FIN -> END_STREAM: half-close
                    return
                await stream.send_data(chunk)
                record.sent += len(chunk)
        except _STREAM_ERRORS as exc:
            log.info("tcp tunnel to %s reset by the far side: %s", record.destination, exc)
            fail("peer-reset")

    async def stream_to_tcp() -> None:
        try:
            while True:
                chunk = await stream.receive_data()
                if not chunk:
                    try:
                        await tcp.send_eof()  # END_STREAM -> FIN
                    except _TCP_ERRORS:
                        pass
                    return
                try:
                    await tcp.send_all(chunk)
                except _TCP_ERRORS:
                    fail("app-reset")
                    return
                record.received += len(chunk)
        except _STREAM_ERRORS as exc:
            log.info("tcp tunnel to %s reset by the far side: %s", record.destination, exc)
            fail("peer-reset")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tcp_to_stream)
            nursery.start_soon(stream_to_tcp)
    finally:
        await trio.aclose_forcefully(tcp)


def connect_headers(service: str, port: int, *, upgrade: bool = False) -> Headers:
    headers = [(b":method", b"CONNECT"), (b":authority", f"{service}:{port}".encode())]
    if upgrade:
        headers.append((TUNNEL_HEADER, UPGRADE))
    return headers


#: Opens tried per connection when no Route gives the service retries: one dead or
#: refusing endpoint costs a retry, two in a row still leave a third try (Envoy's TCP proxy
#: ``max_connect_attempts`` is the same idea, with a default of one).
DEFAULT_CONNECT_ATTEMPTS = 3


class OpenFailure(enum.Enum):
    """Why one open of a CONNECT stream failed, and whether another endpoint may be tried."""

    UNREACHABLE = "peer-unreachable"  # no connection to the far agent (dial, TLS, backoff)
    CONNECT_TIMEOUT = "connect-timeout"  # no connection within TrafficPolicy connectTimeout
    GOAWAY = "goaway"  # the connection would take no new stream
    REFUSED = "refused-stream"  # REFUSED_STREAM: the far agent did not process it
    LOST = "connection-lost"  # the connection died before an answer
    RESET = "peer-reset"  # any other reset before an answer
    APP_REFUSED = "app-refused"  # 502/503: the far agent could not reach its app
    DENIED = "denied"  # 403: authorization said no; the same answer anywhere
    STATUS = "status"  # any other refusal

    def retryable(self, *, sent: bool) -> bool:
        """Only opens that certainly put no byte in front of an app are tried again."""
        if self is OpenFailure.LOST:
            return not sent  # the answer may have been on its way, with our bytes relayed
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        OpenFailure.UNREACHABLE,
        OpenFailure.CONNECT_TIMEOUT,
        OpenFailure.GOAWAY,
        OpenFailure.REFUSED,
        OpenFailure.APP_REFUSED,
    }
)


@dataclass(frozen=True)
class _Refused:
    failure: OpenFailure
    status: int = 502
    why: str = ""


class TunnelOut:
    """The outbound half: app TCP connection -> CONNECT stream to a destination agent.

    The endpoint is chosen per attempt by the destination's balancer, past ejected
    outliers, and each open's result feeds both, as for HTTP requests. An open that
    fails before any byte reached an app is tried on another endpoint, up to the
    attempts allowed; once the far agent answered 200, the connection is never retried.
    """

    def __init__(
        self,
        *,
        local_service: str,
        pool: PeerPool,
        metrics: AgentMetrics,
        expected_identity: Callable[[str], SpiffeId],
        traffic: TrafficTable | None = None,
        policy: Callable[[], CompiledPolicy | None] = lambda: None,
        rng: random.Random | None = None,
        access_log: Callable[[], AccessLog | None] = lambda: None,
    ) -> None:
        self.local_service = local_service
        #: Where finished connections are logged, asked at the end (logging can be toggled).
        self.access_log = access_log
        self.pool = pool
        self.metrics = metrics
        self.expected_identity = expected_identity
        self.rng = rng or random.Random()
        #: Balancer, outlier and retry-budget state per destination, shared with HTTP.
        self.traffic = traffic if traffic is not None else TrafficTable(rng=self.rng)
        self.policy = policy

    async def run(
        self,
        tcp: trio.SocketStream,
        initial: bytes,
        service: str,
        port: int,
        endpoints: Sequence[Endpoint],
        *,
        upgrade: bool = False,
        retries: Retries | None = None,
    ) -> None:
        """Carry ``tcp`` (``initial`` already read from it) to ``service`` on one of
        ``endpoints``; ``retries`` (a Route's, for an upgrade) sets the attempts."""
        record = TunnelRecord("outbound", self.local_service, service, port)
        try:
            if not endpoints:
                record.outcome = "no-endpoints"
                log.info("tcp to %s:%d: no endpoint of the service; closing", service, port)
                await _refuse(tcp, upgrade, 503, "Service Unavailable")
                return
            attempts = 1 + retries.attempts if retries is not None else DEFAULT_CONNECT_ATTEMPTS
            stream = await self._connect(record, endpoints, initial, attempts, upgrade=upgrade)
            if isinstance(stream, _Refused):
                record.outcome = stream.failure.value
                if stream.failure is OpenFailure.STATUS:
                    record.outcome = f"status-{stream.status}"
                log.info(
                    "tcp to %s:%d: no tunnel after %d attempt(s): %s",
                    service, port, record.attempts, stream.why,
                )  # fmt: skip
                await _refuse(tcp, upgrade, stream.status, _phrase(stream.status))
                return
            await relay(tcp, stream, record, b"")
        finally:
            record.finish(self.metrics, self.access_log())

    async def _connect(
        self,
        record: TunnelRecord,
        endpoints: Sequence[Endpoint],
        initial: bytes,
        attempts: int,
        *,
        upgrade: bool,
    ) -> H2Stream | _Refused:
        """Open attempts until one is answered 200 (its stream) or none is left."""
        service = record.destination
        state = self.traffic.state_for(service, self.policy())
        state.budget.record_request(trio.current_time())
        tried: list[str] = []
        refused = _Refused(OpenFailure.UNREACHABLE, 503, "no attempt made")
        connect_timeout = self._connect_timeout(state)
        try:
            for attempt in range(1, attempts + 1):
                now = trio.current_time()
                eligible = state.outlier.filter(endpoints, now) if state.outlier else endpoints
                endpoint = state.balancer.pick(eligible, now=now, exclude=tried)
                if endpoint is None:
                    break
                tried.append(endpoint.address)
                record.attempts = attempt
                record.peer = endpoint.address
                record.peer_identity = str(self.expected_identity(endpoint.service))
                state.balancer.on_start(endpoint.address, now)
                answer = await self._open_once(
                    endpoint, record, initial, upgrade=upgrade, connect_timeout=connect_timeout
                )
                if not isinstance(answer, _Refused):
                    self._feed(state, endpoint.address, now, ok=True)
                    return answer
                # A denial is the far agent working as told: no mark against its health.
                self._feed(state, endpoint.address, now, ok=answer.failure is OpenFailure.DENIED)
                refused = answer
                self.metrics.sidecar_errors.labels("outbound", f"tcp-{answer.failure.value}").inc()
                log.info(
                    "tcp to %s:%d: attempt %d on %s failed: %s",
                    service, record.port, attempt, endpoint.address, answer.why,
                )  # fmt: skip
                if attempt == attempts or not answer.failure.retryable(sent=bool(initial)):
                    break
                if not state.budget.try_withdraw(trio.current_time()):
                    self.metrics.sidecar_errors.labels("outbound", "retry-budget-exhausted").inc()
                    break
                await trio.sleep(backoff(attempt, self.rng))
            return refused
        finally:
            # Every open after the first is a retry, whether one got through or not.
            if record.attempts > 1:
                self.metrics.retries.labels(service).inc(record.attempts - 1)

    def _connect_timeout(self, state: DestinationState) -> float | None:
        """The destination's TrafficPolicy ``connectTimeout``, never beyond the pool's own
        (None: the pool's own bounds the dial by itself)."""
        spec = state.policy.spec if state.policy is not None else None
        pool = spec.connection_pool if spec is not None else None
        if pool is None or not pool.connect_timeout:
            return None
        return min(pool.connect_timeout, self.pool.connect_timeout)

    async def _open_once(
        self,
        endpoint: Endpoint,
        record: TunnelRecord,
        initial: bytes,
        *,
        upgrade: bool,
        connect_timeout: float | None = None,
    ) -> H2Stream | _Refused:
        """One CONNECT on ``endpoint``: the stream once answered 200, else why not.

        ``connect_timeout`` bounds getting a connection to the far agent (dial, TLS,
        SETTINGS), so one that accepts TCP and then says nothing costs only that long
        before the next endpoint is tried."""
        headers = connect_headers(record.destination, record.port, upgrade=upgrade)
        try:
            with trio.move_on_after(
                connect_timeout if connect_timeout is not None else float("inf")
            ) as waited:
                session = await self.pool.session_for(
                    endpoint, expect=self.expected_identity(endpoint.service)
                )
            if waited.cancelled_caught:
                return _Refused(
                    OpenFailure.CONNECT_TIMEOUT,
                    503,
                    f"no connection to {endpoint.address} within {connect_timeout}s"
                    " (TrafficPolicy connectTimeout)",
                )
            stream = await session.open_stream(headers)
        except ConnectionUnavailable as exc:
            return _Refused(OpenFailure.GOAWAY, 503, str(exc) or "connection takes no stream")
        except ProxyError as exc:  # the pool's dial, TLS and backoff errors say why
            return _Refused(OpenFailure.UNREACHABLE, 503, str(exc))
        try:
            # Sent before the answer, so the app's first bytes lose no round trip (and an
            # upgrade's far side authorizes on this head); the far agent writes them to
            # its app only after it answered 200.
            if initial:
                await stream.send_data(initial)
            answer = await stream.receive_headers()
        except StreamRefused as exc:
            return _Refused(OpenFailure.REFUSED, 503, str(exc))
        except ConnectionLost as exc:
            return _Refused(OpenFailure.LOST, 503, str(exc))
        except _STREAM_ERRORS as exc:
            return _Refused(OpenFailure.RESET, 502, str(exc))
        status = dict(answer).get(b":status", b"")
        if status == b"200":
            record.sent += len(initial)
            return stream
        stream.reset(ErrorCode.CANCEL)
        text = status.decode("ascii", "replace")
        code = int(text) if text.isdigit() and 400 <= int(text) < 600 else 502
        if code == 403:
            return _Refused(OpenFailure.DENIED, 403, "denied by the far agent's policy")
        if code in (502, 503):
            return _Refused(OpenFailure.APP_REFUSED, code, f"the far agent answered {text}")
        return _Refused(OpenFailure.STATUS, code, f"the far agent answered {text}")

    def _feed(self, state: DestinationState, address: str, started: float, *, ok: bool) -> None:
        """One open's result to the balancer and the outlier detector, as an HTTP try's."""
        now = trio.current_time()
        state.balancer.on_finish(address, now, now - started, ok)
        if state.outlier is not None and state.outlier.record(
            address, now, ok=ok, gateway_error=not ok
        ):
            self.metrics.ejections.labels(state.host).inc()


def _phrase(status: int) -> str:
    """The reason phrase of ``status``; a code with no registered phrase gets a generic one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Refused"


async def _refuse(tcp: trio.SocketStream, upgrade: bool, status: int, reason: str) -> None:
    """An upgrade gets an HTTP answer it can show; plain TCP gets a reset, as from a host."""
    if upgrade:
        try:
            await tcp.send_all(refusal(status, reason))
        except _TCP_ERRORS:
            pass
    else:
        _hard_close(tcp)
    await trio.aclose_forcefully(tcp)


def requested_port(stream: H2Stream) -> int | None:
    """The port a CONNECT stream's :authority asks for, or None when it is not valid."""
    authority = dict(stream.headers or []).get(b":authority", b"")
    _host, sep, port_text = authority.rpartition(b":")
    if not sep or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    return port if 0 < port < 65536 else None


async def tunnel_in(
    stream: H2Stream,
    *,
    service: str,
    peer: SpiffeId,
    app: tuple[str, int],
    authorize: Callable[[int], bool],
    authorize_http: Callable[[RequestHead], bool],
    metrics: AgentMetrics,
    connect_timeout: float = 5.0,
    access_log: AccessLog | None = None,
) -> None:
    """The inbound half: authorize the CONNECT, dial the local app, relay."""
    port = requested_port(stream)
    record = TunnelRecord(
        "inbound", str(peer), service, port or 0, peer=str(peer), peer_identity=str(peer)
    )
    try:
        if port is None:
            record.outcome = "bad-request"
            metrics.sidecar_errors.labels("inbound", "bad-connect").inc()
            await stream.send_headers([(b":status", b"400")], end_stream=True)
            return
        head = b""
        if (TUNNEL_HEADER, UPGRADE) in (stream.headers or []):
            try:
                head = await read_stream_head(stream)
            except HeadTooLarge:
                head = b""
            request = parse_head(head) if head_end(head) > 0 else None
            if request is None:
                record.outcome = "bad-request"
                metrics.sidecar_errors.labels("inbound", "bad-upgrade").inc()
                await stream.send_headers([(b":status", b"400")], end_stream=True)
                return
            allowed = authorize_http(request)
        else:
            allowed = authorize(port)
        if not allowed:
            record.outcome = "denied"
            await stream.send_headers([(b":status", b"403")], end_stream=True)
            return
        tcp: trio.SocketStream | None = None
        with trio.move_on_after(connect_timeout):
            try:
                tcp = await trio.open_tcp_stream(*app)
            except OSError as exc:
                log.info("tcp tunnel: local app %s:%d refused: %s", app[0], app[1], exc)
        if tcp is None:
            record.outcome = "app-unreachable"
            await stream.send_headers([(b":status", b"502")], end_stream=True)
            return
        await stream.send_headers([(b":status", b"200")])
        if head:
            try:
                await tcp.send_all(head)
            except _TCP_ERRORS:
                record.outcome = "app-reset"
                stream.reset(ErrorCode.CONNECT_ERROR)
                await trio.aclose_forcefully(tcp)
                return
            record.received += len(head)
        await relay(tcp, stream, record, b"")
    except _STREAM_ERRORS:
        record.outcome = "peer-reset"
    finally:
        record.finish(metrics, access_log)
