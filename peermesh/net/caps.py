"""Connection and stream caps, counted without I/O: admit or refuse, then release.

A listener admits a connection against its total and against the connection's peer
(a source address for the app listeners, a SPIFFE ID on the mTLS inbound); the agent
admits each request stream against one budget shared by all its listeners. Refusing
is the caller's part (close at accept, REFUSED_STREAM, 503); existing connections and
streams are never touched by a refusal.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass


class Refusal(enum.Enum):
    """Why a connection or stream was refused; the value is the counter's reason."""

    CONNECTIONS = "connection-cap"
    PEER_CONNECTIONS = "peer-connection-cap"
    STREAMS = "stream-cap"


@dataclass(frozen=True)
class Caps:
    """The caps; 0 turns one off.

    10,000 connections per listener and 1,000 per peer are what an Envoy overload
    manager user would set (``max_active_downstream_connections`` in the tens of
    thousands per host, a per-client share of a tenth): far above what one app or one
    peer agent (which multiplexes everything over one pooled connection) needs, low
    enough that one greedy client cannot take every file descriptor. 10,000 streams
    per agent is ten full connections' worth of MAX_CONCURRENT_STREAMS (1,000).
    """

    connections: int = 10_000
    peer_connections: int = 1_000
    streams: int = 10_000

    def __post_init__(self) -> None:
        for name in ("connections", "peer_connections", "streams"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cap must be ≥ 0 (0 is off)")


class ConnectionCounts:
    """One listener's open connections, in total and per peer."""

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self.total = 0
        self._per_peer: Counter[str] = Counter()

    def admit(self) -> Refusal | None:
        """Count a new connection against the listener's total; a Refusal if over."""
        if self.caps.connections and self.total >= self.caps.connections:
            return Refusal.CONNECTIONS
        self.total += 1
        return None

    def release(self) -> None:
        self.total = max(0, self.total - 1)

    def admit_peer(self, peer: str) -> Refusal | None:
        """Count a connection against its peer's share; a Refusal if that peer is at its cap."""
        if self.caps.peer_connections and self._per_peer[peer] >= self.caps.peer_connections:
            return Refusal.PEER_CONNECTIONS
        self._per_peer[peer] += 1
        return None

    def release_peer(self, peer: str) -> None:
        left = self._per_peer[peer] - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    def of_peer(self, peer: str) -> int:
        return self._per_peer[peer]


class StreamBudget:
    """Concurrent request streams across every listener of one agent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.limit and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


class LogBudget:
    """One log line per reason per ``interval`` seconds; says how many were held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, reason: str, now: float) -> int | None:
        """None to stay quiet; else how many lines for ``reason`` were held back since."""
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._held[reason] += 1
            return None
        self._last[reason] = now
        return self._held.pop(reason, 0)
