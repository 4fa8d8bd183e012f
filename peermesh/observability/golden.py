"""Golden metrics over a short rolling window: rate, success rate, latency percentiles.

Per key (a service, or a source→destination edge) the window holds one slot per second:
a request count, an error (5xx) count, the denials (403) and rate-limited answers (429)
apart, and a small log-bucket latency histogram. Success is non-5xx, as Linkerd counts
it; the denied and limited counts make a policy refusal visible at a glance. Histograms
from several agents add up, so the mesh view merges exactly and computes percentiles
once, from the merged counts.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

# Upper bounds in seconds: 50µs ... ~60s, about 12% apart.
BOUNDS: tuple[float, ...] = tuple(5e-5 * (1.12**i) for i in range(125))
WINDOW = 30


class _Slot:
    __slots__ = ("count", "denied", "errors", "hist", "limited", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.count = 0
        self.errors = 0
        self.denied = 0
        self.limited = 0
        self.hist: dict[int, int] = {}


class GoldenWindow:
    """Rolling per-second slots for each service and edge seen by this agent."""

    def __init__(self, window: int = WINDOW, max_keys: int = 1024) -> None:
        self.window = window
        self.max_keys = max_keys
        self._slots: dict[tuple[str, str, str], list[_Slot | None]] = {}

    def record(
        self,
        direction: str,
        source: str,
        destination: str,
        ok: bool,
        seconds: float,
        now: float,
        status: int = 0,
    ) -> None:
        key = (direction, source, destination)
        ring = self._slots.get(key)
        if ring is None:
            if len(self._slots) >= self.max_keys:
                return
            ring = self._slots[key] = [None] * self.window
        second = int(now)
        index = second % self.window
        slot = ring[index]
        if slot is None or slot.second != second:
            slot = ring[index] = _Slot(second)
        slot.count += 1
        if not ok:
            slot.errors += 1
        if status == 403:
            slot.denied += 1
        elif status == 429:
            slot.limited += 1
        bucket = bisect.bisect_left(BOUNDS, seconds)
        slot.hist[bucket] = slot.hist.get(bucket, 0) + 1

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Summed counts over the last ``window`` seconds, per key (mergeable)."""
        oldest = int(now) - self.window + 1
        out = []
        for (direction, source, destination), ring in self._slots.items():
            count = errors = denied = limited = 0
            hist: dict[int, int] = {}
            for slot in ring:
                if slot is None or slot.second < oldest:
                    continue
                count += slot.count
                errors += slot.errors
                denied += slot.denied
                limited += slot.limited
                for b, n in slot.hist.items():
                    hist[b] = hist.get(b, 0) + n
            if count:
                out.append(
                    {
                        "direction": direction,
                        "source": source,
                        "destination": destination,
                        "count": count,
                        "errors": errors,
                        "denied": denied,
                        "limited": limited,
                        "hist": {str(b): n for b, n in hist.items()},
                        "window": self.window,
                    }
                )
        return out


def merge(snapshots: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Mesh-wide services and edges from several agents' snapshots.

    A service's numbers come from the inbound side (what its sidecars served); an edge's
    from the outbound side of its source (what callers saw), falling back to inbound for
    callers without a sidecar view.
    """
    services: dict[str, dict[str, Any]] = {}
    edges_out: dict[tuple[str, str], dict[str, Any]] = {}
    edges_in: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in snapshots:
        for item in snap:
            if item["direction"] == "inbound":
                _add(services.setdefault(item["destination"], _empty()), item)
                _add(edges_in.setdefault((item["source"], item["destination"]), _empty()), item)
            else:
                _add(edges_out.setdefault((item["source"], item["destination"]), _empty()), item)
                services.setdefault(item["source"], _empty())
                services.setdefault(item["destination"], _empty())
    edges = {**edges_in, **edges_out}
    return {
        "services": [{"service": s, **_finish(v)} for s, v in sorted(services.items())],
        "edges": [
            {"source": s, "destination": d, **_finish(v)} for (s, d), v in sorted(edges.items())
        ],
    }


def _empty() -> dict[str, Any]:
    return {"count": 0, "errors": 0, "denied": 0, "limited": 0, "hist": {}, "window": WINDOW}


def _add(acc: dict[str, Any], item: dict[str, Any]) -> None:
    acc["count"] += item["count"]
    acc["errors"] += item["errors"]
    acc["denied"] += item.get("denied", 0)  # agents of an older version send neither
    acc["limited"] += item.get("limited", 0)
    acc["window"] = item.get("window", WINDOW)
    for b, n in item["hist"].items():
        acc["hist"][int(b)] = acc["hist"].get(int(b), 0) + n


def _finish(acc: dict[str, Any]) -> dict[str, Any]:
    count = acc["count"]
    window = acc["window"] or WINDOW
    return {
        "requests": count,
        "rps": round(count / window, 3),
        "success_rate": round((count - acc["errors"]) / count, 4) if count else None,
        "errors": acc["errors"],
        "denied": acc["denied"],
        "limited": acc["limited"],
        "p50_ms": _quantile(acc["hist"], count, 0.50),
        "p95_ms": _quantile(acc["hist"], count, 0.95),
        "p99_ms": _quantile(acc["hist"], count, 0.99),
    }


def _quantile(hist: dict[int, int], count: int, q: float) -> float | None:
    if not count:
        return None
    rank = max(1, math.ceil(q * count))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            bound = BOUNDS[bucket] if bucket < len(BOUNDS) else BOUNDS[-1]
            return round(bound * 1000, 3)
    return None
