"""Per-destination traffic state and the pure helpers the outbound proxy applies per request.

A ``DestinationState`` holds what must outlive one request: the balancer's latency
estimates, outlier ejections, the retry budget and the concurrency limits of one
destination service. It is rebuilt only when that destination's TrafficPolicy changes,
so a policy edit elsewhere never resets another destination's statistics.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from peermesh.core.endpoint import Endpoint
from peermesh.net.http.headers import Headers, RequestHead
from peermesh.policy.compiled import CompiledPolicy, DestinationPolicy, RouteDecision
from peermesh.policy.model import HeaderOperations, Retries
from peermesh.policy.model import RetryBudget as RetryBudgetSpec
from peermesh.traffic.balancer import Balancer, make_balancer
from peermesh.traffic.limits import ConcurrencyLimits, RateLimiter
from peermesh.traffic.outlier import OutlierDetector
from peermesh.traffic.retry import DEFAULT_RETRY_ON, RetryBudget

#: Istio's default when no Route says otherwise: two retries on failures that are safe.
DEFAULT_RETRIES = Retries(attempts=2, per_try_timeout=None, retry_on=tuple(DEFAULT_RETRY_ON))


@dataclass
class DestinationState:
    """What the proxy remembers about one destination service."""

    host: str
    policy: DestinationPolicy | None
    balancer: Balancer
    outlier: OutlierDetector | None
    limits: ConcurrencyLimits
    budget: RetryBudget
    rate_limiter: RateLimiter | None = None
    requests: int = 0
    overflows: int = 0


@dataclass
class TrafficTable:
    """Destination states keyed by service, refreshed against the compiled policy."""

    rng: random.Random = field(default_factory=random.Random)
    states: dict[str, DestinationState] = field(default_factory=dict)

    def state_for(self, host: str, compiled: CompiledPolicy | None) -> DestinationState:
        policy = compiled.destination_policy(host) if compiled is not None else None
        state = self.states.get(host)
        if state is not None and state.policy == policy:
            return state
        spec = policy.spec if policy is not None else None
        pool = spec.connection_pool if spec is not None else None
        budget_cfg = spec.retry_budget if spec is not None else None
        state = DestinationState(
            host=host,
            policy=policy,
            balancer=make_balancer(policy.load_balancer if policy else None, self.rng),
            outlier=(
                OutlierDetector(spec.outlier_detection)
                if spec is not None and spec.outlier_detection is not None
                else None
            ),
            limits=ConcurrencyLimits(
                max_connections=pool.max_connections if pool else None,
                max_pending=pool.http1_max_pending_requests if pool else None,
                max_requests=pool.http2_max_requests if pool else None,
            ),
            budget=_budget(budget_cfg),
            rate_limiter=(
                RateLimiter(spec.rate_limit) if spec is not None and spec.rate_limit else None
            ),
        )
        self.states[host] = state
        return state


def _budget(config: RetryBudgetSpec | None) -> RetryBudget:
    if config is None:
        return RetryBudget()
    return RetryBudget(
        ratio=config.retry_ratio,
        min_retries_per_second=float(config.min_retries_per_second),
        ttl=config.ttl,
    )


def matching(endpoints: Iterable[Endpoint], labels: Sequence[tuple[str, str]]) -> list[Endpoint]:
    """Endpoints whose labels include every ``(key, value)`` of a subset."""
    wanted = tuple(labels)
    if not wanted:
        return list(endpoints)
    return [e for e in endpoints if all(e.labels.get(k) == v for k, v in wanted)]


def apply_header_ops(headers: Headers, ops: HeaderOperations | None) -> Headers:
    """Istio header manipulation: remove, then set (replace), then add (append)."""
    if ops is None:
        return headers
    remove = {n.lower().encode() for n in ops.remove}
    replace = {k.lower().encode(): v.encode() for k, v in ops.set}
    out = [(n, v) for n, v in headers if n not in remove and n not in replace]
    out.extend(replace.items())
    out.extend((k.lower().encode(), v.encode()) for k, v in ops.add)
    return out


def rewrite_request(head: RequestHead, decision: RouteDecision | None) -> RequestHead:
    """Apply a matched rule's request header operations and path/authority rewrite."""
    if decision is None:
        return head
    headers = list(head.headers)
    if decision.headers is not None:
        headers = apply_header_ops(headers, decision.headers.request)
    path, authority = head.path, head.authority
    if decision.rewrite is not None:
        if decision.rewrite.uri:
            _, sep, query = head.path.partition(b"?")
            path = decision.rewrite.uri.encode() + (sep + query if sep else b"")
        if decision.rewrite.authority:
            authority = decision.rewrite.authority.encode()
    return RequestHead(head.method, head.scheme, authority, path, tuple(headers))


def response_headers(headers: Headers, decision: RouteDecision | None, attempts: int) -> Headers:
    out = list(headers)
    if decision is not None and decision.headers is not None:
        out = apply_header_ops(out, decision.headers.response)
    out.append((b"x-peermesh-attempts", str(attempts).encode()))
    return out


def grpc_status_of(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"grpc-status":
            try:
                return int(value)
            except ValueError:
                return None
    return None
