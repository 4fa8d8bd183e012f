"""Load balancers: which endpoint gets the next request.

A balancer is a sans-IO object. The proxy calls :meth:`Balancer.pick` with the healthy
endpoints (outlier-ejected ones already filtered out), then :meth:`Balancer.on_start`
when the attempt is sent and :meth:`Balancer.on_finish` when it completes, failed or
was cancelled. Endpoints are keyed by :attr:`Endpoint.address` (``host:port``).

``exclude`` names addresses to avoid (e.g. the endpoint a retried attempt just failed
on); when it would exclude every endpoint it is ignored, so a retry still goes
somewhere rather than nowhere.

Algorithms:

- :class:`P2CPeakEwma` (default, Linkerd's): power of two choices on
  ``peak-EWMA latency x (outstanding + 1)``.
- :class:`RoundRobin`: rotate through the list.
- :class:`LeastRequest`: power of two choices on outstanding requests (Envoy's
  LEAST_REQUEST with equal weights).
- :class:`ConsistentHash`: ring hash on a request key (a header value) so one key
  sticks to one endpoint, with minimal movement when endpoints come and go.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from peermesh.core.endpoint import Endpoint
from peermesh.policy.model import (
    LB_LEAST_REQUEST,
    LB_P2C_EWMA,
    LB_ROUND_ROBIN,
    LoadBalancer,
)

__all__ = [
    "DEFAULT_DECAY",
    "DEFAULT_FAILURE_PENALTY",
    "DEFAULT_RTT",
    "Balancer",
    "ConsistentHash",
    "LeastRequest",
    "P2CPeakEwma",
    "RoundRobin",
    "candidates",
    "hash_key_from_headers",
    "make_balancer",
]


class Balancer:
    """Chooses an endpoint per attempt and learns from attempts' results.

    Subclasses choose from the non-empty pool :meth:`pick` hands them; the learning
    hooks do nothing unless a subclass keeps per-endpoint state.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(
        self,
        endpoints: Sequence[Endpoint],
        *,
        now: float,
        exclude: Collection[str] = (),
        hash_key: bytes | None = None,
    ) -> Endpoint | None:
        """The endpoint for the next attempt; None only when ``endpoints`` is empty."""
        pool = candidates(endpoints, exclude)
        if not pool:
            return None
        if hash_key is not None:
            keyed = self._keyed(endpoints, pool, hash_key)
            if keyed is not None:
                return keyed
        return self._choose(pool, now)

    def _choose(self, pool: Sequence[Endpoint], now: float) -> Endpoint:
        """One of ``pool`` (the endpoints without the excluded ones, never empty)."""
        raise NotImplementedError

    def _keyed(
        self, endpoints: Sequence[Endpoint], pool: Sequence[Endpoint], key: bytes
    ) -> Endpoint | None:
        """The one of ``pool`` that ``key`` sticks to, or None to choose as without a key."""
        return None

    def on_start(self, address: str, now: float) -> None:
        """An attempt to ``address`` was sent."""

    def on_finish(self, address: str, now: float, latency: float, ok: bool) -> None:
        """An attempt to ``address`` ended after ``latency`` seconds; ``ok`` if it succeeded.

        Call exactly once per :meth:`on_start`, also for cancelled or timed-out attempts
        (with ``ok=False``), or the outstanding-request counts drift upwards.
        """


def candidates(endpoints: Sequence[Endpoint], exclude: Collection[str]) -> Sequence[Endpoint]:
    """``endpoints`` without the excluded addresses, or all of them if none would remain."""
    if not exclude:
        return endpoints
    kept = [e for e in endpoints if e.address not in exclude]
    return kept if kept else endpoints


_N = TypeVar("_N", int, float)


def _positive(name: str, value: _N) -> _N:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _two_distinct(rng: random.Random, n: int) -> tuple[int, int]:
    first = rng.randrange(n)
    second = rng.randrange(n - 1)
    if second >= first:
        second += 1
    return first, second


def _power_of_two(
    rng: random.Random, pool: Sequence[Endpoint], cost: Callable[[str], float]
) -> Endpoint:
    """Two distinct random candidates, the cheaper one (ties: the first draw)."""
    if len(pool) == 1:
        return pool[0]
    i, j = _two_distinct(rng, len(pool))
    a, b = pool[i], pool[j]
    return b if cost(b.address) < cost(a.address) else a


# ---------------------------------------------------------------------------- round robin


class RoundRobin(Balancer):
    """Rotates through the endpoints; starts at a random offset so sidecars that start
    together do not all hit the first endpoint at once."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._next = rng.randrange(1 << 30)

    def _choose(self, pool: Sequence[Endpoint], now: float) -> Endpoint:
        chosen = pool[self._next % len(pool)]
        self._next += 1
        return chosen


# ---------------------------------------------------------------------------- least request


class _Outstanding:
    """Outstanding-request counts per address; entries at zero are dropped (bounded)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def get(self, address: str) -> int:
        return self.counts.get(address, 0)

    def start(self, address: str) -> None:
        self.counts[address] = self.counts.get(address, 0) + 1

    def finish(self, address: str) -> None:
        count = self.counts.get(address, 0) - 1
        if count > 0:
            self.counts[address] = count
        else:
            self.counts.pop(address, None)


class LeastRequest(Balancer):
    """Power of two choices on outstanding requests: sample two endpoints at random and
    take the one with fewer requests in flight (ties broken by the first draw, which is
    itself random)."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._outstanding = _Outstanding()

    def outstanding(self, address: str) -> int:
        return self._outstanding.get(address)

    def _choose(self, pool: Sequence[Endpoint], now: float) -> Endpoint:
        return _power_of_two(self._rng, pool, self._outstanding.get)

    def on_start(self, address: str, now: float) -> None:
        self._outstanding.start(address)

    def on_finish(self, address: str, now: float, latency: float, ok: bool) -> None:
        self._outstanding.finish(address)


# ---------------------------------------------------------------------------- p2c peak EWMA

#: Latency assumed for an endpoint never measured (Linkerd's default RTT).
DEFAULT_RTT = 0.030
#: Time constant of the EWMA, seconds (Linkerd's default decay).
DEFAULT_DECAY = 10.0
#: A failed attempt counts as at least this slow, so a fast-failing endpoint is not
#: mistaken for a fast one.
DEFAULT_FAILURE_PENALTY = 1.0


@dataclass
class _Ewma:
    estimate: float
    stamp: float
    pending: int = 0


class P2CPeakEwma(Balancer):
    """Power of two choices over ``peak-EWMA latency x (outstanding + 1)`` (Linkerd, Finagle).

    The latency estimate of an endpoint:

    - jumps straight up to a sample slower than the current (decayed) estimate (the
      *peak*), so an endpoint that turns slow is avoided at once;
    - otherwise moves towards the sample with weight ``1 - exp(-elapsed / decay)``, a
      time-based EWMA whose memory is ``decay`` seconds whatever the request rate;
    - decays towards zero while nothing is measured (as Finagle/tower do on every read),
      so an endpoint once slow is eventually probed again rather than starved forever.

    Unknown endpoints start at ``default_rtt``. Failures count as taking at least
    ``failure_penalty`` seconds.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        default_rtt: float = DEFAULT_RTT,
        decay: float = DEFAULT_DECAY,
        failure_penalty: float = DEFAULT_FAILURE_PENALTY,
    ) -> None:
        super().__init__(rng)
        self._decay = _positive("decay", decay)
        self._default_rtt = default_rtt
        self._failure_penalty = failure_penalty
        self._state: dict[str, _Ewma] = {}

    # -- inspection

    def latency(self, address: str, now: float) -> float:
        """The current (decayed) latency estimate of ``address``, seconds."""
        state = self._state.get(address)
        if state is None:
            return self._default_rtt
        return self._decayed(state, now)

    def cost(self, address: str, now: float) -> float:
        state = self._state.get(address)
        if state is None:
            return self._default_rtt
        return self._decayed(state, now) * (state.pending + 1)

    def outstanding(self, address: str) -> int:
        state = self._state.get(address)
        return state.pending if state is not None else 0

    def retain(self, addresses: Iterable[str]) -> None:
        """Forget endpoints not in ``addresses`` that have nothing in flight."""
        keep = set(addresses)
        for address in [a for a, s in self._state.items() if a not in keep and s.pending == 0]:
            del self._state[address]

    # -- Balancer

    def _choose(self, pool: Sequence[Endpoint], now: float) -> Endpoint:
        return _power_of_two(self._rng, pool, lambda a: self.cost(a, now))

    def on_start(self, address: str, now: float) -> None:
        state = self._state.get(address)
        if state is None:
            state = self._state[address] = _Ewma(self._default_rtt, now)
        state.pending += 1

    def on_finish(self, address: str, now: float, latency: float, ok: bool) -> None:
        state = self._state.get(address)
        if state is None:
            state = self._state[address] = _Ewma(self._default_rtt, now)
        state.pending = max(0, state.pending - 1)
        sample = max(0.0, latency)
        if not ok:
            sample = max(sample, self._failure_penalty)
        weight = self._weight(state, now)
        if sample > state.estimate * weight:
            state.estimate = sample
        else:
            state.estimate = state.estimate * weight + sample * (1.0 - weight)
        state.stamp = max(state.stamp, now)

    def _weight(self, state: _Ewma, now: float) -> float:
        elapsed = max(0.0, now - state.stamp)
        return math.exp(-elapsed / self._decay)

    def _decayed(self, state: _Ewma, now: float) -> float:
        return state.estimate * self._weight(state, now)


# ---------------------------------------------------------------------------- consistent hash


def _hash64(data: bytes) -> int:
    """A stable 64-bit hash (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _Ring:
    __slots__ = ("endpoints", "hashes", "owners")

    def __init__(self, endpoints: Sequence[Endpoint], per_host: int):
        by_address = {e.address: e for e in endpoints}
        points: list[tuple[int, str]] = []
        for address in by_address:
            encoded = address.encode()
            points.extend(
                (_hash64(encoded + b"_" + str(i).encode()), address) for i in range(per_host)
            )
        points.sort()
        self.hashes = [h for h, _ in points]
        self.owners = [a for _, a in points]
        self.endpoints = by_address


class ConsistentHash(Balancer):
    """Ring hash (Envoy's RING_HASH): each endpoint owns many points on a 64-bit ring and a
    key goes to the owner of the first point at or after the key's hash.

    Adding an endpoint moves only the keys that now land on its points (about ``1/N`` of
    them), and every moved key moves *to* the new endpoint; removing one moves only its
    keys. Excluded endpoints are skipped by walking on along the ring, so a retry of a
    keyed request still lands on a stable second choice. Without a key the pick is random.

    Every endpoint gets the same number of points (``points_per_host``) whatever the
    size of the set; that is what makes the movement minimal (Envoy scales points with
    the set size and so moves a few more keys). 160 points per host keeps each host's
    share within roughly +-10% of fair.

    Rings are cached per endpoint set (a few sets, e.g. one per subset), so building one
    (``O(ring size x log)``) happens only when membership changes.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        points_per_host: int = 160,
        cache_size: int = 16,
    ) -> None:
        super().__init__(rng)
        self._per_host = _positive("points_per_host", points_per_host)
        self._cache_size = cache_size
        self._rings: OrderedDict[frozenset[str], _Ring] = OrderedDict()

    def _ring(self, endpoints: Sequence[Endpoint]) -> _Ring:
        key = frozenset(e.address for e in endpoints)
        ring = self._rings.get(key)
        if ring is None:
            ring = _Ring(endpoints, self._per_host)
            self._rings[key] = ring
            while len(self._rings) > self._cache_size:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(key)
            # Same addresses but possibly new Endpoint objects (labels, node): serve the
            # caller's objects.
            ring.endpoints = {e.address: e for e in endpoints}
        return ring

    def _choose(self, pool: Sequence[Endpoint], now: float) -> Endpoint:
        return pool[self._rng.randrange(len(pool))]

    def _keyed(
        self, endpoints: Sequence[Endpoint], pool: Sequence[Endpoint], key: bytes
    ) -> Endpoint:
        # The ring is built over every endpoint, not just the pool, so a retry that
        # excludes one reuses the cached ring and walks on past the excluded owners.
        ring = self._ring(endpoints)
        if len(ring.endpoints) == 1:
            return next(iter(ring.endpoints.values()))
        allowed = {e.address for e in pool}
        size = len(ring.hashes)
        index = bisect.bisect_left(ring.hashes, _hash64(key))
        for step in range(size):
            owner = ring.owners[(index + step) % size]
            if owner in allowed:
                return ring.endpoints[owner]
        raise AssertionError("every pool address owns points on the ring")


# ---------------------------------------------------------------------------- factory


def make_balancer(lb: LoadBalancer | None, rng: random.Random) -> Balancer:
    """The balancer a TrafficPolicy's ``loadBalancer`` asks for; None means p2c peak-EWMA.

    ``simple`` is matched case-insensitively (``ROUND_ROBIN`` or ``round_robin``); an
    unknown name falls back to the default rather than failing traffic.
    """
    if lb is None:
        return P2CPeakEwma(rng)
    if lb.consistent_hash_header is not None:
        return ConsistentHash(rng)
    simple = (lb.simple or LB_P2C_EWMA).upper()
    if simple == LB_ROUND_ROBIN:
        return RoundRobin(rng)
    if simple == LB_LEAST_REQUEST:
        return LeastRequest(rng)
    return P2CPeakEwma(rng)


def hash_key_from_headers(
    lb: LoadBalancer | None, headers: Iterable[tuple[bytes, bytes]]
) -> bytes | None:
    """The consistent-hash key for a request: the first value of the configured header
    (lowercase names, as h2/h11 give them), or None when not configured or absent."""
    if lb is None or lb.consistent_hash_header is None:
        return None
    name = lb.consistent_hash_header.lower().encode()
    for key, value in headers:
        if key == name:
            return value
    return None
