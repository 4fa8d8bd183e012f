"""The node facade: :class:`Swim`, the inputs its owner calls (datagrams, ticks, join, leave).

Everything the node decides is returned as outputs; time only ever arrives as
``now``. Incoming datagrams are dispatched on their validated wire form, so old
news is dismissed after one dict lookup without building any object.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from gossip.codec import (
    TAG_ACK,
    TAG_ALIVE,
    TAG_INDIRECT_PING,
    TAG_NACK,
    TAG_PING,
    TAG_SUSPECT,
    DropReason,
    encode_meta,
    pack_ack,
    pack_alive,
    pack_dead,
    pack_ping,
    pack_suspect,
)
from gossip.errors import LeftMeshError
from gossip.messages import Address, NodeMeta
from gossip.swim.antientropy import AntiEntropy
from gossip.swim.outputs import Output, StartPushPull
from gossip.swim.state import _INF, ALIVE, DEAD, LEFT, SUSPECT


class Swim(AntiEntropy):
    """One node's view of the mesh membership, driven by bytes and ``now``.

    ``rng`` makes every random choice (probe order, helpers, gossip targets),
    so a seeded Random gives a reproducible run. ``incarnation`` lets a
    restarted node start above what the mesh remembers of it (pass a persisted
    or clock-derived value); otherwise it refutes its way up on its own.
    """

    def next_deadline(self) -> float:
        """When :meth:`tick` must next be called. A past value means: now."""
        d = self._next_reap_at
        if len(self.broadcasts):
            g = self._next_gossip_at
            if g < self._clock:
                # Idle since that grid point: gossip waits for the next one, as with
                # a free-running ticker, rather than firing the moment news arrives.
                gi = self.profile.gossip_interval
                g += gi * (int((self._clock - g) / gi) + 1)
                self._next_gossip_at = g
            if g < d:
                d = g
        if not self._leaving:
            if self._next_probe_at < d:
                d = self._next_probe_at
            if self._next_push_pull_at < d:
                d = self._next_push_pull_at
            if self._next_reconnect_at < d:
                d = self._next_reconnect_at
            if self._sync_at < d:
                d = self._sync_at
            p = self._probe
            if p is not None:
                t = p.end_at if p.indirect_sent else p.timeout_at
                if t < d:
                    d = t
        if self._suspicion_heap and self._suspicion_heap[0][0] < d:
            d = self._suspicion_heap[0][0]
        for r in self._relays.values():
            t = r.nack_at if r.want_nack else r.expires
            if t < d:
                d = t
        return d

    def tick(self, now: float) -> list[Output]:
        """Run every timer that is due at ``now``."""
        self._clock = now
        out: list[Output] = []
        heap = self._suspicion_heap
        while heap and heap[0][0] <= now:
            deadline, name = heapq.heappop(heap)
            s = self._suspicions.get(name)
            if s is not None and s.deadline == deadline:
                self._suspicion_expired(now, name, out)
        if self._relays:
            self._run_relays(now, out)
        if not self._leaving:
            p = self._probe
            if p is not None:
                if not p.indirect_sent and now >= p.timeout_at:
                    self._send_indirect(p, out)
                if now >= p.end_at:
                    self._probe_failed(now, p, out)
            if now >= self._next_probe_at:
                self._start_probe(now, out)
            if now >= self._next_push_pull_at:
                period = self.profile.push_pull_period(len(self._pool) + 1)
                self._push_pull_period = period
                self._next_push_pull_at = now + period
                self._start_push_pull(out)
            if now >= self._sync_at:
                self._sync_at = _INF
                if self._sync_followups:
                    # One more, later: by then a random partner very likely knows
                    # whatever reached neither us nor the partner of the first one.
                    self._sync_followups -= 1
                    self._sync_at = now + 3 * self._settle_time(len(self._pool) + 1)
                self._start_push_pull(out)
            if now >= self._next_reconnect_at:
                self._reconnect(now, out)
        if now >= self._next_gossip_at:
            gi = self.profile.gossip_interval
            nxt = self._next_gossip_at + gi
            if nxt <= now:  # we were idle (or called late): re-align to the grid
                nxt += gi * (int((now - nxt) / gi) + 1)
            self._next_gossip_at = nxt
            if len(self.broadcasts):
                self._gossip(now, out)
        if now >= self._next_reap_at:
            self._next_reap_at = now + self._reap_interval
            self._reap(now)
        return out

    def handle_datagram(self, now: float, addr: Address, data: bytes) -> list[Output]:
        """Process one datagram received from ``addr``. Bad datagrams are counted and ignored."""
        self._clock = now
        opened = self.codec.open(data)
        if isinstance(opened, DropReason):
            return []
        sender, wire = opened
        out: list[Output] = []
        acks: list[int] | None = None
        corrections: list[bytes] | None = None
        members = self._members
        suspicions = self._suspicions
        me = self._me
        # Dispatch on the validated wire form; most state messages are old news and
        # are dismissed after one dict lookup, without building any object.
        for w in wire:
            tag = w[0]
            if tag >= TAG_ALIVE:
                node = w[1]
                inc = w[2]
                m = members.get(node)
                if tag == TAG_ALIVE:
                    if m is None or inc > m.incarnation or m is me:
                        self._alive(now, node, inc, w[3], out, True)
                elif m is None:
                    continue
                elif inc < m.incarnation:
                    # A stale accusation: whoever sent it has not heard the refutation.
                    # Answer with it, since rumours evidently did not reach them.
                    if m is me:
                        self._reannounce()
                    if m.state == ALIVE:
                        last = self._corrected.get(node)
                        if last is None or now - last >= self.profile.gossip_interval:
                            self._corrected[node] = now
                            if corrections is None:
                                corrections = []
                            corrections.append(pack_alive(node, m.incarnation, m.blob))
                    continue
                elif tag == TAG_SUSPECT:
                    if m.state == SUSPECT and inc == m.incarnation:
                        # Usually one more echo of a known suspicion: skip it cheaply
                        # once the timer has all the confirmations it can use.
                        s = suspicions.get(node)
                        if s is not None and s.confirmations >= s.expected:
                            continue
                    self._suspect(now, m, inc, w[3], out, True)
                elif m.state < DEAD:
                    self._dead(now, m, inc, w[3], out, True)
            elif tag == TAG_PING:
                target = w[2]
                if target is None or target == self.name:
                    if acks is None:
                        acks = []
                    acks.append(w[1])
                    if len(w) == 4 and w[3]:  # asked to introduce ourselves
                        if corrections is None:
                            corrections = []
                        corrections.insert(0, pack_alive(self.name, me.incarnation, me.blob))
            elif tag == TAG_ACK:
                self._on_ack(w[1], out)
            elif tag == TAG_NACK:
                p = self._probe
                if p is not None and p.seq == w[1] and p.indirect_sent:
                    p.nacks += 1
                    self.stats.nacks_received += 1
            elif tag == TAG_INDIRECT_PING:
                self._on_indirect_ping(now, addr, w[1], w[2], (w[3], w[4]), w[5], out)
        # A member we suspect or buried is talking to us, so it lives: tell it what we
        # think, so it refutes (rate-limited). This is what heals a partition quickly:
        # the first datagrams across are answered with the news that needs refuting.
        accused = members.get(sender)
        tell: bytes | None = None
        if accused is None:
            # A member we have never heard of (it joined while we were cut off, and
            # the rumour is over): ask it to introduce itself.
            last = self._told.get(sender)
            if last is None or now - last >= self.profile.probe_interval:
                self._told[sender] = now
                seq = self._next_seq()
                self._pings[seq] = now + self.profile.probe_interval
                out.append(self._datagram(addr, [pack_ping(seq, sender, True)]))
        elif SUSPECT <= accused.state <= DEAD:
            last = self._told.get(sender)
            if last is None or now - last >= self.profile.probe_interval or acks is not None:
                self._told[sender] = now
                if accused.state == DEAD:
                    tell = pack_dead(sender, accused.incarnation, self.name)
                else:
                    tell = pack_suspect(sender, accused.incarnation, self.name)
        if acks is not None or tell is not None or corrections is not None:
            # Answer after applying the piggybacked state, so a refutation that the
            # ping provoked (buddy system, reconnect) rides back on this very ack.
            extras = [] if acks is None else [pack_ack(seq) for seq in acks]
            if tell is not None:
                extras.insert(0, tell)
            if corrections is not None:
                room = self.codec.budget // 2
                for c in corrections:
                    room -= len(c)
                    if room < 0:
                        break
                    extras.append(c)
            out.append(self._datagram(addr, extras))
        return out

    def join(self, now: float, seeds: Iterable[Address]) -> list[Output]:
        """Announce ourselves to seed addresses and ask the shell to push-pull with each."""
        self._clock = max(self._clock, now)
        out: list[Output] = []
        me = self._me
        hello = pack_alive(self.name, me.incarnation, me.blob)
        for addr in seeds:
            seq = self._next_seq()
            self._pings[seq] = now + self.profile.probe_interval
            out.append(self._datagram(addr, [hello, pack_ping(seq, None)]))
            out.append(StartPushPull(addr, None))
        self._join_sync = True
        return out

    def leave(self, now: float) -> list[Output]:
        """Leave gracefully: others will record us as *left*, not failed.

        Keep calling :meth:`tick` until :attr:`leave_complete` (about a second on
        LAN) so the news has been gossiped, then stop.
        """
        if self._leaving:
            return []
        self._leaving = True
        self._clock = max(self._clock, now)
        me = self._me
        me.state = LEFT
        me.since = now
        self._probe = None
        self.broadcasts.queue(
            self.name, pack_dead(self.name, me.incarnation, self.name), urgent=True
        )
        out: list[Output] = []
        self._gossip(now, out)
        return out

    def update_metadata(self, now: float, meta: NodeMeta) -> list[Output]:
        """Advertise new metadata (services, labels, ports) as a new incarnation."""
        if self._leaving:
            raise LeftMeshError("cannot update metadata after leaving the mesh")
        self._clock = max(self._clock, now)
        me = self._me
        me.incarnation += 1
        me.blob = encode_meta(meta)
        me.meta = meta
        self.broadcasts.queue(self.name, pack_alive(self.name, me.incarnation, me.blob))
        return []


__all__ = [
    "Swim",
]
