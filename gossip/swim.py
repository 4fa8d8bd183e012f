"""SWIM membership with Lifeguard, as a sans-IO state machine.

The machine never touches a socket or a clock. Its owner feeds it datagrams and
the current time and carries out the actions it returns::

    actions = swim.handle_datagram(now, addr, data)   # a UDP datagram arrived
    actions = swim.tick(now)                          # at swim.next_deadline()
    actions = swim.join(now, seeds) / leave(now) / update_metadata(now, meta)
    body    = swim.push_pull_state()                  # full-state exchange (HTTP/2)
    actions = swim.merge_push_pull(now, peer_body)

Outputs are :class:`SendDatagram` and :class:`StartPushPull` actions and
``Member*`` events. Because time is only ever a parameter, the same core runs
under trio in the agent and under the deterministic simulator (``gossip.sim``)
with thousands of instances in one process.

Protocol, in short: each probe period one member (round-robin over a list
reshuffled every round) gets a Ping; if no Ack comes within the probe timeout,
``indirect_checks`` helpers ping it for us and relay its Ack or send a Nack.
With no Ack by the end of the period it becomes *suspect*; a suspect that
does not refute (by announcing a higher incarnation) before its Lifeguard
suspicion timer fires is declared *dead*. Membership changes ride on every
datagram (piggyback) and on a gossip fan-out every gossip interval, each sent a
limited number of times; a periodic push-pull exchanges whole tables.
Lifeguard's awareness stretches our own timeouts when we are the unhealthy one;
the buddy system tells a suspect directly.

Beyond memberlist (each measured with ``gossip.sim``, mostly for partitions):

* a third party's "dead" verdict about a member we do not already suspect, or
  from a judge we believe dead, counts only as an accusation; we need to have
  suspected the member for half the minimum suspicion timeout ourselves;
* a member we suspect or buried that talks to us is told so, and answers to a
  stale accusation carry the refutation we know of: both make a healed
  partition's refutations cross at the first datagrams;
* our own refutation rides in front of every datagram; among equally sent
  broadcasts, alive news goes before accusations;
* members we believe dead are pinged now and then with that news, revived
  members are probed next, and revivals trigger extra push-pulls;
* a joiner does a second push-pull once the rumours in flight at its join have
  run their course; a member that talks to us but is unknown to us is asked to
  introduce itself (``Ping.introduce``).
"""

from __future__ import annotations

import heapq
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.codec import (
    TAG_ACK,
    TAG_ALIVE,
    TAG_INDIRECT_PING,
    TAG_NACK,
    TAG_PING,
    TAG_SUSPECT,
    Codec,
    DropReason,
    decode_meta,
    encode_meta,
    encode_state_entry,
    join_state,
    open_state,
    pack_ack,
    pack_alive,
    pack_dead,
    pack_indirect_ping,
    pack_nack,
    pack_ping,
    pack_suspect,
)
from gossip.messages import Address, Member, MemberState, NodeMeta
from gossip.profiles import LAN, Profile
from gossip.suspicion import Suspicion

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT
_SEQ_MOD = 1 << 32
_INF = float("inf")
NACK_FRACTION = 0.8  # of the probe timeout a helper waits before answering Nack


# --- outputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``data`` as one UDP datagram to ``addr``."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Exchange full state with the member at ``addr`` (``node`` is None for a seed).

    The shell POSTs :meth:`Swim.push_pull_state` to the peer, which merges it
    *before* answering with its own state, and merges the answer with
    :meth:`Swim.merge_push_pull`.
    """

    addr: Address
    node: str | None


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member appeared, or came back after being dead or gone."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberSuspect:
    """A member stopped answering; it is kept (deprioritised) while it may refute."""

    member: Member
    accuser: str


@dataclass(frozen=True, slots=True)
class MemberDead:
    """A member failed: take it out of service now."""

    member: Member
    accuser: str


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """A member left on purpose."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """A member changed its metadata or recovered from suspicion."""

    member: Member


Action = SendDatagram | StartPushPull
Event = MemberJoined | MemberSuspect | MemberDead | MemberLeft | MemberUpdated
Output = Action | Event


@dataclass(slots=True)
class SwimStats:
    """Counters for metrics (``peermesh_gossip_*``) and tests."""

    probes: int = 0
    probe_acks: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    nacks_received: int = 0
    refutations: int = 0
    suspicions: int = 0
    push_pulls: int = 0
    push_pull_rejected: int = 0
    reconnect_pings: int = 0


# --- internal records -----------------------------------------------------------------


class _Node:
    __slots__ = ("blob", "incarnation", "meta", "name", "since", "state")

    def __init__(
        self, name: str, incarnation: int, state: MemberState, blob: bytes, since: float
    ) -> None:
        self.name = sys.intern(name)  # one string per name, however many tables hold it
        self.incarnation = incarnation
        self.state = state
        self.blob = blob  # metadata as sent on the wire: cheap to compare and resend
        self.meta = decode_meta(blob)
        self.since = since

    def snapshot(self) -> Member:
        return Member(self.name, self.incarnation, self.state, self.meta, self.since)


class _Probe:
    __slots__ = (
        "end_at",
        "expected_nacks",
        "indirect_sent",
        "nacks",
        "seq",
        "target",
        "timeout_at",
    )

    def __init__(self, target: str, seq: int, timeout_at: float, end_at: float) -> None:
        self.target = target
        self.seq = seq
        self.timeout_at = timeout_at
        self.end_at = end_at
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


class _Relay:
    """We are helping someone probe ``target`` indirectly."""

    __slots__ = ("expires", "nack_at", "requester", "seq", "want_nack")

    def __init__(
        self, requester: Address, seq: int, want_nack: bool, nack_at: float, expires: float
    ) -> None:
        self.requester = requester
        self.seq = seq
        self.want_nack = want_nack
        self.nack_at = nack_at
        self.expires = expires


class _Roster:
    """A set of names with O(1) add, remove and uniform random sampling."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return name in self.pos

    def add(self, name: str) -> None:
        if name not in self.pos:
            self.pos[name] = len(self.items)
            self.items.append(name)

    def remove(self, name: str) -> None:
        i = self.pos.pop(name, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def sample(self, rng: random.Random, k: int) -> list[str]:
        k = min(k, len(self.items))
        return rng.sample(self.items, k) if k else []


class Swim:
    """One node's view of the mesh membership, driven by bytes and ``now``.

    ``rng`` makes every random choice (probe order, helpers, gossip targets),
    so a seeded Random gives a reproducible run. ``incarnation`` lets a
    restarted node start above what the mesh remembers of it (pass a persisted
    or clock-derived value); otherwise it refutes its way up on its own.
    """

    def __init__(
        self,
        name: str,
        meta: NodeMeta,
        *,
        codec: Codec,
        profile: Profile = LAN,
        rng: random.Random | None = None,
        now: float = 0.0,
        incarnation: int = 0,
    ) -> None:
        if codec.sender != name:
            raise ValueError("the codec must be built for this node's name")
        self.name = name
        self.profile = profile
        self.codec = codec
        self.rng = rng if rng is not None else random.Random()
        self.awareness = Awareness(profile.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(profile.retransmit_mult)
        self.stats = SwimStats()
        self._me = _Node(name, incarnation, ALIVE, encode_meta(meta), now)
        self._members: dict[str, _Node] = {name: self._me}
        self._pool = _Roster()  # alive and suspect members other than us
        self._buried = _Roster()  # dead (not left) members, for reconnects
        self._recent_dead: dict[str, float] = {}  # gossip to the dead for a while
        self._probe_list: list[str] = []
        self._probe_idx = 0
        self._probe: _Probe | None = None
        self._seq = self.rng.randrange(_SEQ_MOD)
        self._relays: dict[int, _Relay] = {}
        self._told: dict[str, float] = {}  # when we last told a member it is accused
        self._corrected: dict[str, float] = {}  # when we last answered a stale accusation
        self._pings: dict[int, float] = {}  # join/reconnect pings awaiting an ack
        self._suspicions: dict[str, Suspicion] = {}
        self._suspicion_heap: list[tuple[float, str]] = []
        self._leaving = False
        self._join_sync = False
        self._sync_at = _INF  # an extra push-pull soon after joining or a heal
        self._sync_followups = 0
        self._next_heal_sync = now
        self._clock = now  # the latest `now` we were given
        rng_ = self.rng
        p = profile
        # Stagger the periodic work so a mesh started at once does not beat in step.
        self._next_probe_at = now + rng_.uniform(0, p.probe_interval)
        self._next_gossip_at = now + rng_.uniform(0, p.gossip_interval)
        self._next_push_pull_at = now + rng_.uniform(0.5, 1.0) * p.push_pull_interval
        self._push_pull_period = p.push_pull_interval
        self._next_reconnect_at = now + rng_.uniform(0.5, 1.5) * p.reconnect_interval
        self._reap_interval = min(p.gossip_to_the_dead_time, p.dead_reap_time)
        self._next_reap_at = now + self._reap_interval

    # --- introspection ------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        """Our own incarnation number; it only grows."""
        return self._me.incarnation

    @property
    def meta(self) -> NodeMeta:
        """Our own advertised metadata."""
        return self._me.meta

    @property
    def leaving(self) -> bool:
        """True once :meth:`leave` was called."""
        return self._leaving

    @property
    def leave_complete(self) -> bool:
        """True when our leave message has been sent as often as the protocol wants."""
        return self._leaving and self.name not in self.broadcasts

    @property
    def num_live(self) -> int:
        """Alive and suspect members, us included: the N of the protocol's formulas."""
        return len(self._pool) + 1

    def member(self, name: str) -> Member | None:
        """One member as we see it (us included), or None if unknown."""
        m = self._members.get(name)
        return None if m is None else m.snapshot()

    def members(self) -> list[Member]:
        """Every member we know of, in any state, us included."""
        return [m.snapshot() for m in self._members.values()]

    def live_members(self) -> list[Member]:
        """Alive and suspect members other than us: what the proxy may route to."""
        return [self._members[n].snapshot() for n in self._pool.items]

    def suspicion_deadline(self, name: str) -> float | None:
        """When an open suspicion about ``name`` will declare it dead (None: none open)."""
        s = self._suspicions.get(name)
        return None if s is None else s.deadline

    def scaled_probe_timeout(self) -> float:
        """The direct-ack timeout after Lifeguard's awareness stretch."""
        return self.awareness.scale(self.profile.probe_timeout)

    def scaled_probe_interval(self) -> float:
        """The probe period after Lifeguard's awareness stretch."""
        return self.awareness.scale(self.profile.probe_interval)

    @property
    def drops(self) -> dict[DropReason, int]:
        """Datagrams refused by the codec, by reason."""
        return self.codec.drops

    # --- public inputs ------------------------------------------------------------

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
            raise RuntimeError("cannot update metadata after leaving the mesh")
        self._clock = max(self._clock, now)
        me = self._me
        me.incarnation += 1
        me.blob = encode_meta(meta)
        me.meta = meta
        self.broadcasts.queue(self.name, pack_alive(self.name, me.incarnation, me.blob))
        return []

    def push_pull_state(self) -> bytes:
        """Our whole member table, for the full-state exchange."""
        entries = [
            encode_state_entry(m.name, m.incarnation, m.state, m.blob)
            for m in self._members.values()
        ]
        return join_state(self.name, entries)

    def merge_push_pull(self, now: float, data: bytes) -> list[Output]:
        """Merge a peer's full state. A responder merges *before* answering with its own.

        Changes it brings are gossiped on (they are gaps that rumours missed),
        except third-party news in the answer to our own join: that is the
        peer's whole table, new to us only.
        """
        joining = self._join_sync
        self._join_sync = False
        return self._merge(now, data, joining, joining)

    def restore(self, now: float, data: bytes) -> list[Output]:
        """Adopt a full state (ours from a snapshot, or a pre-converged start) quietly.

        Like the answer to a join, but with no follow-up exchange: the state is
        taken as complete. Nothing in it is gossiped on, except that we refute
        what it says against us.
        """
        return self._merge(now, data, True, False)

    def _merge(self, now: float, data: bytes, joining: bool, resync: bool) -> list[Output]:
        opened = open_state(data)
        if isinstance(opened, DropReason) or opened[0] == self.name:
            self.stats.push_pull_rejected += 1
            return []
        sender, entries = opened
        self.stats.push_pulls += 1
        self._clock = max(self._clock, now)
        if resync:
            # The table we just got is a snapshot: joins that were still being gossiped
            # when it was taken may be missing. One more exchange once that gossip has
            # run its course closes the gap, instead of waiting a full push-pull period.
            self._sync_at = now + self._settle_time(len(entries))
            self._sync_followups = 1
        out: list[Output] = []
        me = self._me
        members = self._members
        for node, inc, state, blob in entries:
            if node == self.name:
                if state == ALIVE:
                    self._alive(now, node, inc, blob, out, True)
                elif inc >= me.incarnation:
                    if not self._leaving:
                        self._refute(inc)
                else:
                    self._reannounce()
                continue
            # Changes learned here are gaps in what gossip brought us, and maybe in
            # what it brought others: pass them on. Not on joining, though: then the
            # whole table is new to us and old news to everyone else.
            news = not joining
            if state == ALIVE:
                self._alive(now, node, inc, blob, out, news)
                continue
            m = members.get(node)
            if m is None or inc < m.incarnation:
                continue
            if state == LEFT:
                if m.state < DEAD:
                    self._dead(now, m, inc, node, out, news)
            else:
                # A remote "dead" is only a suspicion here: the peer may be the cut-off one.
                self._suspect(now, m, inc, sender, out, True)
        period = self.profile.push_pull_period(len(self._pool) + 1)
        if period > self._push_pull_period:
            # We just learned a much bigger mesh: spread our periodic exchanges over the
            # longer period it calls for, or a mesh that formed at once would push-pull
            # in step.
            self._push_pull_period = period
            self._next_push_pull_at = now + self.rng.uniform(0.0, period)
        return out

    # --- datagrams ----------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % _SEQ_MOD
        return self._seq

    def _datagram(self, addr: Address, extras: list[bytes]) -> SendDatagram:
        """A datagram with ``extras`` first and as many pending broadcasts as fit."""
        budget = self.codec.budget
        for e in extras:
            budget -= len(e)
        if self.broadcasts and budget > 0:
            extras = extras + self.broadcasts.get(budget, len(self._pool) + 1)
        return SendDatagram(addr, self.codec.seal(extras))

    def _gossip(self, now: float, out: list[Output]) -> None:
        targets = self._gossip_targets(now)
        n = len(self._pool) + 1
        budget = self.codec.budget
        members = self._members
        for name in targets:
            parts = self.broadcasts.get(budget, n)
            if not parts:
                return
            out.append(SendDatagram(members[name].meta.gossip_addr, self.codec.seal(parts)))

    def _gossip_targets(self, now: float) -> list[str]:
        """Random live members (suspects too: they must hear it to refute), plus the
        recently dead (so they learn it, and refute if they are not)."""
        k = self.profile.gossip_nodes
        rd = self._recent_dead
        if rd:
            horizon = now - self.profile.gossip_to_the_dead_time
            for name in [n for n, t in rd.items() if t < horizon]:
                del rd[name]
        src = self._pool
        if not rd:
            return src.sample(self.rng, k)
        pool = src.items
        dead = list(rd)
        total = len(pool) + len(dead)
        picks = self.rng.sample(range(total), min(k, total))
        return [pool[i] if i < len(pool) else dead[i - len(pool)] for i in picks]

    # --- probing ------------------------------------------------------------------

    def _probe_target(self) -> _Node | None:
        for _ in range(2):
            lst = self._probe_list
            members = self._members
            while self._probe_idx < len(lst):
                name = lst[self._probe_idx]
                self._probe_idx += 1
                m = members.get(name)
                if m is not None and m.state <= SUSPECT and m is not self._me:
                    return m
            # End of a round: a fresh random order, and only live members.
            self._probe_list = list(self._pool.items)
            self.rng.shuffle(self._probe_list)
            self._probe_idx = 0
        return None

    def _probe_list_add(self, name: str) -> None:
        """Insert a new member at a random place in what is left of this round."""
        lst = self._probe_list
        lst.append(name)
        lo = self._probe_idx
        i = lo + int(self.rng.random() * (len(lst) - lo))
        if i < len(lst) - 1:
            lst[i], lst[-1] = lst[-1], lst[i]

    def _start_probe(self, now: float, out: list[Output]) -> None:
        aw = self.awareness
        interval = aw.scale(self.profile.probe_interval)
        self._next_probe_at = now + interval
        if self._pings:
            for seq in [s for s, t in self._pings.items() if t <= now]:
                del self._pings[seq]
        m = self._probe_target()
        if m is None:
            return
        seq = self._next_seq()
        extras = []
        if m.state == SUSPECT:
            # Buddy system: tell the suspect directly, it may not have heard.
            extras.append(pack_suspect(m.name, m.incarnation, self.name))
        extras.append(pack_ping(seq, m.name))
        self._probe = _Probe(
            m.name, seq, now + aw.scale(self.profile.probe_timeout), now + interval
        )
        self.stats.probes += 1
        out.append(self._datagram(m.meta.gossip_addr, extras))

    def _send_indirect(self, p: _Probe, out: list[Output]) -> None:
        p.indirect_sent = True
        target = self._members.get(p.target)
        if target is None or target.state > SUSPECT:
            return
        k = self.profile.indirect_checks
        members = self._members
        helpers = [
            n
            for n in self._pool.sample(self.rng, k + 3)
            if n != p.target and members[n].state == ALIVE
        ][:k]
        if not helpers:
            return
        req = pack_indirect_ping(p.seq, target.name, target.meta.gossip_addr, True)
        for name in helpers:
            out.append(self._datagram(members[name].meta.gossip_addr, [req]))
        p.expected_nacks = len(helpers)
        self.stats.indirect_probes += 1

    def _probe_failed(self, now: float, p: _Probe, out: list[Output]) -> None:
        self._probe = None
        self.stats.probe_failures += 1
        # Lifeguard: missing nacks mean *we* may be the problem.
        if p.expected_nacks > 0:
            self.awareness.apply_delta(p.expected_nacks - p.nacks)
        else:
            self.awareness.apply_delta(1)
        m = self._members.get(p.target)
        if m is None or m.state > SUSPECT:
            return
        self._suspect(now, m, m.incarnation, self.name, out, True)

    def _on_ack(self, seq: int, out: list[Output]) -> None:
        p = self._probe
        if p is not None and p.seq == seq:
            self._probe = None
            self.stats.probe_acks += 1
            self.awareness.apply_delta(-1)
            return
        r = self._relays.pop(seq, None)
        if r is not None:
            out.append(self._datagram(r.requester, [pack_ack(r.seq)]))
            return
        self._pings.pop(seq, None)

    def _on_indirect_ping(
        self,
        now: float,
        addr: Address,
        their_seq: int,
        target: str,
        target_addr: Address,
        want_nack: bool,
        out: list[Output],
    ) -> None:
        seq = self._next_seq()
        p = self.profile
        # The requester asked us at its probe timeout and gives up at the end of its
        # probe period, one more probe timeout later: our nack must beat that, with
        # room for the round trip, or it cannot tell the requester anything.
        self._relays[seq] = _Relay(
            addr,
            their_seq,
            want_nack,
            now + NACK_FRACTION * p.probe_timeout,
            now + p.probe_interval,
        )
        out.append(self._datagram(target_addr, [pack_ping(seq, target)]))

    def _run_relays(self, now: float, out: list[Output]) -> None:
        for seq, r in list(self._relays.items()):
            if r.want_nack and now >= r.nack_at:
                r.want_nack = False
                out.append(self._datagram(r.requester, [pack_nack(r.seq)]))
            if now >= r.expires:
                del self._relays[seq]

    def _start_push_pull(self, out: list[Output]) -> None:
        for name in self._pool.sample(self.rng, 3):
            m = self._members[name]
            if m.state == ALIVE:
                out.append(StartPushPull(m.meta.gossip_addr, name))
                return

    def _reconnect(self, now: float, out: list[Output]) -> None:
        """Ping one member we believe dead, telling it so: if it lives, it refutes."""
        self._next_reconnect_at = now + self.profile.reconnect_interval
        picks = self._buried.sample(self.rng, 1)
        if not picks:
            return
        m = self._members[picks[0]]
        seq = self._next_seq()
        self._pings[seq] = now + self.profile.probe_interval
        self.stats.reconnect_pings += 1
        extras = [pack_dead(m.name, m.incarnation, self.name), pack_ping(seq, m.name)]
        out.append(self._datagram(m.meta.gossip_addr, extras))

    # --- state changes ------------------------------------------------------------

    def _refute(self, accused: int) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, accused) + 1
        self.awareness.apply_delta(1)
        self.stats.refutations += 1
        self.broadcasts.queue(
            self.name, pack_alive(self.name, me.incarnation, me.blob), urgent=True
        )

    def _reannounce(self) -> None:
        """Someone accuses an older incarnation of us: gossip the one we are at.

        Without this the accuser would keep us buried forever: we ignore the stale
        accusation, and our newer incarnation was gossiped where it could not reach
        it (e.g. on our side of a partition).
        """
        if not self._leaving and self.name not in self.broadcasts:
            me = self._me
            self.broadcasts.queue(
                self.name, pack_alive(self.name, me.incarnation, me.blob), urgent=True
            )

    def _alive(
        self, now: float, name: str, inc: int, blob: bytes, out: list[Output], rebroadcast: bool
    ) -> None:
        m = self._members.get(name)
        if m is self._me:
            assert m is not None
            if self._leaving or inc < m.incarnation:
                return
            if inc == m.incarnation and blob == m.blob:
                return
            # Someone advertises us newer or different than we are: out-bid it.
            self._refute(inc)
            return
        if m is None:
            m = _Node(name, inc, ALIVE, blob, now)
            self._members[m.name] = m
            self._pool.add(m.name)
            self._probe_list_add(name)
            if rebroadcast:
                self.broadcasts.queue(name, pack_alive(name, inc, blob))
            out.append(MemberJoined(m.snapshot()))
            return
        if inc <= m.incarnation:
            return
        prev = m.state
        meta_changed = blob != m.blob
        m.incarnation = inc
        if meta_changed:
            m.blob = blob
            m.meta = decode_meta(blob)
        m.state = ALIVE
        if rebroadcast:
            self.broadcasts.queue(name, pack_alive(name, inc, blob))
        if prev == ALIVE:
            if meta_changed:
                out.append(MemberUpdated(m.snapshot()))
            return
        m.since = now
        if prev == SUSPECT:
            self._suspicions.pop(name, None)
            out.append(MemberUpdated(m.snapshot()))
            return
        self._buried.remove(name)
        self._recent_dead.pop(name, None)
        self._pool.add(name)
        # Probe a revived member next: if it buried us too (a healed partition), its
        # ack tells us so and we refute at once instead of waiting for a reconnect.
        self._probe_list.insert(self._probe_idx, name)
        if now >= self._next_heal_sync and self._sync_at == _INF:
            # A revival usually means a partition healed, and then every member on the
            # far side needs reviving: more refutations than rumours carry quickly. So
            # while revivals keep coming, exchange full state with someone every couple
            # of rumour lifetimes; anti-entropy spreads what rumours have not.
            delay = 2 * self._settle_time(len(self._pool) + 1)
            self._sync_at = now + delay
            self._next_heal_sync = now + 2 * delay
        out.append(MemberJoined(m.snapshot()))

    def _suspect(
        self, now: float, m: _Node, inc: int, accuser: str, out: list[Output], rebroadcast: bool
    ) -> None:
        """``accuser`` suspects ``m`` at ``inc`` (the caller checked ``inc`` is not stale)."""
        if m is self._me:
            if not self._leaving:
                self._refute(inc)
            return
        state = m.state
        if state >= DEAD:
            return
        name = m.name
        if state == SUSPECT:
            s = self._suspicions.get(name)
            if inc > m.incarnation:
                m.incarnation = inc
            if s is not None and s.confirm(accuser):
                heapq.heappush(self._suspicion_heap, (s.deadline, name))
                if rebroadcast:
                    self.broadcasts.queue(name, pack_suspect(name, inc, accuser), accusation=True)
            return
        p = self.profile
        n = len(self._pool) + 1
        expected = p.suspicion_mult - 2
        if n - 2 < expected:
            expected = 0
        lo = p.suspicion_min(n)
        s = Suspicion(
            accuser=accuser,
            incarnation=inc,
            expected=expected,
            min_timeout=lo,
            max_timeout=p.suspicion_max_timeout_mult * lo,
            start=now,
        )
        m.incarnation = inc
        m.state = SUSPECT
        m.since = now
        self._suspicions[name] = s
        heapq.heappush(self._suspicion_heap, (s.deadline, name))
        self.stats.suspicions += 1
        if rebroadcast:
            self.broadcasts.queue(name, pack_suspect(name, inc, accuser), accusation=True)
        out.append(MemberSuspect(m.snapshot(), accuser))

    def _suspicion_expired(self, now: float, name: str, out: list[Output]) -> None:
        del self._suspicions[name]
        m = self._members.get(name)
        if m is None or m.state != SUSPECT:
            return
        self._dead(now, m, m.incarnation, self.name, out, True)

    def _dead(
        self, now: float, m: _Node, inc: int, sender: str, out: list[Output], rebroadcast: bool
    ) -> None:
        """``sender`` declares ``m`` dead at ``inc`` (``sender == m.name``: it left).

        The caller checked ``inc`` is not stale and ``m`` is not already dead or gone.
        """
        name = m.name
        if m is self._me:
            if not self._leaving:
                self._refute(inc)
            return
        left = sender == name
        if not left and sender != self.name and not self._verdict_ripe(now, m, sender):
            # Someone else's verdict is only an accusation until the accused has had a
            # fair chance, on our side, to refute it: we suspect (or confirm) and pass
            # the news on. A real failure was suspected here long before anyone
            # declared it, so the verdict is taken at once then; a stale verdict (e.g.
            # from the far side of a healed partition) cannot kill a healthy member.
            self._suspect(now, m, inc, sender, out, False)
            if rebroadcast:
                self.broadcasts.queue(name, pack_dead(name, inc, sender), accusation=True)
            return
        self._suspicions.pop(name, None)
        m.incarnation = inc
        m.state = LEFT if left else DEAD
        m.since = now
        self._pool.remove(name)
        if rebroadcast:
            self.broadcasts.queue(name, pack_dead(name, inc, sender), accusation=True)
        if left:
            out.append(MemberLeft(m.snapshot()))
        else:
            self._buried.add(name)
            self._recent_dead[name] = now
            out.append(MemberDead(m.snapshot(), sender))

    def _settle_time(self, n: int) -> float:
        """Roughly how long a rumour keeps being retransmitted in a mesh of ``n``."""
        p = self.profile
        return p.probe_interval + p.gossip_interval * p.retransmit_limit(n)

    def _verdict_ripe(self, now: float, m: _Node, judge: str) -> bool:
        """Take ``judge``'s verdict on ``m`` as final?

        Only if we have suspected ``m`` ourselves for half the minimum suspicion
        timeout (time enough for a refutation to reach us), and the judge is a
        member we believe alive: a verdict from a member we buried comes from the
        far side of a partition, about a time we know nothing of.
        """
        if m.state != SUSPECT:
            return False
        j = self._members.get(judge)
        if j is None or j.state != ALIVE:
            return False
        s = self._suspicions.get(m.name)
        return s is None or now - s.start >= 0.5 * s.min

    def _reap(self, now: float) -> None:
        """Forget the long dead: left members after gossip-to-the-dead, failed ones later."""
        p = self.profile
        left_horizon = now - p.gossip_to_the_dead_time
        dead_horizon = now - p.dead_reap_time
        gone = [
            m.name
            for m in self._members.values()
            if (m.state == LEFT and m.since < left_horizon and m is not self._me)
            or (m.state == DEAD and m.since < dead_horizon)
        ]
        horizon = now - p.probe_interval
        for name in [n for n, t in self._told.items() if t < horizon]:
            del self._told[name]
        for name in [n for n, t in self._corrected.items() if t < horizon]:
            del self._corrected[name]
        for name in gone:
            del self._members[name]
            self._buried.remove(name)
            self._recent_dead.pop(name, None)
            self.broadcasts.discard(name)
