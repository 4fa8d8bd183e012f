"""``TrafficPolicy`` (Istio DestinationRule): what happens to traffic after routing."""

from __future__ import annotations

from dataclasses import dataclass

from peermesh.policy.model.common import JSON, Pairs, _drop_empty, format_duration

LB_ROUND_ROBIN = "ROUND_ROBIN"
LB_LEAST_REQUEST = "LEAST_REQUEST"
LB_P2C_EWMA = "P2C_EWMA"
LB_SIMPLE: tuple[str, ...] = (LB_ROUND_ROBIN, LB_LEAST_REQUEST, LB_P2C_EWMA)


@dataclass(frozen=True)
class LoadBalancer:
    """Either a ``simple`` algorithm or consistent hashing on a request header."""

    simple: str | None = LB_P2C_EWMA
    consistent_hash_header: str | None = None

    def to_dict(self) -> JSON:
        if self.consistent_hash_header is not None:
            return {"consistentHash": {"httpHeaderName": self.consistent_hash_header}}
        return {"simple": self.simple}


@dataclass(frozen=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    idle_timeout: float | None = None

    def to_dict(self) -> JSON:
        tcp = _drop_empty(
            {
                "maxConnections": self.max_connections,
                "connectTimeout": (
                    format_duration(self.connect_timeout) if self.connect_timeout else None
                ),
            }
        )
        http = _drop_empty(
            {
                "http1MaxPendingRequests": self.http1_max_pending_requests,
                "http2MaxRequests": self.http2_max_requests,
                "maxRequestsPerConnection": self.max_requests_per_connection,
                "idleTimeout": format_duration(self.idle_timeout) if self.idle_timeout else None,
            }
        )
        return _drop_empty({"tcp": tcp, "http": http})


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "consecutive5xxErrors": self.consecutive_5xx_errors,
                "consecutiveGatewayErrors": self.consecutive_gateway_errors,
                "interval": format_duration(self.interval),
                "baseEjectionTime": format_duration(self.base_ejection_time),
                "maxEjectionPercent": self.max_ejection_percent,
            }
        )


@dataclass(frozen=True)
class RateLimit:
    """Local token bucket (Envoy local_ratelimit shape); per source identity if asked."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    per_source: bool = False

    def to_dict(self) -> JSON:
        return {
            "maxTokens": self.max_tokens,
            "tokensPerFill": self.tokens_per_fill,
            "fillInterval": format_duration(self.fill_interval),
            "perSource": self.per_source,
        }


@dataclass(frozen=True)
class RetryBudget:
    """Linkerd-style cap on retries: a ratio of live requests plus a per-second floor."""

    retry_ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0

    def to_dict(self) -> JSON:
        return {
            "retryRatio": self.retry_ratio,
            "minRetriesPerSecond": self.min_retries_per_second,
            "ttl": format_duration(self.ttl),
        }


@dataclass(frozen=True)
class Subset:
    name: str
    labels: Pairs

    def to_dict(self) -> JSON:
        return {"name": self.name, "labels": dict(self.labels)}


@dataclass(frozen=True)
class TrafficPolicySpec:
    host: str
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    rate_limit: RateLimit | None = None
    retry_budget: RetryBudget | None = None
    subsets: tuple[Subset, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "host": self.host,
                "loadBalancer": self.load_balancer,
                "connectionPool": self.connection_pool,
                "outlierDetection": self.outlier_detection,
                "rateLimit": self.rate_limit,
                "retryBudget": self.retry_budget,
                "subsets": [s.to_dict() for s in self.subsets],
            }
        )

    def subset(self, name: str) -> Subset | None:
        for subset in self.subsets:
            if subset.name == name:
                return subset
        return None


__all__ = [
    "LB_LEAST_REQUEST",
    "LB_P2C_EWMA",
    "LB_ROUND_ROBIN",
    "LB_SIMPLE",
    "ConnectionPool",
    "LoadBalancer",
    "OutlierDetection",
    "RateLimit",
    "RetryBudget",
    "Subset",
    "TrafficPolicySpec",
]
