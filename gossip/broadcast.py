"""The transmit-limited broadcast queue that feeds piggybacked gossip.

Each membership change is sent a limited number of times, mult·ceil(log10(N+1)),
which is enough for epidemic spread to reach everyone with high probability and
keeps per-node load logarithmic in cluster size. When several changes wait, the
least transmitted go first (news travels before old news is repeated), oldest
first among equals (so a burst of fresh news cannot starve what is already
waiting), and a newer change about a node replaces any older one still queued:
only the latest word about a member is worth the bytes.

Two refinements keep a backlog (a partition makes hundreds of accusations at
once) from burying what matters most. Among equally transmitted messages,
news that a member is *alive* (joins, refutations, updates) goes before
accusations: a late accusation costs a few seconds of detection, a late
refutation costs a healthy member its life. memberlist gets a similar effect by
packing longer messages first. And a node's own refutation is *urgent*: it
rides in front of every datagram until sent often enough.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice


def retransmit_limit(mult: int, n: int) -> int:
    """How many times a broadcast is sent in a cluster of ``n`` live members."""
    return mult * max(1, math.ceil(math.log10(n + 1)))


class _Item:
    __slots__ = ("key", "lane", "payload", "pos", "size", "transmits", "urgent")

    def __init__(self, key: str, payload: bytes, urgent: bool, lane: int) -> None:
        self.key = key
        self.payload = payload
        self.size = len(payload)
        self.transmits = 0
        self.urgent = urgent
        self.lane = lane
        self.pos = lane  # index of the FIFO holding it: 2·transmits + lane; -1 once gone


class BroadcastQueue:
    """Pending broadcasts keyed by the member they are about.

    Internally one FIFO per (transmit count, lane), at index ``2·count + lane``.
    Entries are removed lazily (an entry is stale once its item was sent again or
    replaced), which keeps every operation proportional to what is packed.
    """

    LANE_ALIVE = 0
    LANE_ACCUSE = 1

    # Stop looking for a message small enough to fill the tail of a datagram after
    # this many misses: perfect packing is not worth walking the whole queue.
    MAX_MISSES = 16
    MIN_USEFUL = 8

    def __init__(self, retransmit_mult: int) -> None:
        self.retransmit_mult = retransmit_mult
        self._tiers: list[deque[_Item]] = [deque()]
        self._counts: list[int] = [0]
        self._items: dict[str, _Item] = {}
        self._urgent: dict[str, _Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def _forget(self, item: _Item) -> None:
        if item.urgent:
            del self._urgent[item.key]
        else:
            self._counts[item.pos] -= 1
        item.pos = -1

    def queue(
        self, key: str, payload: bytes, *, urgent: bool = False, accusation: bool = False
    ) -> None:
        """Queue ``payload`` (an encoded message) about ``key``, replacing older news of it.

        ``accusation`` marks suspect/dead messages, which yield to alive news.
        """
        old = self._items.get(key)
        if old is not None:
            self._forget(old)
        lane = 1 if accusation else 0
        item = _Item(key, payload, urgent, lane)
        self._items[key] = item
        if urgent:
            self._urgent[key] = item
            return
        tiers = self._tiers
        while len(tiers) <= lane:
            tiers.append(deque())
            self._counts.append(0)
        tier = tiers[lane]
        tier.append(item)
        self._counts[lane] += 1
        if len(tier) > 2 * self._counts[lane] + 64:
            self._compact(lane)

    def discard(self, key: str) -> None:
        """Forget any pending broadcast about ``key``."""
        old = self._items.pop(key, None)
        if old is not None:
            self._forget(old)

    def transmits(self, key: str) -> int | None:
        """How many times the pending broadcast about ``key`` has been sent (None: none)."""
        item = self._items.get(key)
        return None if item is None else item.transmits

    def _compact(self, idx: int) -> None:
        self._tiers[idx] = deque(it for it in self._tiers[idx] if it.pos == idx)

    def get(self, budget: int, n: int) -> list[bytes]:
        """Payloads that fit in ``budget`` bytes: urgent first, then fewest-transmitted.

        Each returned payload counts one transmission; those that reach the limit
        for a cluster of ``n`` live members leave the queue.
        """
        items = self._items
        if not items:
            return []
        limit = retransmit_limit(self.retransmit_mult, n)
        tiers = self._tiers
        counts = self._counts
        while len(tiers) > 2 * limit:  # the cluster shrank: these were sent often enough
            idx = len(tiers) - 1
            for it in tiers.pop():
                if it.pos == idx:
                    it.pos = -1
                    del items[it.key]
            counts.pop()
        out: list[bytes] = []
        remaining = budget
        if self._urgent:
            for it in list(self._urgent.values()):
                if it.size <= remaining:
                    out.append(it.payload)
                    remaining -= it.size
                    it.transmits += 1
                    if it.transmits >= limit:
                        it.pos = -1
                        del items[it.key]
                        del self._urgent[it.key]
        picked: list[_Item] = []
        misses = 0
        min_useful = self.MIN_USEFUL
        max_misses = self.MAX_MISSES
        for idx in range(len(tiers)):
            if remaining < min_useful:
                break
            tier = tiers[idx]
            if not counts[idx]:
                if tier:
                    tier.clear()
                continue
            taken = 0
            # Fast path: take from the front while it fits, dropping stale entries.
            popleft = tier.popleft
            while tier:
                it = tier[0]
                if it.pos != idx:
                    popleft()
                elif it.size <= remaining:
                    popleft()
                    picked.append(it)
                    remaining -= it.size
                    taken += 1
                    if remaining < min_useful:
                        break
                else:
                    break
            counts[idx] -= taken
            taken = 0
            if remaining < min_useful:
                break
            # The front does not fit: look a little further for smaller messages.
            # Entries taken here stay in the deque and are skipped later as stale.
            for it in islice(tier, 1, None):
                if it.pos != idx:
                    continue
                if it.size <= remaining:
                    picked.append(it)
                    remaining -= it.size
                    it.pos = -2  # taken: stale here, re-filed below
                    taken += 1
                    if remaining < min_useful:
                        break
                else:
                    misses += 1
                    if misses > max_misses:
                        break
            counts[idx] -= taken
            if len(tier) > 2 * counts[idx] + 64:
                self._compact(idx)
            if misses > max_misses:
                break
        ntiers = len(tiers)
        for it in picked:
            t = it.transmits + 1
            it.transmits = t
            out.append(it.payload)
            if t >= limit:
                it.pos = -1
                del items[it.key]
                continue
            idx = 2 * t + it.lane
            it.pos = idx
            if idx >= ntiers:
                while len(tiers) <= idx:
                    tiers.append(deque())
                    counts.append(0)
                ntiers = len(tiers)
            tiers[idx].append(it)
            counts[idx] += 1
        return out
