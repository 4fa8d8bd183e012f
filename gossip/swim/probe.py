"""The probe cycle: one Ping per period, indirect probes through helpers, Nacks, reconnects.

Each probe period one member (round-robin over a list reshuffled every round)
gets a Ping; if no Ack comes within the probe timeout, ``indirect_checks``
helpers ping it for us and relay its Ack or send a Nack. With no Ack by the end
of the period it becomes suspect. Missing Nacks raise our own Lifeguard
awareness: then *we* may be the unhealthy one.
"""

from __future__ import annotations

from gossip.codec import (
    pack_ack,
    pack_dead,
    pack_indirect_ping,
    pack_nack,
    pack_ping,
    pack_suspect,
)
from gossip.messages import Address
from gossip.swim.outputs import Output
from gossip.swim.state import ALIVE, SUSPECT
from gossip.swim.table import _Node, _Probe, _Relay
from gossip.swim.verdicts import Verdicts

NACK_FRACTION = 0.8  # of the probe timeout a helper waits before answering Nack


class Prober(Verdicts):
    """Failure detection: direct and indirect probes, relays for others, reconnects."""

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


__all__ = [
    "NACK_FRACTION",
]
