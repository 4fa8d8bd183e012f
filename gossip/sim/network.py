"""The simulated network: an event queue in virtual time, loss, latency, partitions.

Datagrams and push-pull exchanges between the nodes' real SWIM cores travel as
events; a datagram to a node that is down, across a partition or lost is counted
and dropped. What the nodes report as membership events goes to :meth:`_observe`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

from gossip.codec import Keyring
from gossip.messages import Address, NodeMeta
from gossip.sim.config import SimConfig
from gossip.sim.report import SimReport
from gossip.swim import Output, SendDatagram, StartPushPull, Swim

_DELIVER, _WAKE, _PP_REQ, _PP_RESP, _CALL = range(5)
_INF = math.inf


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


class SimNetwork:
    """The nodes' cores, who is up and on which side, and the events between them."""

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
        self.rep = SimReport(config)
        self.sched = config.schedule()
        self.per_second_msgs: dict[int, int] = {}  # datagrams sent, by virtual second
        self.per_second_bytes: dict[int, int] = {}

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

    def _pp_request(self, j: int, i: int, state: bytes) -> None:
        swim = self._pp_merge(j, i, state)
        if swim is None or not self._reachable(j, i):
            return
        resp = swim.push_pull_state()
        self.rep.push_pull_bytes += len(resp)
        self._push(self.now + 2 * self.cfg.latency[1], _PP_RESP, i, j, resp)

    def _pp_response(self, i: int, j: int, state: bytes) -> None:
        self._pp_merge(i, j, state)

    def _pp_merge(self, node: int, sender: int, state: bytes) -> Swim | None:
        """``node`` merges ``sender``'s full state if it is alive and the link lets it through."""
        swim = self.swims[node]
        if swim is None or not self._reachable(sender, node):
            return None
        self._emit(node, swim.merge_push_pull(self.now, state))
        self._reschedule(node, swim)
        return swim

    def _observe(self, i: int, ev: object) -> None:
        """A membership event seen by node ``i``; the observer (``observe.py``) counts it."""
