"""Token buckets, the local rate limiter and per-destination concurrency limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peermesh.policy.model import ConnectionPool, RateLimit
from peermesh.traffic.limits import (
    ConcurrencyLimits,
    RateLimiter,
    TokenBucket,
    retry_after_header,
)


def test_bucket_starts_full_and_refills_in_steps() -> None:
    bucket = TokenBucket(max_tokens=3, tokens_per_fill=2, fill_interval=1.0)
    assert [bucket.take(10.0)[0] for _ in range(4)] == [True, True, True, False]
    assert bucket.take(10.25) == (False, pytest.approx(0.75))
    assert bucket.take(10.99) == (False, pytest.approx(0.01))
    assert [bucket.take(11.0)[0] for _ in range(3)] == [True, True, False]
    # A long idle period refills only up to max_tokens.
    assert [bucket.take(100.0)[0] for _ in range(4)] == [True, True, True, False]


def test_bucket_retry_after_is_when_a_token_arrives() -> None:
    bucket = TokenBucket(max_tokens=1, tokens_per_fill=1, fill_interval=2.0)
    assert bucket.take(0.0) == (True, 0.0)
    allowed, retry_after = bucket.take(0.5)
    assert not allowed
    assert bucket.take(0.5 + retry_after - 1e-9)[0] is False
    assert bucket.take(0.5 + retry_after)[0] is True


def test_bucket_that_never_fills() -> None:
    bucket = TokenBucket(max_tokens=1, tokens_per_fill=0, fill_interval=1.0)
    assert bucket.take(0.0)[0]
    assert bucket.take(5.0) == (False, math.inf)
    with pytest.raises(ValueError):
        TokenBucket(1, 1, 0.0)


@given(
    max_tokens=st.integers(1, 20),
    per_fill=st.integers(1, 5),
    interval=st.floats(0.01, 5.0),
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=200),
)
def test_bucket_never_exceeds_its_rate(
    max_tokens: int, per_fill: int, interval: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(max_tokens, per_fill, interval)
    now = 0.0
    granted = 0
    for gap in gaps:
        now += gap
        allowed, retry_after = bucket.take(now)
        granted += allowed
        assert retry_after >= 0.0 and (allowed or retry_after <= interval)
    assert granted <= max_tokens + per_fill * math.floor(now / interval)


def config(per_source: bool) -> RateLimit:
    return RateLimit(max_tokens=2, tokens_per_fill=1, fill_interval=1.0, per_source=per_source)


def test_rate_limiter_shared_bucket() -> None:
    limiter = RateLimiter(config(per_source=False))
    assert [limiter.check(0.0, s)[0] for s in ("a", "b", "c")] == [True, True, False]
    assert limiter.limited == 1 and len(limiter) == 0


def test_rate_limiter_per_source_isolation() -> None:
    limiter = RateLimiter(config(per_source=True))
    alice, bob = "spiffe://mesh/ns/a/sa/alice", "spiffe://mesh/ns/a/sa/bob"
    assert [limiter.check(0.0, alice)[0] for _ in range(3)] == [True, True, False]
    assert [limiter.check(0.0, bob)[0] for _ in range(2)] == [True, True]
    assert [limiter.check(0.0, None)[0] for _ in range(3)] == [True, True, False]
    allowed, retry_after = limiter.check(0.4, alice)
    assert not allowed and retry_after == pytest.approx(0.6)
    assert limiter.check(1.0, alice)[0]


def test_rate_limiter_bounds_sources() -> None:
    limiter = RateLimiter(config(per_source=True), max_sources=100)
    for i in range(1000):
        limiter.check(float(i) / 1000, f"id-{i}")
    assert len(limiter) <= 100
    # A heavy hitter that keeps coming back is not evicted by one-off callers.
    for i in range(300):
        limiter.check(1.0 + i / 1000, "hot")
        limiter.check(1.0 + i / 1000, f"new-{i}")
    assert len(limiter) <= 100
    assert not limiter.check(1.3, "hot")[0]


def test_retry_after_header() -> None:
    assert retry_after_header(0.01) == b"1"
    assert retry_after_header(1.2) == b"2"
    assert retry_after_header(math.inf) == b"3600"


def test_concurrency_overflow_and_finish() -> None:
    limits = ConcurrencyLimits(max_requests=2)
    assert limits.try_start() and limits.try_start()
    assert not limits.try_start()
    assert limits.overflows == 1 and limits.in_flight == 2
    limits.finish()
    assert limits.try_start()
    for _ in range(5):
        limits.finish()
    assert limits.in_flight == 0


def test_concurrency_connections_plus_pending() -> None:
    # Istio's circuit-breaker example: maxConnections 1, http1MaxPendingRequests 1.
    limits = ConcurrencyLimits.from_pool(
        ConnectionPool(max_connections=1, http1_max_pending_requests=1)
    )
    assert limits.limit == 2
    assert limits.try_start() and limits.pending == 0
    assert limits.try_start() and limits.pending == 1
    assert not limits.try_start()
    both = ConcurrencyLimits(max_connections=10, max_pending=10, max_requests=5)
    assert both.limit == 5
    unlimited = ConcurrencyLimits.from_pool(None)
    assert unlimited.limit is None and all(unlimited.try_start() for _ in range(10_000))
    assert ConcurrencyLimits(max_connections=1).limit is None
