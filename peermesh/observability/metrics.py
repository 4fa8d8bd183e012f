"""Prometheus metrics for one agent (its own registry, so several agents share a process).

Labels stay bounded: services, directions, codes and reasons, never paths or ids.
"""

from __future__ import annotations

from collections import Counter as TallyCounter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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


class AgentMetrics:
    """Every metric the data plane records, plus a small tally for status pages."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.tally: TallyCounter[tuple[str, str, int]] = TallyCounter()
        # (counter child, histogram child) per label set, resolved once: ``labels()``
        # checks and converts its arguments and takes a lock on every call.
        self._request_children: dict[tuple[str, str, str, str, int, str], tuple[Any, Any]] = {}

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
        key = (direction, source, destination, subset, status, grpc_status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(
                    direction, source, destination, subset, str(status), grpc_status
                ),
                self.duration.labels(direction, destination, subset),
            )
        children[0].inc()
        children[1].observe(seconds)
        self.tally[(direction, destination, status)] += 1

    def internal_error(self, component: str) -> None:
        """One isolated failure (see ``peermesh_internal_errors_total``)."""
        self.internal_errors.labels(component).inc()

    def reject(self, listener: str, reason: str) -> None:
        self.rejected_connections.labels(listener, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
