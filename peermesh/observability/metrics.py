"""Prometheus metrics for one agent (its own registry, so several agents share a process).

Labels stay bounded: services, directions, codes and reasons, never paths or ids.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as TallyCounter
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

#: Hostile queries the mesh view refuses, as (route, reason): present at 0 from the start.
ADMIN_REFUSALS = (
    ("/v1/mesh/graph", "method-not-allowed"),
    ("/v1/mesh/graph", "invalid-graph-query"),
    ("tap/subscribe", "tap-forbidden"),
)

#: Where a failure is isolated: admin routes, control methods, policy exchanges, gossip input.
INTERNAL_ERROR_COMPONENTS = ("admin", "control", "replicator", "gossip")

DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class _Duration:
    """One duration histogram child's running sum and per-bucket counts (the last: +Inf)."""

    __slots__ = ("buckets", "child", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.total = 0.0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)


class _Requests:
    """One request counter child's count, and the duration histogram its requests feed."""

    __slots__ = ("child", "count", "duration")

    def __init__(self, child: Any, duration: _Duration) -> None:
        self.child = child
        self.count = 0
        self.duration = duration


class _Bytes:
    """The request and response byte counter children of one (direction, source, destination)."""

    __slots__ = ("request", "request_child", "response", "response_child")

    def __init__(self, request_child: Any, response_child: Any) -> None:
        self.request_child = request_child
        self.response_child = response_child
        self.request = 0
        self.response = 0


class _FoldFirst:
    """A collector that yields nothing and brings the per-request tallies up to date.

    Registered before every metric, so any collection of the registry (the exposition,
    ``get_sample_value``) sees every request recorded until then.
    """

    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        self._metrics.fold()
        return []


class AgentMetrics:
    """Every metric the data plane records, plus a small tally for status pages.

    The per-request series (request counter, duration histogram, byte counters) are kept
    in plain ints and floats, and written into their prometheus_client children when the
    registry is collected: a child's ``inc`` and ``observe`` check their arguments and take
    a lock on every call. The values written are the ones the children would hold had every
    request called them (counts are exact; the duration sum adds the same floats in the same
    order), so a scrape shows every request recorded before it.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_FoldFirst(self))
        self.requests = Counter(
            "peermesh_requests",
            "Requests handled by this sidecar, by direction and outcome.",
            [
                "direction",
                "source_service",
                "destination_service",
                "destination_subset",
                "response_code",
                "grpc_status",
            ],
            registry=self.registry,
        )
        self.request_bytes = Counter(
            "peermesh_request_bytes",
            "Request body bytes relayed, by direction and services.",
            ["direction", "source_service", "destination_service"],
            registry=self.registry,
        )
        self.response_bytes = Counter(
            "peermesh_response_bytes",
            "Response body bytes relayed, by direction and services.",
            ["direction", "source_service", "destination_service"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "peermesh_request_duration_seconds",
            "Time from request head to the end of the response, as seen by this sidecar.",
            ["direction", "destination_service", "destination_subset"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.sidecar_errors = Counter(
            "peermesh_sidecar_errors",
            "Requests the sidecar answered itself (x-peermesh-error), by cause.",
            ["direction", "error"],
            registry=self.registry,
        )
        self.rejected_connections = Counter(
            "peermesh_connections_rejected",
            "Connections (and streams) closed or refused for bad input (garbage, bad preface,"
            " protocol errors), a timeout (header, body, keep-alive, idle, preface) or a cap.",
            ["listener", "reason"],
            registry=self.registry,
        )
        self.admin_refusals = Counter(
            "peermesh_admin_refusals",
            "Admin queries and control RPCs refused before they touched any state, by route"
            " and reason.",
            ["route", "reason"],
            registry=self.registry,
        )
        for route, reason in ADMIN_REFUSALS:
            self.admin_refusals.labels(route, reason)
        self.dns_queries = Counter(
            "peermesh_dns_queries",
            "Mesh DNS datagrams by outcome (answered, forwarded, relayed, malformed, timeout).",
            ["outcome"],
            registry=self.registry,
        )
        self.dns_seed_refusals = Counter(
            "peermesh_dns_seed_refusals",
            "DNS seed lookups refused or failed, by reason (timeout, too_large, malformed...).",
            ["reason"],
            registry=self.registry,
        )
        self.tcp_connections = Counter(
            "peermesh_tcp_connections",
            "TCP connections tunnelled through the mesh, by direction, edge and outcome.",
            ["direction", "source_service", "destination_service", "outcome"],
            registry=self.registry,
        )
        self.tcp_bytes = Counter(
            "peermesh_tcp_bytes",
            "Bytes carried by TCP tunnels (sent: towards the destination).",
            ["direction", "destination_service", "way"],
            registry=self.registry,
        )
        self.tcp_duration = Histogram(
            "peermesh_tcp_connection_duration_seconds",
            "How long tunnelled TCP connections lasted.",
            ["direction", "destination_service"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.tls_failures = Counter(
            "peermesh_tls_handshake_failures",
            "TLS handshakes that failed, by side and reason.",
            ["side", "reason"],
            registry=self.registry,
        )
        self.open_connections = Gauge(
            "peermesh_open_connections",
            "Connections currently open, per listener.",
            ["listener"],
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "peermesh_internal_errors",
            "Unexpected exceptions one request, RPC, datagram or peer exchange caused; each"
            " was answered (500) or dropped, logged with its traceback, and the agent went on.",
            ["component"],
            registry=self.registry,
        )
        for component in INTERNAL_ERROR_COMPONENTS:
            self.internal_errors.labels(component)  # present at 0 before the first one
        self.control_calls = Counter(
            "peermesh_control_calls",
            "Control RPCs served under /peermesh.v1/, by method and status.",
            ["method", "status"],
            registry=self.registry,
        )
        self.authz_denials = Counter(
            "peermesh_authz_denials",
            "Inbound requests refused by authorization, by deciding policy and action.",
            ["policy", "action"],
            registry=self.registry,
        )
        self.retries = Counter(
            "peermesh_retries",
            "Extra attempts made for outbound requests, by destination.",
            ["destination_service"],
            registry=self.registry,
        )
        self.ejections = Counter(
            "peermesh_outlier_ejections",
            "Endpoints ejected by outlier detection, by destination.",
            ["destination_service"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "peermesh_mirrored_requests",
            "Mirror copies delivered (responses discarded), by mirror destination.",
            ["destination_service"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "peermesh_rate_limited",
            "Inbound requests refused by the local rate limit (429), by service.",
            ["service"],
            registry=self.registry,
        )
        self.policy_changes = Counter(
            "peermesh_policy_changes",
            "Committed policy changes (local edits and merged peer updates).",
            registry=self.registry,
        )
        # Children are resolved once per label set, on its first request: ``labels()``
        # checks and converts its arguments and takes a lock on every call.
        self._requests: dict[tuple[str, str, str, str, int, str], _Requests] = {}
        self._durations: dict[tuple[str, str, str], _Duration] = {}
        self._bytes: dict[tuple[str, str, str], _Bytes] = {}

    def record_request(
        self,
        direction: str,
        source: str,
        destination: str,
        status: int,
        seconds: float,
        *,
        subset: str = "",
        grpc_status: str = "",
    ) -> None:
        """One finished request (``seconds`` is a clock difference: finite)."""
        key = (direction, source, destination, subset, status, grpc_status)
        entry = self._requests.get(key)
        if entry is None:
            entry = self._new_requests(key)
        entry.count += 1
        duration = entry.duration
        duration.total += seconds
        duration.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1

    def _new_requests(self, key: tuple[str, str, str, str, int, str]) -> _Requests:
        direction, source, destination, subset, status, grpc_status = key
        duration_key = (direction, destination, subset)
        duration = self._durations.get(duration_key)
        if duration is None:
            duration = self._durations[duration_key] = _Duration(
                self.duration.labels(*duration_key)
            )
        child = self.requests.labels(
            direction, source, destination, subset, str(status), grpc_status
        )
        entry = self._requests[key] = _Requests(child, duration)
        return entry

    def record_bytes(
        self, direction: str, source: str, destination: str, request: int, response: int
    ) -> None:
        """Body bytes of one finished request (both series appear once either is non-zero)."""
        key = (direction, source, destination)
        entry = self._bytes.get(key)
        if entry is None:
            entry = self._bytes[key] = _Bytes(
                self.request_bytes.labels(*key), self.response_bytes.labels(*key)
            )
        entry.request += request
        entry.response += response

    def fold(self) -> None:
        """Write the per-request tallies into their prometheus_client children."""
        for entry in self._requests.values():
            entry.child._value.set(entry.count)
        for duration in self._durations.values():
            child = duration.child
            child._sum.set(duration.total)
            for value, count in zip(child._buckets, duration.buckets, strict=True):
                value.set(count)
        for nbytes in self._bytes.values():
            nbytes.request_child._value.set(nbytes.request)
            nbytes.response_child._value.set(nbytes.response)

    @property
    def tally(self) -> TallyCounter[tuple[str, str, int]]:
        """Requests by (direction, destination, status), for status pages and tests."""
        tally: TallyCounter[tuple[str, str, int]] = TallyCounter()
        for key, entry in self._requests.items():
            tally[(key[0], key[2], key[4])] += entry.count  # direction, destination, status
        return tally

    def internal_error(self, component: str) -> None:
        """One isolated failure (see ``peermesh_internal_errors_total``)."""
        self.internal_errors.labels(component).inc()

    def reject(self, listener: str, reason: str) -> None:
        self.rejected_connections.labels(listener, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
