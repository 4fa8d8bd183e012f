"""The scenario runner: nodes join, one updates its metadata, some die, a partition heals."""

from __future__ import annotations

import gc
import heapq
import random
import time
from collections.abc import Callable

from gossip.codec import Codec, encode_state
from gossip.messages import MemberState, PushPullEntry, PushPullState
from gossip.sim.config import SimConfig
from gossip.sim.network import _CALL, _DELIVER, _INF, _PP_REQ, _PP_RESP, _WAKE, node_meta
from gossip.sim.observe import Observer
from gossip.sim.report import KillRecord, SimReport
from gossip.swim import Swim


class Simulation(Observer):
    """One run. Construct, then :meth:`run`."""

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


def run_simulation(config: SimConfig) -> SimReport:
    """Run one seeded scenario and return its measurements."""
    return Simulation(config).run()
