"""Deterministic simulator: the real SWIM core for every node over a simulated network.

Every node is a real :class:`gossip.swim.Swim` with a real codec (msgpack, and
AES-GCM if asked), so message sizes and protocol behaviour are exactly what the
agent would do. Only the network is simulated: a priority queue of events in
virtual time, seeded randomness, per-datagram loss, 1-5 ms latency jitter,
partitions that cut a fraction of nodes off for a window, and kills.

    python -m gossip.sim --nodes 1000 --loss 0.05 --kill 10 --partition 0.3 --seed 7 --duration 120

Use :func:`run_simulation` from tests and benchmarks.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gossip.codec import Codec, Keyring, encode_state
from gossip.messages import Address, MemberState, NodeMeta, PushPullEntry, PushPullState
from gossip.profiles import LAN, Profile, get_profile
from gossip.swim import (
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MemberUpdated,
    Output,
    SendDatagram,
    StartPushPull,
    Swim,
)

_DELIVER, _WAKE, _PP_REQ, _PP_RESP, _CALL = range(5)
_INF = math.inf


@dataclass(frozen=True)
class SimConfig:
    """One simulated scenario. Times are virtual seconds; None means "pick a default"."""

    nodes: int = 200
    duration: float = 60.0
    seed: int = 1
    loss: float = 0.0
    latency: tuple[float, float] = (0.001, 0.005)
    kill: int = 0
    kill_at: float | None = None
    partition: float = 0.0
    partition_at: float | None = None
    partition_duration: float | None = None
    join_window: float | None = None
    warm_start: bool = False
    update_at: float | None = None
    late_joins: int = 3
    late_join_at: float | None = None
    profile: Profile = LAN
    encrypt: bool = False
    check_interval: float = 0.1

    def resolved_join_window(self) -> float:
        """Nodes join one by one over this window (0 with a warm start)."""
        if self.warm_start:
            return 0.0
        if self.join_window is not None:
            return self.join_window
        return max(1.0, self.nodes / 100.0)

    def schedule(self) -> dict[str, float | None]:
        """When each scenario step happens (None: not in this run)."""
        w = self.resolved_join_window()
        d = self.duration

        def pick(explicit: float | None, default: float, enabled: bool = True) -> float | None:
            t = explicit if explicit is not None else default
            return t if enabled and t < d else None

        part_at = pick(self.partition_at, w + 0.4 * d, self.partition > 0)
        part_len = self.partition_duration if self.partition_duration is not None else 0.2 * d
        return {
            "update_at": pick(self.update_at, w + 0.1 * d),
            "late_join_at": pick(self.late_join_at, w + 0.1 * d + 2.0, self.late_joins > 0),
            "kill_at": pick(self.kill_at, w + 0.2 * d, self.kill > 0),
            "partition_at": part_at,
            "heal_at": None if part_at is None else min(d, part_at + part_len),
        }


@dataclass(frozen=True)
class Dist:
    """A small latency distribution summary (seconds)."""

    count: int
    p50: float
    p99: float
    max: float

    @staticmethod
    def of(values: Sequence[float]) -> Dist | None:
        """Summary of ``values``, or None if there are none."""
        if not values:
            return None
        v = sorted(values)

        def q(p: float) -> float:
            return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]

        return Dist(len(v), q(0.5), q(0.99), v[-1])

    def __str__(self) -> str:
        return f"p50 {self.p50:.2f}s  p99 {self.p99:.2f}s  max {self.max:.2f}s  (n={self.count})"


@dataclass
class KillRecord:
    """How the mesh noticed one killed node (times relative to the kill)."""

    node: str
    killed_at: float
    first_suspect: float | None = None
    first_dead: float | None = None
    all_suspect: float | None = None
    all_dead: float | None = None


@dataclass
class SimReport:
    """What a run measured. Latencies are virtual seconds."""

    config: SimConfig
    wall_seconds: float = 0.0
    simulated_seconds: float = 0.0
    join_window: float = 0.0
    converged_at: float | None = None
    join_latency: Dist | None = None
    late_join_latency: Dist | None = None
    late_join_reached_all: float | None = None
    update_latency: Dist | None = None
    update_reached_all: float | None = None
    kills: list[KillRecord] = field(default_factory=list)
    false_positives: int = 0
    false_positive_examples: list[tuple[float, str, str]] = field(default_factory=list)
    partition_deaths: int = 0
    stale_after_heal: int = 0
    partition_at: float | None = None
    heal_at: float | None = None
    reconverged_after_heal: float | None = None
    converged_at_end: bool = False
    killed_dead_everywhere: bool = True
    datagrams: int = 0
    datagram_bytes: int = 0
    lost: int = 0
    cut: int = 0
    push_pulls: int = 0
    push_pull_bytes: int = 0
    msgs_per_member_sec: float = 0.0
    bytes_per_member_sec: float = 0.0
    steady_msgs_per_member_sec: float = 0.0
    steady_bytes_per_member_sec: float = 0.0
    max_awareness: int = 0
    codec_drops: int = 0

    def _dist(self, pick: Callable[[KillRecord], float | None]) -> Dist | None:
        return Dist.of([v for v in (pick(k) for k in self.kills) if v is not None])

    @property
    def first_suspect(self) -> Dist | None:
        """Kill to first suspicion anywhere."""
        return self._dist(lambda k: k.first_suspect)

    @property
    def first_detection(self) -> Dist | None:
        """Kill to first dead declaration anywhere."""
        return self._dist(lambda k: k.first_dead)

    @property
    def all_suspect(self) -> Dist | None:
        """Kill to every live member suspecting or having buried it."""
        return self._dist(lambda k: k.all_suspect)

    @property
    def full_dissemination(self) -> Dist | None:
        """Kill to every live member having it dead."""
        return self._dist(lambda k: k.all_dead)

    def format(self) -> str:
        """A human-readable summary."""
        c = self.config
        lines = [
            f"gossip simulation: {c.nodes} nodes, profile {c.profile.name}, loss {c.loss:.0%}, "
            f"kill {c.kill}, partition {c.partition:.0%}, seed {c.seed}, "
            f"{self.simulated_seconds:.0f} virtual s in {self.wall_seconds:.1f} wall s",
        ]

        def opt(v: object, unit: str = "s") -> str:
            if v is None:
                return "n/a"
            if isinstance(v, float):
                return f"{v:.2f}{unit}"
            return str(v)

        if c.warm_start:
            lines.append("  join: warm start (membership pre-converged at t=0)")
        else:
            lines.append(
                f"  join: {c.nodes} nodes over {self.join_window:.1f}s; every live node sees "
                f"every join at t={opt(self.converged_at)}"
            )
        lines.append(f"  join latency (node start -> seen by all live): {opt(self.join_latency)}")
        lines.append(
            f"  late join into the converged mesh reaches members: {opt(self.late_join_latency)}"
            f"; all: {opt(self.late_join_reached_all)}"
        )
        lines.append(
            f"  metadata update reaches members: {opt(self.update_latency)}; "
            f"all: {opt(self.update_reached_all)}"
        )
        if self.kills:
            lines.append(f"  failure detection, {len(self.kills)} killed:")
            lines.append(f"    first suspicion        {opt(self.first_suspect)}")
            lines.append(f"    first declared dead    {opt(self.first_detection)}")
            lines.append(f"    suspected by all       {opt(self.all_suspect)}")
            lines.append(f"    dead at all (full)     {opt(self.full_dissemination)}")
            lines.append(f"    dead everywhere by end {self.killed_dead_everywhere}")
        lines.append(
            f"  false positives (healthy, reachable node declared dead): {self.false_positives}"
        )
        if self.partition_at is not None:
            lines.append(
                f"  partition {c.partition:.0%} at t={self.partition_at:.0f}s healed at "
                f"t={opt(self.heal_at)}: {self.partition_deaths} cross-partition deaths, "
                f"{self.stale_after_heal} more from suspicions left over after the heal; "
                f"reconverged {opt(self.reconverged_after_heal)} after heal"
            )
        lines.append(f"  all live members see each other alive at end: {self.converged_at_end}")
        lines.append(
            f"  load per member: {self.msgs_per_member_sec:.1f} datagrams/s, "
            f"{self.bytes_per_member_sec / 1024:.2f} KiB/s (steady "
            f"{self.steady_msgs_per_member_sec:.1f}/s, "
            f"{self.steady_bytes_per_member_sec / 1024:.2f} KiB/s); "
            f"push-pull {self.push_pulls} exchanges, {self.push_pull_bytes / 1e6:.1f} MB"
        )
        lines.append(
            f"  network: {self.datagrams} datagrams, {self.lost} lost, {self.cut} cut by "
            f"partition; max awareness score {self.max_awareness}; codec drops {self.codec_drops}"
        )
        return "\n".join(lines)


def node_name(i: int) -> str:
    """The simulated node's name."""
    return f"n{i:05d}"


def node_addr(i: int) -> Address:
    """The simulated node's gossip address."""
    return (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 15946)


def node_meta(i: int, version: int = 0) -> NodeMeta:
    """Realistic metadata: one service with version and zone labels."""
    return NodeMeta.create(
        node_addr(i)[0],
        services={f"svc-{i % 20}": {"version": "v1", "zone": "abc"[i % 3]}},
        version=version,
    )


class Simulation:
    """One run. Construct, then :meth:`run`."""

    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        n = config.nodes
        if n < 2:
            raise ValueError("a simulation needs at least 2 nodes")
        self.n = n
        self.rng = random.Random(config.seed)
        self.net_rng = random.Random(config.seed * 7919 + 1)
        self.names = [node_name(i) for i in range(n)]
        self.addrs = [node_addr(i) for i in range(n)]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.addr_index = {a: i for i, a in enumerate(self.addrs)}
        self.swims: list[Swim | None] = [None] * n
        self.up = [False] * n
        self.killed = [False] * n
        self.wake_at = [_INF] * n
        self.side = [0] * n
        self.partitioned = False
        self.live = 0
        self.heap: list[tuple[float, int, int, object, object, object]] = []
        self.counter = itertools.count()
        self.now = 0.0
        self.keyring = Keyring([bytes(range(32))]) if config.encrypt else None
        # metrics
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
        self.rep = SimReport(config)
        self.sched = config.schedule()
        self.per_second_msgs: dict[int, int] = {}
        self.per_second_bytes: dict[int, int] = {}
        self.grace = config.profile.suspicion_max(n) + 2 * config.profile.probe_interval

    # --- plumbing -----------------------------------------------------------------

    def _push(self, t: float, kind: int, a: object, b: object = None, c: object = None) -> None:
        heapq.heappush(self.heap, (t, next(self.counter), kind, a, b, c))

    def _reschedule(self, i: int, swim: Swim) -> None:
        d = swim.next_deadline()
        if d < self.wake_at[i]:
            self.wake_at[i] = d
            self._push(d if d > self.now else self.now, _WAKE, i, d)

    def _reachable(self, i: int, j: int) -> bool:
        return self.up[j] and (not self.partitioned or self.side[i] == self.side[j])

    def _emit(self, i: int, outs: list[Output]) -> None:
        now = self.now
        for o in outs:
            if type(o) is SendDatagram:
                data = o.data
                size = len(data)
                self.rep.datagrams += 1
                self.rep.datagram_bytes += size
                sec = int(now)
                self.per_second_msgs[sec] = self.per_second_msgs.get(sec, 0) + 1
                self.per_second_bytes[sec] = self.per_second_bytes.get(sec, 0) + size
                j = self.addr_index.get(o.addr)
                if j is None or not self.up[j]:
                    continue
                if self.partitioned and self.side[i] != self.side[j]:
                    self.rep.cut += 1
                    continue
                rng = self.net_rng
                if self.cfg.loss and rng.random() < self.cfg.loss:
                    self.rep.lost += 1
                    continue
                lo, hi = self.cfg.latency
                self._push(now + lo + (hi - lo) * rng.random(), _DELIVER, j, self.addrs[i], data)
            elif type(o) is StartPushPull:
                j = self.addr_index.get(o.addr)
                swim = self.swims[i]
                if j is None or swim is None or not self._reachable(i, j):
                    continue
                state = swim.push_pull_state()
                self.rep.push_pulls += 1
                self.rep.push_pull_bytes += len(state)
                self._push(now + 2 * self.cfg.latency[1], _PP_REQ, j, i, state)
            else:
                self._observe(i, o)

    # --- metrics --------------------------------------------------------------------

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

    # --- scenario -------------------------------------------------------------------

    def _make(self, i: int, now: float) -> Swim:
        cfg = self.cfg
        codec = (
            Codec(self.names[i], keyring=self.keyring, epoch=1)
            if self.keyring is not None
            else Codec(self.names[i], insecure=True, epoch=1)
        )
        swim = Swim(
            self.names[i],
            node_meta(i),
            codec=codec,
            profile=cfg.profile,
            rng=random.Random(cfg.seed * 1_000_003 + i),
            now=now,
        )
        self.swims[i] = swim
        self.up[i] = True
        self.live += 1
        self.started_at[i] = now
        return swim

    def _start_node(self, i: int) -> None:
        now = self.now
        earlier = [j for j in range(i) if self.up[j]] if i else []
        swim = self._make(i, now)
        if earlier:
            seed = self.rng.choice(earlier)
            self._emit(i, swim.join(now, [self.addrs[seed]]))
        self._reschedule(i, swim)

    def _warm_start(self) -> None:
        first = self.n - len(self.late)
        entries = tuple(
            PushPullEntry(self.names[i], 0, MemberState.ALIVE, node_meta(i)) for i in range(first)
        )
        state = encode_state(PushPullState("sim-bootstrap", entries))
        for i in range(first):
            swim = self._make(i, 0.0)
            swim.restore(0.0, state)  # events ignored: we set the counters directly
            self._reschedule(i, swim)
        for j in range(first):
            self.alive_view[j] = first - 1
            self.join_done[j] = 0.0

    def _kill(self) -> None:
        candidates = [i for i in range(1, self.n) if self.up[i] and i != self.update_node]
        victims = self.rng.sample(candidates, min(self.cfg.kill, len(candidates)))
        for j in victims:
            self._take_down(j)
            self.killed[j] = True
            self.kill_records[j] = KillRecord(self.names[j], self.now)
            self.accusers[j] = set()

    def _take_down(self, i: int) -> None:
        swim = self.swims[i]
        self.up[i] = False
        self.live -= 1
        if swim is not None:
            for m in swim.live_members():
                self.alive_view[self.index[m.name]] -= 1

    def _partition(self) -> None:
        ups = [i for i in range(self.n) if self.up[i]]
        cut = set(self.rng.sample(ups, round(self.cfg.partition * len(ups))))
        for i in range(self.n):
            self.side[i] = 1 if i in cut else 0
        self.partitioned = True

    def _heal(self) -> None:
        self.partitioned = False

    def _update(self) -> None:
        ups = [i for i in range(self.n) if self.up[i]]
        if not ups:
            return
        u = self.rng.choice(ups)
        swim = self.swims[u]
        assert swim is not None
        meta = swim.meta.with_services({f"svc-{u % 20}": {"version": "v2", "zone": "a"}})
        self.update_node = u
        self.update_version = meta.version
        self.update_audience = {i for i in ups if i != u}
        self.update_started = self.now
        self._emit(u, swim.update_metadata(self.now, meta))
        self._reschedule(u, swim)

    # --- main loop ------------------------------------------------------------------

    def run(self) -> SimReport:
        """Run the scenario to the end and return what was measured."""
        # Millions of long-lived, acyclic objects: the cyclic collector would rescan them
        # over and over for nothing.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> SimReport:
        cfg = self.cfg
        wall = time.perf_counter()
        w = cfg.resolved_join_window()
        end = cfg.duration
        self.rep.join_window = w
        if cfg.warm_start:
            self._warm_start()
        else:
            first = self.n - len(self.late)
            for i in range(first):
                self._push(i * w / first, _CALL, self._start_node_cb(i))
        s = self.sched
        if s["update_at"] is not None:
            self._push(s["update_at"], _CALL, self._update)
        late_at = s["late_join_at"]
        if late_at is not None:
            for k, j in enumerate(sorted(self.late)):
                self._push(late_at + 2.0 * k, _CALL, self._start_node_cb(j))
        if s["kill_at"] is not None:
            self._push(s["kill_at"], _CALL, self._kill)
        if s["partition_at"] is not None:
            self._push(s["partition_at"], _CALL, self._partition)
            self._push(s["heal_at"] or end, _CALL, self._heal)
            self.rep.partition_at = s["partition_at"]
            self.rep.heal_at = s["heal_at"]
        self._push(cfg.check_interval, _CALL, self._check)
        heap = self.heap
        swims = self.swims
        up = self.up
        wake_at = self.wake_at
        pop = heapq.heappop
        while heap:
            t, _, kind, a, b, c = pop(heap)
            if t > end:
                break
            self.now = t
            if kind == _DELIVER:
                i = a  # type: ignore[assignment]
                assert isinstance(i, int)
                if not up[i]:
                    continue
                swim = swims[i]
                assert swim is not None
                outs = swim.handle_datagram(t, b, c)  # type: ignore[arg-type]
                if outs:
                    self._emit(i, outs)
                self._reschedule(i, swim)
            elif kind == _WAKE:
                i = a  # type: ignore[assignment]
                assert isinstance(i, int)
                if not up[i] or wake_at[i] != b:
                    continue
                wake_at[i] = _INF
                swim = swims[i]
                assert swim is not None
                outs = swim.tick(t)
                if outs:
                    self._emit(i, outs)
                self._reschedule(i, swim)
            elif kind == _PP_REQ:
                self._pp_request(a, b, c)  # type: ignore[arg-type]
            elif kind == _PP_RESP:
                self._pp_response(a, b, c)  # type: ignore[arg-type]
            else:
                assert callable(a)
                a()
        self.now = end
        return self._finish(time.perf_counter() - wall)

    def _start_node_cb(self, i: int) -> Callable[[], None]:
        return lambda: self._start_node(i)

    def _pp_request(self, j: int, i: int, state: bytes) -> None:
        swim = self.swims[j]
        if swim is None or not self._reachable(i, j):
            return
        self._emit(j, swim.merge_push_pull(self.now, state))
        self._reschedule(j, swim)
        if not self._reachable(j, i):
            return
        resp = swim.push_pull_state()
        self.rep.push_pull_bytes += len(resp)
        self._push(self.now + 2 * self.cfg.latency[1], _PP_RESP, i, j, resp)

    def _pp_response(self, i: int, j: int, state: bytes) -> None:
        swim = self.swims[i]
        if swim is None or not self._reachable(j, i):
            return
        self._emit(i, swim.merge_push_pull(self.now, state))
        self._reschedule(i, swim)

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


def run_simulation(config: SimConfig) -> SimReport:
    """Run one seeded scenario and return its measurements."""
    return Simulation(config).run()


def _parse(argv: Sequence[str] | None) -> SimConfig:
    ap = argparse.ArgumentParser(
        prog="python -m gossip.sim",
        description="Run the real SWIM core for N nodes over a simulated network.",
    )
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0, help="per-datagram loss, 0..1")
    ap.add_argument("--kill", type=int, default=0, help="nodes to kill after joining")
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--partition", type=float, default=0.0, help="fraction of nodes cut off")
    ap.add_argument("--partition-at", type=float, default=None)
    ap.add_argument("--partition-duration", type=float, default=None)
    ap.add_argument("--join-window", type=float, default=None)
    ap.add_argument("--warm-start", action="store_true", help="start with converged membership")
    ap.add_argument("--update-at", type=float, default=None)
    ap.add_argument("--late-joins", type=int, default=3, help="nodes joining a converged mesh")
    ap.add_argument("--profile", default="lan", choices=["lan", "wan", "local"])
    ap.add_argument("--encrypt", action="store_true", help="seal datagrams with AES-256-GCM")
    ns = ap.parse_args(argv)
    if not 0 <= ns.loss < 1 or not 0 <= ns.partition < 1:
        ap.error("--loss and --partition are fractions in [0, 1)")
    return SimConfig(
        nodes=ns.nodes,
        duration=ns.duration,
        seed=ns.seed,
        loss=ns.loss,
        kill=ns.kill,
        kill_at=ns.kill_at,
        partition=ns.partition,
        partition_at=ns.partition_at,
        partition_duration=ns.partition_duration,
        join_window=ns.join_window,
        warm_start=ns.warm_start,
        update_at=ns.update_at,
        late_joins=ns.late_joins,
        profile=get_profile(ns.profile),
        encrypt=ns.encrypt,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    cfg = _parse(argv)
    report = run_simulation(cfg)
    print(report.format())
    for t, obs, subj in report.false_positive_examples[:5]:
        print(f"  false positive: t={t:.2f}s {obs} declared {subj} dead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
