"""Load balancer decision cores: p2c peak-EWMA, round robin, least request, ring hash."""

from __future__ import annotations

import heapq
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.core.endpoint import Endpoint
from peermesh.policy.model import LoadBalancer
from peermesh.traffic.balancer import (
    Balancer,
    ConsistentHash,
    LeastRequest,
    P2CPeakEwma,
    RoundRobin,
    hash_key_from_headers,
    make_balancer,
)


def endpoints(n: int, *, port: int = 9000) -> list[Endpoint]:
    return [Endpoint("svc", f"10.0.0.{i + 1}", port + i, node=f"n{i}") for i in range(n)]


def simulate(
    balancer: Balancer,
    eps: list[Endpoint],
    latency: dict[str, float],
    *,
    requests: int,
    spacing: float,
) -> Counter[str]:
    """Open-loop arrivals every ``spacing`` seconds; each answer takes ``latency[addr]``."""
    picks: Counter[str] = Counter()
    finishing: list[tuple[float, int, str]] = []
    now = 0.0
    for i in range(requests):
        now = i * spacing
        while finishing and finishing[0][0] <= now:
            done, _, address = heapq.heappop(finishing)
            balancer.on_finish(address, done, latency[address], True)
        chosen = balancer.pick(eps, now=now)
        assert chosen is not None
        balancer.on_start(chosen.address, now)
        picks[chosen.address] += 1
        heapq.heappush(finishing, (now + latency[chosen.address], i, chosen.address))
    return picks


def test_p2c_ewma_avoids_20x_slower_endpoint() -> None:
    fast, slow = endpoints(2)
    latency = {fast.address: 0.010, slow.address: 0.200}
    picks = simulate(
        P2CPeakEwma(random.Random(1)), [fast, slow], latency, requests=2000, spacing=0.002
    )
    assert picks[fast.address] >= 0.9 * 2000, picks


def test_p2c_ewma_sequential_and_many_endpoints() -> None:
    eps = endpoints(5)
    latency = {e.address: 0.010 for e in eps}
    latency[eps[2].address] = 0.200
    picks = simulate(P2CPeakEwma(random.Random(2)), eps, latency, requests=2000, spacing=0.05)
    assert picks[eps[2].address] <= 0.1 * 2000 / 5 + 20, picks


def test_p2c_ewma_peak_and_decay() -> None:
    lb = P2CPeakEwma(random.Random(0), default_rtt=0.03, decay=10.0)
    assert lb.latency("a", 0.0) == pytest.approx(0.03)
    lb.on_start("a", 0.0)
    lb.on_finish("a", 1.0, 0.5, True)  # slower than the estimate: jump to the peak
    assert lb.latency("a", 1.0) == pytest.approx(0.5)
    lb.on_start("a", 1.0)
    lb.on_finish("a", 1.01, 0.01, True)  # faster: only a small EWMA step
    assert 0.4 < lb.latency("a", 1.01) < 0.5
    # Unmeasured, the estimate decays with the 10 s time constant.
    assert lb.latency("a", 11.01) == pytest.approx(lb.latency("a", 1.01) / 2.718281828, rel=1e-6)


def test_p2c_ewma_failures_count_as_slow() -> None:
    lb = P2CPeakEwma(random.Random(0))
    lb.on_start("a", 0.0)
    lb.on_finish("a", 0.001, 0.001, False)
    assert lb.latency("a", 0.001) >= 1.0
    a, b = endpoints(2)
    lb2 = P2CPeakEwma(random.Random(0))
    for _ in range(3):
        lb2.on_start(a.address, 0.0)
        lb2.on_finish(a.address, 0.001, 0.001, False)
    picks = Counter(lb2.pick([a, b], now=0.01).address for _ in range(100))  # type: ignore[union-attr]
    assert picks[b.address] == 100


def test_p2c_ewma_outstanding_raises_cost() -> None:
    lb = P2CPeakEwma(random.Random(0))
    a, b = endpoints(2)
    for _ in range(5):
        lb.on_start(a.address, 0.0)
    assert lb.outstanding(a.address) == 5
    assert lb.cost(a.address, 0.0) == pytest.approx(6 * lb.cost(b.address, 0.0))
    assert lb.pick([a, b], now=0.0) == b
    for _ in range(5):
        lb.on_finish(a.address, 0.01, 0.01, True)
    assert lb.outstanding(a.address) == 0
    lb.retain([b.address])
    assert lb.latency(a.address, 0.02) == pytest.approx(0.03)  # forgotten: default again


def test_round_robin_is_fair() -> None:
    eps = endpoints(4)
    lb = RoundRobin(random.Random(3))
    picks = Counter(lb.pick(eps, now=0.0).address for _ in range(400))  # type: ignore[union-attr]
    assert set(picks.values()) == {100}


def test_least_request_prefers_idle() -> None:
    eps = endpoints(2)
    busy, idle = eps
    lb = LeastRequest(random.Random(4))
    for _ in range(3):
        lb.on_start(busy.address, 0.0)
    assert all(lb.pick(eps, now=0.0) == idle for _ in range(50))
    for _ in range(3):
        lb.on_finish(busy.address, 1.0, 1.0, True)
    assert lb.outstanding(busy.address) == 0
    picks = Counter(lb.pick(eps, now=1.0).address for _ in range(1000))  # type: ignore[union-attr]
    assert 400 < picks[busy.address] < 600


def test_least_request_spreads_load() -> None:
    eps = endpoints(10)
    lb = LeastRequest(random.Random(5))
    for _ in range(100):
        chosen = lb.pick(eps, now=0.0)
        assert chosen is not None
        lb.on_start(chosen.address, 0.0)
    counts = [lb.outstanding(e.address) for e in eps]
    assert max(counts) - min(counts) <= 6, counts  # uniform random: ~10+


@pytest.mark.parametrize("kind", ["rr", "lr", "ewma", "hash"])
def test_exclude_and_fallback(kind: str) -> None:
    rng = random.Random(6)
    lb: Balancer = {
        "rr": RoundRobin(rng),
        "lr": LeastRequest(rng),
        "ewma": P2CPeakEwma(rng),
        "hash": ConsistentHash(rng),
    }[kind]
    eps = endpoints(3)
    assert lb.pick([], now=0.0) is None
    for i in range(50):
        key = f"user-{i}".encode() if kind == "hash" else None
        chosen = lb.pick(eps, now=0.0, exclude={eps[0].address}, hash_key=key)
        assert chosen is not None and chosen != eps[0]
    everything = {e.address for e in eps}
    assert lb.pick(eps, now=0.0, exclude=everything, hash_key=b"k") in eps
    assert lb.pick(eps[:1], now=0.0, exclude={eps[0].address}) == eps[0]


def test_consistent_hash_is_stable_and_spread() -> None:
    eps = endpoints(5)
    lb = ConsistentHash(random.Random(7))
    keys = [f"session-{i}".encode() for i in range(5000)]
    first = {k: lb.pick(eps, now=0.0, hash_key=k) for k in keys}
    again = ConsistentHash(random.Random(99))
    assert all(again.pick(list(reversed(eps)), now=1.0, hash_key=k) == first[k] for k in keys)
    load = Counter(e.address for e in first.values() if e is not None)
    assert min(load.values()) > 0.6 * 1000 and max(load.values()) < 1.4 * 1000, load


def test_consistent_hash_minimal_movement_on_add_and_remove() -> None:
    eps = endpoints(6)
    lb = ConsistentHash(random.Random(8))
    keys = [f"k{i}".encode() for i in range(6000)]
    before = {k: lb.pick(eps[:5], now=0.0, hash_key=k) for k in keys}
    after = {k: lb.pick(eps, now=0.0, hash_key=k) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == eps[5] for k in moved)  # keys move only to the new endpoint
    assert len(moved) <= 1.3 * len(keys) / 6, len(moved)
    # Removing it again restores the old mapping exactly.
    assert all(lb.pick(eps[:5], now=0.0, hash_key=k) == before[k] for k in keys)
    # Excluding one endpoint only remaps that endpoint's keys.
    excluded = eps[1].address
    for k in keys[:500]:
        chosen = lb.pick(eps[:5], now=0.0, hash_key=k, exclude={excluded})
        assert chosen is not None and chosen.address != excluded
        if before[k] != eps[1]:
            assert chosen == before[k]


def test_consistent_hash_without_key_is_random() -> None:
    eps = endpoints(3)
    lb = ConsistentHash(random.Random(9))
    picks = Counter(lb.pick(eps, now=0.0).address for _ in range(300))  # type: ignore[union-attr]
    assert len(picks) == 3


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    key=st.binary(max_size=32),
    excluded=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_every_balancer_returns_a_member(n: int, key: bytes, excluded: set[int]) -> None:
    eps = endpoints(n)
    exclude = {eps[i].address for i in excluded if i < n}
    rng = random.Random(n)
    for lb in (RoundRobin(rng), LeastRequest(rng), P2CPeakEwma(rng), ConsistentHash(rng)):
        chosen = lb.pick(eps, now=0.0, exclude=exclude, hash_key=key)
        assert chosen in eps
        if len(exclude) < n:
            assert chosen is not None and chosen.address not in exclude


def test_make_balancer() -> None:
    rng = random.Random(0)
    assert isinstance(make_balancer(None, rng), P2CPeakEwma)
    assert isinstance(make_balancer(LoadBalancer(), rng), P2CPeakEwma)
    assert isinstance(make_balancer(LoadBalancer(simple="ROUND_ROBIN"), rng), RoundRobin)
    assert isinstance(make_balancer(LoadBalancer(simple="round_robin"), rng), RoundRobin)
    assert isinstance(make_balancer(LoadBalancer(simple="LEAST_REQUEST"), rng), LeastRequest)
    hashed = LoadBalancer(simple=None, consistent_hash_header="X-User")
    assert isinstance(make_balancer(hashed, rng), ConsistentHash)
    headers = [(b":path", b"/"), (b"x-user", b"alice")]
    assert hash_key_from_headers(hashed, headers) == b"alice"
    assert hash_key_from_headers(hashed, [(b":path", b"/")]) is None
    assert hash_key_from_headers(LoadBalancer(), headers) is None


def test_p2c_ewma_returns_to_a_recovered_endpoint() -> None:
    a, b = endpoints(2)
    lb = P2CPeakEwma(random.Random(10))
    latency = {a.address: 0.010, b.address: 0.200}
    first = simulate(lb, [a, b], latency, requests=2000, spacing=0.01)
    assert first[b.address] < 200
    # b recovers; the idle estimate decays, b gets probed and wins its share back.
    latency[b.address] = 0.010
    picks: Counter[str] = Counter()
    now = 20.0
    for i in range(6000):
        now = 20.0 + i * 0.01
        chosen = lb.pick([a, b], now=now)
        assert chosen is not None
        lb.on_start(chosen.address, now)
        lb.on_finish(chosen.address, now + latency[chosen.address], latency[chosen.address], True)
        if i >= 5000:
            picks[chosen.address] += 1
    assert picks[b.address] >= 300, picks
