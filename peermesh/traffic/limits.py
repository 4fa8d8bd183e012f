"""Local rate limiting (token buckets) and per-destination concurrency limits.

Both answer at once; nothing here waits. A refused request is answered immediately by
the shell: 429 with ``retry-after`` for the rate limiter, 503 with
``x-peermesh-error: overflow`` for the concurrency limits (Envoy's circuit breakers).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from peermesh.policy.model import ConnectionPool, RateLimit

__all__ = [
    "DEFAULT_MAX_SOURCES",
    "ConcurrencyLimits",
    "RateLimiter",
    "TokenBucket",
    "retry_after_header",
]

#: Most per-source buckets a :class:`RateLimiter` keeps (least recently used evicted).
DEFAULT_MAX_SOURCES = 10_000


class TokenBucket:
    """Envoy's local rate limit bucket: holds up to ``max_tokens``; every ``fill_interval``
    seconds ``tokens_per_fill`` tokens are added (in whole steps, not continuously).
    Starts full; each request takes one token.

    The first :meth:`take` starts the fill clock, so a bucket built before the first
    request (and before ``now`` is known) behaves the same as one built at that moment.
    """

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval: float) -> None:
        if max_tokens < 0 or tokens_per_fill < 0 or fill_interval <= 0:
            raise ValueError(
                "token bucket needs max_tokens >= 0, tokens_per_fill >= 0, fill_interval > 0; "
                f"got {max_tokens}, {tokens_per_fill}, {fill_interval}"
            )
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval = fill_interval
        self.tokens = max_tokens
        self._last_fill: float | None = None

    def _refill(self, now: float) -> None:
        if self._last_fill is None:
            self._last_fill = now
            return
        if now < self._last_fill + self.fill_interval:
            return
        fills = int((now - self._last_fill) // self.fill_interval)
        self.tokens = min(self.max_tokens, self.tokens + fills * self.tokens_per_fill)
        self._last_fill += fills * self.fill_interval

    def full(self, now: float) -> bool:
        """True if the bucket is full at ``now`` (forgetting it would lose nothing)."""
        self._refill(now)
        return self.tokens >= self.max_tokens

    def take(self, now: float) -> tuple[bool, float]:
        """``(True, 0.0)`` if a token was taken, else ``(False, seconds until a token)``."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True, 0.0
        if self.tokens_per_fill <= 0 or self.max_tokens <= 0:
            return False, math.inf
        assert self._last_fill is not None
        wait = self._last_fill + self.fill_interval - now
        return False, min(self.fill_interval, max(0.0, wait))


class RateLimiter:
    """The local rate limit of one destination: one bucket for everyone, or, with
    ``per_source``, one bucket per caller identity (SPIFFE ID; ``None`` -- an
    unauthenticated caller -- shares one bucket).

    Per-source buckets are bounded: beyond ``max_sources`` the least recently used is
    forgotten. A bucket idle long enough to have refilled is dropped first, which loses
    nothing; under a flood of distinct identities an evicted caller starts again from a
    full bucket, the price of bounded memory.
    """

    def __init__(self, config: RateLimit, *, max_sources: int = DEFAULT_MAX_SOURCES) -> None:
        self.config = config
        self.max_sources = max(1, max_sources)
        self._shared = self._bucket()
        self._by_source: OrderedDict[str | None, TokenBucket] = OrderedDict()
        #: Requests refused since creation.
        self.limited = 0

    def _bucket(self) -> TokenBucket:
        c = self.config
        return TokenBucket(c.max_tokens, c.tokens_per_fill, c.fill_interval)

    def __len__(self) -> int:
        """Per-source buckets currently kept."""
        return len(self._by_source)

    def check(self, now: float, source: str | None) -> tuple[bool, float]:
        """``(allowed, retry_after_seconds)`` for one request from ``source``."""
        if not self.config.per_source:
            bucket = self._shared
        else:
            found = self._by_source.get(source)
            if found is None:
                found = self._bucket()
                self._by_source[source] = found
                self._evict(now)
            else:
                self._by_source.move_to_end(source)
            bucket = found
        allowed, retry_after = bucket.take(now)
        if not allowed:
            self.limited += 1
        return allowed, retry_after

    def _evict(self, now: float) -> None:
        if len(self._by_source) <= self.max_sources:
            return
        # Drop refilled (idle) buckets from the cold end first, then plain LRU.
        for key in list(self._by_source)[: max(1, len(self._by_source) // 8)]:
            if len(self._by_source) <= self.max_sources:
                return
            if self._by_source[key].full(now):
                del self._by_source[key]
        while len(self._by_source) > self.max_sources:
            self._by_source.popitem(last=False)


def retry_after_header(seconds: float) -> bytes:
    """A ``retry-after`` value: whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3)."""
    if not math.isfinite(seconds):
        return b"3600"
    return str(max(1, math.ceil(seconds))).encode()


class ConcurrencyLimits:
    """Circuit-breaker limits of one destination (Istio ``connectionPool``), counted in
    requests because the shell multiplexes requests over pooled HTTP/2 connections:

    - ``max_requests`` (``http2MaxRequests``): at most this many requests in flight.
    - ``max_connections`` + ``max_pending`` (``http1MaxPendingRequests``): requests beyond
      ``max_connections`` in flight count as waiting for a connection; when more than
      ``max_pending`` would wait, the request overflows (so Istio's classic circuit
      breaker example ``maxConnections: 1, http1MaxPendingRequests: 1`` admits 2 at once).

    ``None`` means unlimited. :meth:`try_start` never queues: False means "answer 503
    ``overflow`` now". Call :meth:`finish` exactly once per admitted request.
    """

    def __init__(
        self,
        max_connections: int | None = None,
        max_pending: int | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_requests = max_requests
        self.in_flight = 0
        #: Requests refused since creation.
        self.overflows = 0

    @classmethod
    def from_pool(cls, pool: ConnectionPool | None) -> ConcurrencyLimits:
        if pool is None:
            return cls()
        return cls(pool.max_connections, pool.http1_max_pending_requests, pool.http2_max_requests)

    @property
    def limit(self) -> int | None:
        """Most requests admitted at once, or None if unlimited."""
        limits: list[int] = []
        if self.max_requests is not None:
            limits.append(self.max_requests)
        if self.max_connections is not None and self.max_pending is not None:
            limits.append(self.max_connections + self.max_pending)
        return min(limits) if limits else None

    @property
    def pending(self) -> int:
        """Admitted requests beyond ``max_connections`` (waiting for a connection)."""
        if self.max_connections is None:
            return 0
        return max(0, self.in_flight - self.max_connections)

    def try_start(self) -> bool:
        limit = self.limit
        if limit is not None and self.in_flight >= limit:
            self.overflows += 1
            return False
        self.in_flight += 1
        return True

    def finish(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
