"""Verdicts: alive news, suspicion and death, and refuting what is said against us.

A suspicion opens a Lifeguard timer that shrinks with independent confirmations;
a suspect that announces a higher incarnation before it fires is alive again. A
third party's "dead" about a member we do not already suspect, or from a judge we
believe dead, counts only as an accusation (see :meth:`Verdicts._verdict_ripe`).
"""

from __future__ import annotations

import heapq

from gossip.codec import decode_meta, pack_alive, pack_dead, pack_suspect
from gossip.suspicion import Suspicion
from gossip.swim.outputs import (
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MemberUpdated,
    Output,
)
from gossip.swim.state import _INF, ALIVE, DEAD, LEFT, SUSPECT, SwimState
from gossip.swim.table import _Node


class Verdicts(SwimState):
    """How news about a member (ourselves included) changes what we believe of it."""

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
        return s is None or now - s.start >= 0.5 * s.min_timeout
