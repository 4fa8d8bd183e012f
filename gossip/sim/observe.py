"""Reporting: membership events turned into join, detection, false-positive and load figures."""

from __future__ import annotations

from gossip.sim.config import SimConfig
from gossip.sim.network import _CALL, _INF, SimNetwork
from gossip.sim.report import Dist, KillRecord, SimReport
from gossip.swim import MemberDead, MemberJoined, MemberLeft, MemberSuspect, MemberUpdated


class Observer(SimNetwork):
    """Counts what the nodes see, cheaply (O(N) counters, no table scans), for the report."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        n = self.n
        self.alive_view = [0] * n  # live observers that see node j alive or suspect
        self.started_at = [_INF] * n
        self.join_done: dict[int, float] = {}
        self.kill_records: dict[int, KillRecord] = {}
        self.accusers: dict[int, set[int]] = {}
        self.update_node: int | None = None
        self.update_version = 0
        self.update_started = 0.0
        self.update_seen: list[float] = []
        self.late = set(range(self.n - config.late_joins, self.n)) if config.late_joins else set()
        self.late_seen: dict[int, dict[int, float]] = {j: {} for j in self.late}
        self.update_audience: set[int] = set()  # up at the update, not yet seen it
        self.grace = config.profile.suspicion_max(n) + 2 * config.profile.probe_interval

    def _observe(self, i: int, ev: object) -> None:
        if not self.up[i]:
            return
        now = self.now
        t = type(ev)
        if t is MemberJoined:
            assert isinstance(ev, MemberJoined)
            j = self.index[ev.member.name]
            self.alive_view[j] += 1
            if j in self.late and self.up[j] and self.started_at[i] <= self.started_at[j]:
                self.late_seen[j].setdefault(i, now - self.started_at[j])
            if j not in self.join_done and self.up[j] and self.alive_view[j] >= self.live - 1:
                self.join_done[j] = now
        elif t is MemberSuspect:
            assert isinstance(ev, MemberSuspect)
            j = self.index[ev.member.name]
            rec = self.kill_records.get(j)
            if rec is not None:
                if rec.first_suspect is None:
                    rec.first_suspect = now - rec.killed_at
                self.accusers[j].add(i)
        elif t is MemberDead or t is MemberLeft:
            assert isinstance(ev, MemberDead | MemberLeft)
            j = self.index[ev.member.name]
            self.alive_view[j] -= 1
            rec = self.kill_records.get(j)
            if rec is not None:
                if rec.first_dead is None:
                    rec.first_dead = now - rec.killed_at
                self.accusers[j].add(i)
            elif t is MemberDead:
                self._false_positive_check(i, j)
        elif t is MemberUpdated:
            assert isinstance(ev, MemberUpdated)
            m = ev.member
            if (
                self.update_node is not None
                and m.name == self.names[self.update_node]
                and m.meta.version == self.update_version
                and i in self.update_audience
            ):
                self.update_audience.discard(i)
                self.update_seen.append(now - self.update_started)

    def _false_positive_check(self, i: int, j: int) -> None:
        now = self.now
        p_at, h_at = self.sched["partition_at"], self.sched["heal_at"]
        if p_at is not None and h_at is not None and self.side[i] != self.side[j]:
            if p_at <= now <= h_at:
                self.rep.partition_deaths += 1  # expected: they cannot reach each other
                return
            if h_at < now <= h_at + self.grace:
                # A suspicion opened during the partition whose refutation missed us.
                self.rep.stale_after_heal += 1
                return
        self.rep.false_positives += 1
        if len(self.rep.false_positive_examples) < 20:
            self.rep.false_positive_examples.append((now, self.names[i], self.names[j]))

    def _all_see_all(self) -> bool:
        want = self.live - 1
        view = self.alive_view
        return all(view[j] == want for j in range(self.n) if self.up[j])

    def _check(self) -> None:
        """Periodic convergence checks (cheap: O(N) counters, no table scans)."""
        now = self.now
        want = self.live - 1
        for j, rec in self.kill_records.items():
            if rec.all_dead is None and self.alive_view[j] <= 0:
                rec.all_dead = now - rec.killed_at
            if rec.all_suspect is None:
                acc = sum(1 for i in self.accusers[j] if self.up[i])
                if acc >= want:
                    rec.all_suspect = now - rec.killed_at
        for j in range(self.n):
            if self.up[j] and j not in self.join_done and self.alive_view[j] >= want:
                self.join_done[j] = now
        w = self.cfg.resolved_join_window()
        if self.rep.converged_at is None and now >= w and self._all_see_all():
            self.rep.converged_at = now
        h = self.sched["heal_at"]
        if (
            h is not None
            and now >= h
            and self.rep.reconverged_after_heal is None
            and self._all_see_all()
        ):
            self.rep.reconverged_after_heal = now - h
        self._push(now + self.cfg.check_interval, _CALL, self._check)

    def _finish(self, wall: float) -> SimReport:
        rep = self.rep
        cfg = self.cfg
        rep.wall_seconds = wall
        rep.simulated_seconds = cfg.duration
        rep.join_latency = Dist.of(
            [
                t - self.started_at[j]
                for j, t in self.join_done.items()
                if not cfg.warm_start and j not in self.late
            ]
        )
        rep.update_latency = Dist.of(self.update_seen)
        # "all" = everyone up at the update and still up at the end saw it
        if self.update_node is not None and not any(self.up[i] for i in self.update_audience):
            rep.update_reached_all = max(self.update_seen, default=None)
        late = [t for seen in self.late_seen.values() for t in seen.values()]
        rep.late_join_latency = Dist.of(late)
        done = [j for j in self.late_seen if j in self.join_done]
        if self.late and len(done) == len(self.late):
            rep.late_join_reached_all = max(self.join_done[j] - self.started_at[j] for j in done)
        rep.kills = [self.kill_records[j] for j in sorted(self.kill_records)]
        rep.killed_dead_everywhere = all(self.alive_view[j] <= 0 for j in self.kill_records)
        rep.converged_at_end = self._all_see_all()
        members = cfg.nodes
        rep.msgs_per_member_sec = rep.datagrams / members / cfg.duration
        rep.bytes_per_member_sec = rep.datagram_bytes / members / cfg.duration
        # Steady load: the median second of the last third of the run, when joins,
        # kills and their news have usually settled.
        last = range(int(cfg.duration * 2 / 3), int(cfg.duration))
        if last:
            msgs = sorted(self.per_second_msgs.get(s, 0) for s in last)
            byts = sorted(self.per_second_bytes.get(s, 0) for s in last)
            rep.steady_msgs_per_member_sec = msgs[len(msgs) // 2] / max(1, self.live)
            rep.steady_bytes_per_member_sec = byts[len(byts) // 2] / max(1, self.live)
        rep.max_awareness = max((s.awareness.score for s in self.swims if s is not None), default=0)
        rep.codec_drops = sum(s.codec.dropped for s in self.swims if s is not None)
        return rep
