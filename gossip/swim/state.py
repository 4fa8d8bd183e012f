"""The state every part of the SWIM core shares, and the datagram and gossip plumbing.

:class:`SwimState` holds one node's member table, timers and queues, answers
questions about them, and builds datagrams (our extras first, then as many pending
broadcasts as fit). The protocol parts are layered on it: verdicts (``verdicts.py``),
probing (``probe.py``), anti-entropy (``antientropy.py``) and the inputs
(``node.py``, :class:`~gossip.swim.Swim`).
"""

from __future__ import annotations

import random

from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.codec import Codec, DropReason, encode_meta
from gossip.errors import GossipConfigError
from gossip.messages import Address, Member, MemberState, NodeMeta
from gossip.profiles import LAN, Profile
from gossip.suspicion import Suspicion
from gossip.swim.outputs import Output, SendDatagram, SwimStats
from gossip.swim.table import _Node, _Probe, _Relay, _Roster

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT
_SEQ_MOD = 1 << 32
_INF = float("inf")


class SwimState:
    """One node's membership state; the protocol's parts are the subclasses."""

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
            raise GossipConfigError("the codec must be built for this node's name")
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

    # --- shared helpers -----------------------------------------------------------

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

    def _probe_list_add(self, name: str) -> None:
        """Insert a new member at a random place in what is left of this round."""
        lst = self._probe_list
        lst.append(name)
        lo = self._probe_idx
        i = lo + int(self.rng.random() * (len(lst) - lo))
        if i < len(lst) - 1:
            lst[i], lst[-1] = lst[-1], lst[i]

    def _settle_time(self, n: int) -> float:
        """Roughly how long a rumour keeps being retransmitted in a mesh of ``n``."""
        p = self.profile
        return p.probe_interval + p.gossip_interval * p.retransmit_limit(n)

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
