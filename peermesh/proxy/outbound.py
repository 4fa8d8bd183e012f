"""Outbound listener: the app's requests enter the mesh here (default 127.0.0.1 and [::1]:15001).

Apps speak HTTP/1.1 (also as an ``HTTP_PROXY``) or HTTP/2 with prior knowledge; the
connection preface tells them apart. The destination service comes from the
authority; the request leaves on a pooled mTLS HTTP/2 connection to a peer agent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from certs.spiffe import SpiffeId
from peermesh.capture.vips import VipTable
from peermesh.core.endpoint import Endpoint, EndpointSource
from peermesh.net import errors
from peermesh.net.eager import EagerStream
from peermesh.net.http.exchange import (
    BodySource,
    H2ResponseWriter,
    H2StreamBody,
    ResponseWriter,
)
from peermesh.net.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.net.http.h2session import (
    ErrorCode,
    H2Stream,
    PeerUnresponsive,
    StreamReset,
)
from peermesh.net.http.headers import (
    HeaderError,
    Headers,
    HeadersTooLarge,
    RequestHead,
    fit_request_head,
    h2_request_to_head,
)
from peermesh.net.origdst import original_destination
from peermesh.net.pool import PeerPool
from peermesh.observability.context import CountingBody, CountingWriter, note_attempt, note_route
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.compiled import CompiledPolicy, RouteDecision
from peermesh.proxy.attempt import BufferedBody, UpstreamAttempt, buffer_body
from peermesh.proxy.captured import (
    serve_upgrade,
    service_of_authority,
    service_of_destination,
)
from peermesh.proxy.guard import ListenerGuard
from peermesh.proxy.outbound_request import Mirror, end_grpc_deadline, open_upstream
from peermesh.proxy.relay import UPSTREAM_ERRORS, DownstreamGone
from peermesh.proxy.sniff import peer_ip, sniff_preface
from peermesh.proxy.tracker import ConnectionTracker
from peermesh.proxy.traffic import (
    DEFAULT_RETRIES,
    DestinationState,
    TrafficTable,
    grpc_status_of,
    matching,
    response_headers,
    rewrite_request,
)
from peermesh.proxy.tunnel import TunnelOut, access_log_of, detect
from peermesh.proxy.upgrade import (
    head_end,
    parse_head,
    read_first_head,
    wants_upgrade,
)
from peermesh.traffic.deadlines import request_deadline
from peermesh.traffic.faults import decide as decide_fault
from peermesh.traffic.retry import Outcome, backoff, is_replayable, retryable

if TYPE_CHECKING:
    from peermesh.observability.hub import Observability

log = logging.getLogger(__name__)

_NO_SCOPE = contextlib.nullcontext()


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
        policy: Callable[[], CompiledPolicy] | None = None,
        background: trio.Nursery | None = None,
        rng: random.Random | None = None,
        guard: ListenerGuard | None = None,
    ) -> None:
        self.policy = policy
        #: Timeouts and caps of the listener, and the counter their breaches move.
        self.guard = guard or ListenerGuard("outbound", metrics)
        self.background = background
        self.rng = rng or random.Random()
        self.traffic = TrafficTable(rng=self.rng)
        self.local_service = local_service
        self.trust_domain = trust_domain
        self.endpoints = endpoints
        self.pool = pool
        self.metrics = metrics
        self.tracker = tracker
        self.observer: Observability | None = None  # set by the agent
        self._identities: dict[str, SpiffeId] = {}
        #: Mesh VIPs (set by the agent when capture or mesh DNS is in use).
        self.vips: Callable[[], VipTable] | None = None
        #: Captured destination ports tunnelled as TCP without sniffing (server-first protocols).
        self.tcp_ports: frozenset[int] = frozenset()
        self.mirror = Mirror(
            pool=pool,
            endpoints=endpoints,
            trust_domain=trust_domain,
            metrics=metrics,
            rng=self.rng,
            background=background,
        )
        self.tunnel = TunnelOut(
            local_service=local_service,
            pool=pool,
            metrics=metrics,
            expected_identity=self._expected_identity,
            traffic=self.traffic,
            policy=lambda: self.policy() if self.policy is not None else None,
            rng=self.rng,
            access_log=lambda: access_log_of(self.observer),
        )

    def captured_service(self, destination: tuple[str, int] | None) -> str | None:
        """The service a captured connection's original destination stands for."""
        vips = self.vips() if self.vips is not None else None
        return service_of_destination(destination, vips, self.endpoints)

    async def serve_connection(self, transport: trio.SocketStream) -> None:
        """One app connection: sniff its protocol and serve it until it ends."""
        accepted = trio.current_time()
        client = peer_ip(transport)
        destination = original_destination(transport.socket)
        captured = self.captured_service(destination)
        if captured is not None and destination is not None:
            detected = await self._maybe_tunnel(transport, captured, destination[1])
            if detected is None:
                return
            kind, data = detected
        else:
            # The first request's head clock starts at accept, so its first bytes are in it.
            kind, data = await sniff_preface(transport, self._first_bytes_timeout)
        if kind == "timeout":
            self.guard.breach("header-timeout", client)
            await trio.aclose_forcefully(transport)
            return
        if kind == "truncated":
            self.metrics.reject("outbound", "bad-preface")
            await trio.aclose_forcefully(transport)
            return
        if kind == "closed":
            await trio.aclose_forcefully(transport)
            return
        if kind == "h1":
            data = await read_first_head(transport, data)
            end = head_end(data)
            head = parse_head(data[:end]) if end > 0 else None
            if head is not None and wants_upgrade(head):
                compiled = self.policy() if self.policy is not None else None
                await serve_upgrade(
                    transport, data, head, captured, destination,
                    policy=compiled, endpoints=self.endpoints, rng=self.rng,
                    tunnel=self.tunnel, metrics=self.metrics,
                )  # fmt: skip
                return
        self.metrics.open_connections.labels("outbound").inc()
        try:
            if kind == "h2c":
                await self._serve_h2c(transport, data, client, captured)
            else:
                await self._serve_h1(transport, data, client, captured, accepted)
        finally:
            self.metrics.open_connections.labels("outbound").dec()

    @property
    def _first_bytes_timeout(self) -> float:
        return self.guard.timeouts.header or math.inf

    async def _maybe_tunnel(
        self, transport: trio.SocketStream, service: str, port: int
    ) -> tuple[str, bytes] | None:
        """Tunnel a captured connection that is not HTTP (None), or say what it is."""
        if port in self.tcp_ports:
            kind, data = "tcp", b""
        else:
            kind, data = await detect(transport)
        if kind != "tcp":
            return kind, data
        endpoints = list(self.endpoints.endpoints(service) or [])
        self.metrics.open_connections.labels("outbound").inc()
        try:
            await self.tunnel.run(transport, data, service, port, endpoints)
        finally:
            self.metrics.open_connections.labels("outbound").dec()
        return None

    async def _serve_h2c(
        self, transport: trio.SocketStream, data: bytes, client: str, captured: str | None
    ) -> None:
        async def on_stream(stream: H2Stream) -> None:
            await self._handle_h2_stream(stream, client, captured)

        session = self.guard.h2_session(
            EagerStream(transport), on_stream, peer=client, initial_data=data
        )
        if self.tracker.draining:
            session.start_drain()
        self.tracker.h2.add(session)
        try:
            await session.run()
        finally:
            self.tracker.h2.discard(session)

    async def _serve_h1(
        self,
        transport: trio.SocketStream,
        data: bytes,
        client: str,
        captured: str | None,
        started: float,
    ) -> None:
        async def on_request(
            head: RequestHead, body: H1RequestBody, writer: H1ResponseWriter
        ) -> None:
            await self.handle(head, body, writer, has_body=body.has_body, captured=captured)

        conn = H1ServerConnection(
            EagerStream(transport),
            on_request,
            initial_data=data,
            client_address=client,
            on_bad_request=lambda why: self.metrics.reject("outbound", "h1-bad-request"),
            timeouts=self.guard.timeouts,
            started=started,
            stream_budget=self.guard.streams,
            on_breach=self.guard.breach_from(client),
        )
        conn.draining = self.tracker.draining
        with trio.CancelScope() as scope:
            self.tracker.h1[conn] = scope
            try:
                await conn.run()
            finally:
                self.tracker.h1.pop(conn, None)

    async def _handle_h2_stream(self, stream: H2Stream, client: str, captured: str | None) -> None:
        writer = H2ResponseWriter(stream)
        try:
            head = h2_request_to_head(stream.headers or [], client_address=client)
        except HeaderError as exc:
            await errors.send_error(writer, errors.bad_request(str(exc)))
            return
        await self.handle(
            head, H2StreamBody(stream), writer, has_body=not stream.headers_only, captured=captured
        )

    async def handle(
        self,
        head: RequestHead,
        body: BodySource,
        writer: ResponseWriter,
        *,
        has_body: bool,
        captured: str | None = None,
    ) -> None:
        """Route one request by policy, then try endpoints until one answers well."""
        started = trio.current_time()
        service = "unknown"
        status = 0
        observer = self.observer
        record = None
        if observer is not None:
            record, head = observer.begin("outbound", head, source=self.local_service)
            body = CountingBody(body, record)
            writer = CountingWriter(writer, record)
        try:
            try:
                service = service_of_authority(head.authority, captured)
                head = fit_request_head(head)
            except HeadersTooLarge as exc:
                raise errors.ProxyError(431, "headers-too-large", str(exc)) from None
            except HeaderError as exc:
                raise errors.bad_request(str(exc)) from None
            status = await self._route(service, head, body, writer, has_body=has_body)
        except errors.ProxyError as exc:
            status = exc.status
            self.metrics.sidecar_errors.labels("outbound", exc.code).inc()
            try:
                await errors.send_error(writer, exc, grpc=errors.is_grpc(head))
            except (StreamReset, DownstreamGone, Exception) as send_exc:  # client gone too
                log.debug("could not deliver %s: %s", exc.code, send_exc)
        except DownstreamGone:
            status = status or 499
        finally:
            elapsed = trio.current_time() - started
            self.metrics.record_request(
                "outbound",
                self.local_service,
                service,
                status or 499,
                elapsed,
                subset=record.subset if record is not None else "",
                grpc_status=record.grpc_status if record is not None else "",
            )
            if observer is not None and record is not None:
                record.destination = service
                observer.end(record, status or 499, elapsed)

    async def _route(
        self,
        service: str,
        head: RequestHead,
        body: BodySource,
        writer: ResponseWriter,
        *,
        has_body: bool,
    ) -> int:
        compiled = self.policy() if self.policy is not None else None
        decision: RouteDecision | None = None
        if compiled is not None and compiled.routes.get(service):
            # Decoded for matching only when a Route for this service exists.
            headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in head.headers}
            method = head.method.decode("ascii", "replace")
            decision = compiled.match_route(service, method, head.path.decode("latin-1"), headers)
        target: str = service
        labels: tuple[tuple[str, str], ...] = ()
        if decision is not None:
            dest = decision.pick(self.rng.random())
            if dest.labels is None:
                raise errors.ProxyError(
                    503,
                    "no-subset",
                    f"route {decision.route} sends to subset {dest.subset!r} of {dest.host},"
                    " which no TrafficPolicy defines",
                )
            target, labels = dest.host, tuple(dest.labels)
            note_route(decision.route, dest.subset)
        all_endpoints = self.endpoints.endpoints(target)
        if all_endpoints is None:
            raise errors.no_route(target)
        endpoints = matching(all_endpoints, labels)
        if not endpoints:
            if all_endpoints:
                raise errors.ProxyError(
                    503,
                    "no-endpoints",
                    f"no endpoint of {target!r} has labels "
                    + ",".join(f"{k}={v}" for k, v in labels),
                )
            raise errors.no_endpoints(target)
        state = self.traffic.state_for(target, compiled)
        fault = decide_fault(decision.fault if decision else None, self.rng)
        if fault.delay:
            await trio.sleep(fault.delay)
        if fault.abort_status:
            raise errors.ProxyError(
                fault.abort_status, "fault-injected", "fault injected by route policy"
            )
        if not state.limits.try_start():
            state.overflows += 1
            raise errors.ProxyError(
                503,
                "overflow",
                f"{target}: connection pool limits reached (circuit breaker open)",
            )
        try:
            return await self._attempts(
                target, endpoints, state, decision, head, body, writer, has_body=has_body
            )
        finally:
            state.limits.finish()

    async def _attempts(
        self,
        target: str,
        endpoints: Sequence[Endpoint],
        state: DestinationState,
        decision: RouteDecision | None,
        head: RequestHead,
        body: BodySource,
        writer: ResponseWriter,
        *,
        has_body: bool,
    ) -> int:
        now = trio.current_time()
        head = rewrite_request(head, decision)
        deadline = request_deadline(
            now, route_timeout=decision.timeout if decision else None, headers=head.headers
        )
        retries = decision.retries if decision is not None and decision.retries else DEFAULT_RETRIES
        retry_on = retries.retry_on or DEFAULT_RETRIES.retry_on
        state.budget.record_request(now)
        state.requests += 1
        source: BufferedBody | BodySource | None = None
        if has_body:
            source = await buffer_body(body)
        replayable = is_replayable(head.method, body_buffered=isinstance(source, BufferedBody))
        if decision is not None and decision.mirror is not None:
            self.mirror.maybe_send(decision, head, source, has_body=has_body)
        hash_header = state.policy.load_balancer.consistent_hash_header if state.policy else None
        hash_key = head.header(hash_header.lower().encode()) if hash_header else None
        tried: list[str] = []
        max_tries = 1 + retries.attempts
        last_error: errors.ProxyError | None = None
        for attempt in range(1, max_tries + 1):
            eligible = state.outlier.filter(endpoints, now) if state.outlier else list(endpoints)
            endpoint = state.balancer.pick(
                eligible, now=trio.current_time(), exclude=tried, hash_key=hash_key
            )
            if endpoint is None:
                raise errors.no_endpoints(target)
            tried.append(endpoint.address)
            note_attempt(endpoint.address)
            expect = self._expected_identity(endpoint.service)
            reader: BodySource | None
            reader = source.reader() if isinstance(source, BufferedBody) else source
            # Never replay a body we no longer hold, whatever the method.
            body_held = not has_body or isinstance(source, BufferedBody)
            can_retry = attempt < max_tries and replayable and body_held
            try_started = trio.current_time()
            state.balancer.on_start(endpoint.address, try_started)
            outcome: Outcome
            try:
                call = await open_upstream(
                    self.pool, endpoint, head, expect=expect, has_body=has_body
                )
            except errors.ProxyError as exc:
                self._record(state, endpoint, try_started, ok=False, gateway=True)
                outcome = Outcome(connect_failure=True)
                last_error = exc
                if can_retry and self._may_retry(state, outcome, retry_on):
                    await trio.sleep(backoff(attempt, self.rng))
                    continue
                raise
            per_try = retries.per_try_timeout
            try_deadline = min(
                deadline if deadline is not None else math.inf,
                try_started + per_try if per_try else math.inf,
            )
            async with UpstreamAttempt(call, reader) as upstream:
                head_status: tuple[int, Headers] | None = None
                failure = ""
                refused = False
                unresponsive = False
                # No cancel scope at all without a deadline (the usual case): entering
                # and leaving one costs more than the rest of this block.
                with trio.move_on_at(try_deadline) if try_deadline < math.inf else _NO_SCOPE:
                    try:
                        head_status = await upstream.response()
                    except UPSTREAM_ERRORS as exc:
                        failure = str(exc) or type(exc).__name__
                        refused = getattr(exc, "error_code", None) == ErrorCode.REFUSED_STREAM
                        unresponsive = isinstance(exc, PeerUnresponsive)
                if head_status is None:
                    self._record(state, endpoint, try_started, ok=False, gateway=True)
                    if upstream.body_error is not None:
                        raise DownstreamGone(str(upstream.body_error))
                    timed_out = not failure
                    outcome = Outcome(
                        reset=not timed_out and not refused,
                        refused_stream=refused,
                        timed_out=timed_out,
                    )
                    if timed_out:
                        self.metrics.sidecar_errors.labels("outbound", "timeout").inc()
                        last_error = errors.ProxyError(
                            504, "timeout", f"{target} did not answer within the timeout"
                        )
                        overall = deadline is not None and trio.current_time() >= deadline
                        if overall:
                            raise last_error
                    elif unresponsive:
                        # The peer went silent (a partition): the mesh's 503, not a reset.
                        last_error = errors.peer_unreachable(target, endpoint.address, failure)
                    else:
                        last_error = errors.upstream_reset(failure)
                    if can_retry and self._may_retry(state, outcome, retry_on):
                        await trio.sleep(backoff(attempt, self.rng))
                        continue
                    raise last_error
                status, resp_headers = head_status
                self._record(
                    state, endpoint, try_started, ok=status < 500, gateway=status in (502, 503, 504)
                )
                outcome = Outcome(status=status, grpc_status=grpc_status_of(resp_headers))
                if can_retry and status >= 400 and self._may_retry(state, outcome, retry_on):
                    await trio.sleep(backoff(attempt, self.rng))
                    continue
                stream = getattr(call, "stream", None)
                ended = bool(stream is not None and stream.headers_only)
                out_headers = response_headers(resp_headers, decision, attempt)
                if deadline is None:
                    result = await upstream.commit(writer, status, out_headers, ended=ended)
                else:
                    with trio.move_on_at(deadline) as scope:
                        result = await upstream.commit(writer, status, out_headers, ended=ended)
                    if scope.cancelled_caught:
                        self.metrics.sidecar_errors.labels("outbound", "timeout").inc()
                        if errors.is_grpc(head):
                            # Mid-response: end the call with DEADLINE_EXCEEDED trailers, as
                            # a gRPC server would, rather than a reset read as INTERNAL.
                            await end_grpc_deadline(writer, target)
                        else:
                            writer.abort()
                        return 504
                if result.error_code:
                    self.metrics.sidecar_errors.labels("outbound", result.error_code).inc()
                if attempt > 1:
                    self.metrics.retries.labels(target).inc(attempt - 1)
                return status
        assert last_error is not None
        raise last_error

    def _expected_identity(self, service: str) -> SpiffeId:
        """The SPIFFE ID a peer serving ``service`` must present (built once per service)."""
        expect = self._identities.get(service)
        if expect is None:
            expect = SpiffeId.for_service(self.trust_domain, service)
            if len(self._identities) > 4096:
                self._identities.clear()
            self._identities[service] = expect
        return expect

    def _record(
        self,
        state: DestinationState,
        endpoint: Endpoint,
        started: float,
        *,
        ok: bool,
        gateway: bool,
    ) -> None:
        """Feed one try's outcome to the balancer and the outlier detector."""
        now = trio.current_time()
        state.balancer.on_finish(endpoint.address, now, now - started, ok)
        if state.outlier is not None and state.outlier.record(
            endpoint.address, now, ok=ok, gateway_error=gateway
        ):
            self.metrics.ejections.labels(state.host).inc()

    def _may_retry(
        self, state: DestinationState, outcome: Outcome, retry_on: Sequence[str]
    ) -> bool:
        if not (outcome.connect_failure or retryable(outcome, retry_on)):
            return False
        if state.budget.try_withdraw(trio.current_time()):
            return True
        self.metrics.sidecar_errors.labels("outbound", "retry-budget-exhausted").inc()
        return False
