"""``TrafficPolicy`` (Istio DestinationRule): balancing, pools, outliers, limits, subsets."""

from __future__ import annotations

from peermesh.policy.model import (
    LB_SIMPLE,
    ConnectionPool,
    LoadBalancer,
    OutlierDetection,
    RateLimit,
    RetryBudget,
    Subset,
    TrafficPolicySpec,
)
from peermesh.policy.validate.common import (
    _header_name,
    _label_key,
    _label_value,
    _service,
    _subset_name,
)
from peermesh.policy.validate.walker import (
    HOUR,
    _bool,
    _Ctx,
    _duration,
    _enum,
    _int,
    _mapping,
    _number,
    _pairs,
    _unique,
)


def _consistent_hash(ctx: _Ctx, value: object, path: str) -> str | None:
    f = _mapping(ctx, value, path, ("httpHeaderName",), ("httpHeaderName",))
    return None if f is None else f.get("httpHeaderName", _header_name)


def _load_balancer(ctx: _Ctx, value: object, path: str) -> LoadBalancer | None:
    f = _mapping(ctx, value, path, ("simple", "consistentHash"))
    if f is None:
        return None
    if len(f) != 1:
        ctx.error(path, "set exactly one of 'simple' or 'consistentHash'")
        return None
    if "simple" in f:
        simple = f.get("simple", _enum, choices=LB_SIMPLE)
        return None if simple is None else LoadBalancer(simple=simple)
    header = f.get("consistentHash", _consistent_hash)
    return None if header is None else LoadBalancer(simple=None, consistent_hash_header=header)


_LIMIT = 10_000_000


def _connection_pool(ctx: _Ctx, value: object, path: str) -> ConnectionPool | None:
    f = _mapping(ctx, value, path, ("tcp", "http"))
    if f is None:
        return None
    tcp_fields = ("maxConnections", "connectTimeout")
    http_fields = (
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "idleTimeout",
    )
    tcp = _mapping(ctx, f.data.get("tcp", {}), f.at("tcp"), tcp_fields)
    http = _mapping(ctx, f.data.get("http", {}), f.at("http"), http_fields)
    if tcp is None or http is None:
        return None
    pool = ConnectionPool(
        max_connections=tcp.get("maxConnections", _int, lo=1, hi=_LIMIT),
        connect_timeout=tcp.get("connectTimeout", _duration, hi=600.0),
        http1_max_pending_requests=http.get("http1MaxPendingRequests", _int, lo=1, hi=_LIMIT),
        http2_max_requests=http.get("http2MaxRequests", _int, lo=1, hi=_LIMIT),
        max_requests_per_connection=http.get("maxRequestsPerConnection", _int, lo=1, hi=_LIMIT),
        idle_timeout=http.get("idleTimeout", _duration),
    )
    return pool if pool != ConnectionPool() else None  # empty means absent


def _outlier_detection(ctx: _Ctx, value: object, path: str) -> OutlierDetection | None:
    allowed = (
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
    )
    f = _mapping(ctx, value, path, allowed)
    if f is None:
        return None
    d = OutlierDetection()
    c5 = f.get_or("consecutive5xxErrors", d.consecutive_5xx_errors, _int, lo=0, hi=1000)
    gateway = f.get("consecutiveGatewayErrors", _int, lo=0, hi=1000)
    interval = f.get_or("interval", d.interval, _duration, hi=HOUR)
    base = f.get_or("baseEjectionTime", d.base_ejection_time, _duration, hi=HOUR)
    max_pct = f.get_or("maxEjectionPercent", d.max_ejection_percent, _int, lo=0, hi=100)
    if c5 is None or interval is None or base is None or max_pct is None:
        return None
    return OutlierDetection(
        consecutive_5xx_errors=c5,
        consecutive_gateway_errors=gateway,
        interval=interval,
        base_ejection_time=base,
        max_ejection_percent=max_pct,
    )


def _rate_limit(ctx: _Ctx, value: object, path: str) -> RateLimit | None:
    allowed = ("maxTokens", "tokensPerFill", "fillInterval", "perSource")
    f = _mapping(ctx, value, path, allowed, ("maxTokens", "tokensPerFill", "fillInterval"))
    if f is None:
        return None
    max_tokens = f.get("maxTokens", _int, lo=1, hi=_LIMIT)
    per_fill = f.get("tokensPerFill", _int, lo=1, hi=_LIMIT)
    interval = f.get("fillInterval", _duration, hi=HOUR)
    per_source = f.get_or("perSource", False, _bool)
    if max_tokens is None or per_fill is None or interval is None or per_source is None:
        return None
    if per_fill > max_tokens:
        ctx.error(
            f.at("tokensPerFill"),
            f"{per_fill} is more than maxTokens ({max_tokens}), so part of every fill is lost",
        )
        return None
    return RateLimit(
        max_tokens=max_tokens,
        tokens_per_fill=per_fill,
        fill_interval=interval,
        per_source=per_source,
    )


def _retry_budget(ctx: _Ctx, value: object, path: str) -> RetryBudget | None:
    f = _mapping(ctx, value, path, ("retryRatio", "minRetriesPerSecond", "ttl"))
    if f is None:
        return None
    d = RetryBudget()
    ratio = f.get_or("retryRatio", d.retry_ratio, _number, lo=0.0, hi=10.0)
    floor = f.get_or("minRetriesPerSecond", d.min_retries_per_second, _int, lo=0, hi=1_000_000)
    ttl = f.get_or("ttl", d.ttl, _duration, hi=600.0)
    if ratio is None or floor is None or ttl is None:
        return None
    return RetryBudget(retry_ratio=ratio, min_retries_per_second=floor, ttl=ttl)


def _subset(ctx: _Ctx, value: object, path: str) -> Subset | None:
    f = _mapping(ctx, value, path, ("name", "labels"), ("name", "labels"))
    if f is None:
        return None
    name = f.get("name", _subset_name)
    labels = f.get("labels", _pairs, key_check=_label_key, value_check=_label_value)
    if name is None or labels is None:
        return None
    return Subset(name=name, labels=labels)


def _traffic_policy_spec(ctx: _Ctx, value: object) -> TrafficPolicySpec | None:
    allowed = (
        "host",
        "loadBalancer",
        "connectionPool",
        "outlierDetection",
        "rateLimit",
        "retryBudget",
        "subsets",
    )
    f = _mapping(ctx, value, "spec", allowed, ("host",))
    if f is None:
        return None
    subsets = f.many("subsets", _subset)
    _unique(ctx, ((f"spec.subsets[{i}].name", s.name) for i, s in enumerate(subsets)), "subset")
    host = f.get("host", _service)
    spec = TrafficPolicySpec(
        host=host or "",
        load_balancer=f.get("loadBalancer", _load_balancer),
        connection_pool=f.get("connectionPool", _connection_pool),
        outlier_detection=f.get("outlierDetection", _outlier_detection),
        rate_limit=f.get("rateLimit", _rate_limit),
        retry_budget=f.get("retryBudget", _retry_budget),
        subsets=subsets,
    )
    return None if host is None else spec
