"""Many policy replicas in one process over a simulated network, in virtual time.

Each replica is a real :class:`PolicyStore`; only the network is simulated. Links get a
seeded base latency, every message a jitter and a chance to be lost, and partitions block
chosen pairs. The protocol is the one agents run over HTTP/2:

* **push** — after a local edit the origin sends the edit's delta to ``push_fanout``
  random peers at once; a replica that learns something new from a push forwards the same
  delta to ``forward_fanout`` other peers (rumour mongering, once per delta).
* **anti-entropy** — every ``interval`` each replica sends its state vector to
  ``peers_per_round`` random peers; the peer answers with the diff the sender lacks plus
  its own state vector, and the sender answers with the diff the peer lacks (Yjs sync
  steps 1 and 2 in both directions). This repairs whatever pushes lost.

Nothing here reads a clock or sleeps; the same seed gives the same run.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from peermesh.policy.model import PolicyObject
from peermesh.policy.store import HISTORY_LIMIT, ApplyReport, PolicyStore, UpdateRefused

EMPTY_UPDATE = Doc().get_update()


@dataclass(frozen=True)
class LinkModel:
    """Per-link base latency uniform in [min, max], per-message jitter and loss."""

    min_latency: float = 0.001
    max_latency: float = 0.020
    jitter: float = 0.2
    loss: float = 0.01


@dataclass(frozen=True)
class GossipConfig:
    interval: float = 0.2
    peers_per_round: int = 1
    push_fanout: int = 3
    forward: bool = True
    forward_fanout: int = 3


@dataclass
class SimStats:
    messages: int = 0
    dropped: int = 0
    blocked: int = 0
    bytes: int = 0
    refused: int = 0
    applied: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [count, bytes]

    def count(self, kind: str, size: int) -> None:
        self.messages += 1
        self.bytes += size
        entry = self.by_kind.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += size


@dataclass(frozen=True)
class TrackedEdit:
    key: str
    edit_id: str
    origin: int
    started: float


class SimMesh:
    """``size`` replicas gossiping policy; drive it with :meth:`edit` and :meth:`run_for`."""

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        link: LinkModel | None = None,
        gossip: GossipConfig | None = None,
        history_limit: int = HISTORY_LIMIT,
        epoch: float = 1_700_000_000.0,
    ) -> None:
        if size < 1:
            raise ValueError("a mesh needs at least one replica")
        self.rng = random.Random(seed)
        self.link = link or LinkModel()
        self.gossip = gossip or GossipConfig()
        self.epoch = epoch
        self.now = 0.0
        self.stats = SimStats()
        self.replicas: list[PolicyStore] = [
            PolicyStore(
                node=f"node-{i}",
                history_limit=history_limit,
                client_id=self.rng.randrange(1, 2**32),
            )
            for i in range(size)
        ]
        self._latency: dict[tuple[int, int], float] = {}
        self._blocked: set[tuple[int, int]] = set()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._tracked: dict[str, list[TrackedEdit]] = {}
        self.arrivals: dict[str, dict[int, float]] = {}
        self._unsubscribe = [
            store.subscribe(self._watcher(i)) for i, store in enumerate(self.replicas)
        ]
        for i in range(size):
            self._at(self.rng.uniform(0, self.gossip.interval), self._tick(i))

    # ------------------------------------------------------------------ driving

    def edit(
        self,
        index: int,
        objects: Iterable[PolicyObject | Mapping[str, Any]] = (),
        deletes: Iterable[str] = (),
    ) -> ApplyReport:
        """A local edit on replica ``index`` now, pushed to a few peers; tracked until all
        replicas have it (see :attr:`arrivals`)."""
        report = self.replicas[index].edit(
            upserts=objects, deletes=deletes, now=self.epoch + self.now
        )
        for key, edit_id in report.edits:
            self._tracked.setdefault(key, []).append(TrackedEdit(key, edit_id, index, self.now))
            self.arrivals[edit_id] = {index: self.now}
        if report.update:
            for peer in self._peers(index, self.gossip.push_fanout, exclude=()):
                self._send(index, peer, "push", report.update)
        return report

    def run_until(self, until: float) -> None:
        while self._queue and self._queue[0][0] <= until:
            self.now, _, action = heapq.heappop(self._queue)
            action()
        self.now = max(self.now, until)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def run_until_everywhere(self, edit_ids: Iterable[str], *, timeout: float) -> bool:
        """Run until every replica has each edit (or ``timeout`` virtual seconds pass)."""
        pending = list(edit_ids)
        deadline = self.now + timeout
        step = self.gossip.interval / 4
        while self.now < deadline:
            pending = [e for e in pending if len(self.arrivals.get(e, {})) < len(self.replicas)]
            if not pending:
                return True
            self.run_until(min(deadline, self.now + step))
        return all(len(self.arrivals.get(e, {})) == len(self.replicas) for e in pending)

    def run_until_converged(self, *, timeout: float) -> bool:
        deadline = self.now + timeout
        while self.now < deadline:
            if self.converged():
                return True
            self.run_until(min(deadline, self.now + self.gossip.interval))
        return self.converged()

    def converged(self) -> bool:
        """Same replicated content and same winners on every replica."""
        if len({r.digest() for r in self.replicas}) != 1:
            return False
        first = self.replicas[0].records()
        return all(r.records() == first for r in self.replicas[1:])

    def partition(self, *groups: Iterable[int]) -> None:
        """Block every link between different groups (replicas in no group stay connected)."""
        sets = [set(g) for g in groups]
        for a_index, a in enumerate(sets):
            for b in sets[a_index + 1 :]:
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))
                        self._blocked.add((y, x))

    def heal(self) -> None:
        self._blocked.clear()

    def propagation(self, edit_id: str) -> dict[int, float]:
        """Virtual seconds from the edit until each replica applied it."""
        times = self.arrivals.get(edit_id, {})
        start = min(times.values(), default=0.0)
        return {replica: t - start for replica, t in times.items()}

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for store in self.replicas:
            store.close()

    # ------------------------------------------------------------------ internals

    def _watcher(self, index: int) -> Callable[[frozenset[str]], None]:
        def on_change(changed: frozenset[str]) -> None:
            store = self.replicas[index]
            for key in changed:
                for tracked in self._tracked.get(key, ()):
                    seen = self.arrivals.setdefault(tracked.edit_id, {})
                    if index not in seen and store.has_edit(key, tracked.edit_id):
                        seen[index] = self.now

        return on_change

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, action))

    def _tick(self, index: int) -> Callable[[], None]:
        def tick() -> None:
            store = self.replicas[index]
            for peer in self._peers(index, self.gossip.peers_per_round, exclude=()):
                self._send(index, peer, "sv", store.state_vector())
            self._at(self.gossip.interval, tick)

        return tick

    def _peers(self, index: int, count: int, exclude: Iterable[int]) -> list[int]:
        skip = set(exclude) | {index}
        candidates = len(self.replicas) - len(skip)
        if candidates <= 0 or count <= 0:
            return []
        picked: set[int] = set()
        while len(picked) < min(count, candidates):
            peer = self.rng.randrange(len(self.replicas))
            if peer not in skip:
                picked.add(peer)
        return sorted(picked)

    def _latency_of(self, src: int, dst: int) -> float:
        pair = (min(src, dst), max(src, dst))
        base = self._latency.get(pair)
        if base is None:
            base = self.rng.uniform(self.link.min_latency, self.link.max_latency)
            self._latency[pair] = base
        return base * (1 + self.rng.uniform(-self.link.jitter, self.link.jitter))

    def _send(self, src: int, dst: int, kind: str, payload: Any) -> None:
        size = sum(len(p) for p in payload) if isinstance(payload, tuple) else len(payload)
        self.stats.count(kind, size)
        if (src, dst) in self._blocked:
            self.stats.blocked += 1
            return
        if self.rng.random() < self.link.loss:
            self.stats.dropped += 1
            return
        self._at(self._latency_of(src, dst), lambda: self._deliver(src, dst, kind, payload))

    def _apply(self, dst: int, update: bytes, src: int) -> bool:
        """Apply a peer's update; True if it taught the replica something."""
        if update == EMPTY_UPDATE:
            return False
        try:
            result = self.replicas[dst].apply_update(update, source=f"node-{src}")
        except UpdateRefused:
            self.stats.refused += 1
            return False
        self.stats.applied += 1
        return result.new

    def _deliver(self, src: int, dst: int, kind: str, payload: Any) -> None:
        store = self.replicas[dst]
        if kind == "push":
            if self._apply(dst, payload, src) and self.gossip.forward:
                for peer in self._peers(dst, self.gossip.forward_fanout, exclude=(src,)):
                    self._send(dst, peer, "push", payload)
        elif kind == "sv":
            diff = store.diff_since(payload)
            self._send(dst, src, "diff", (diff, store.state_vector()))
        elif kind == "diff":
            update, their_state = payload
            self._apply(dst, update, src)
            back = store.diff_since(their_state)
            if back != EMPTY_UPDATE:
                self._send(dst, src, "diff2", back)
        elif kind == "diff2":
            self._apply(dst, payload, src)
        else:  # pragma: no cover - internal message kinds only
            raise ValueError(f"unknown message kind {kind!r}")
