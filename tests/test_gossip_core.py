"""The SWIM/Lifeguard core driven with bytes and ``now`` only: no sockets, no clocks.

A tiny in-test network delivers each node's ``SendDatagram`` outputs to the addressed
node at a virtual time, with per-link drop rules, so every protocol path can be forced.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.broadcast import BroadcastQueue, retransmit_limit
from gossip.codec import (
    Codec,
    DropReason,
    Keyring,
    generate_gossip_key,
)
from gossip.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    MemberState,
    NodeMeta,
    Ping,
    Suspect,
)
from gossip.profiles import LOCAL
from gossip.suspicion import Suspicion
from gossip.swim import (
    MemberDead,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    SendDatagram,
    StartPushPull,
    Swim,
)

KEY = generate_gossip_key()


def addr(i: int) -> tuple[str, int]:
    return ("10.0.0.1", 7000 + i)


class Net:
    """Virtual-time datagram delivery between real Swim cores."""

    def __init__(self, n: int, *, latency: float = 0.002, seed: int = 1) -> None:
        self.now = 0.0
        self.latency = latency
        self.queue: list[tuple[float, int, int, tuple[str, int], bytes]] = []
        self.counter = itertools.count()
        self.drop: Callable[[int, int], bool] = lambda src, dst: False
        self.events: list[tuple[float, str, object]] = []
        self.nodes: list[Swim] = []
        self.by_addr: dict[tuple[str, int], int] = {}
        self.down: set[int] = set()
        self.pending_push_pulls: list[tuple[int, int]] = []
        for i in range(n):
            name = f"n{i}"
            meta = NodeMeta.create("10.0.0.1", gossip_port=7000 + i, services={"svc": {"v": "1"}})
            codec = Codec(name, keyring=Keyring([KEY]), epoch=1)
            swim = Swim(name, meta, codec=codec, profile=LOCAL, rng=random.Random(seed + i))
            self.nodes.append(swim)
            self.by_addr[addr(i)] = i

    def join_all(self) -> None:
        """Full-state exchange with node 0, as the shell does over mTLS."""
        for i in range(1, len(self.nodes)):
            self.push_pull(i, 0)

    def push_pull(self, a: int, b: int) -> None:
        A, B = self.nodes[a], self.nodes[b]
        self.apply(b, B.merge_push_pull(self.now, A.push_pull_state()))
        self.apply(a, A.merge_push_pull(self.now, B.push_pull_state()))

    def apply(self, src: int, outputs: list) -> None:
        for out in outputs:
            if isinstance(out, SendDatagram):
                dst = self.by_addr.get(out.addr)
                if dst is None or self.drop(src, dst):
                    continue
                heapq.heappush(
                    self.queue,
                    (self.now + self.latency, next(self.counter), dst, addr(src), out.data),
                )
            elif isinstance(out, StartPushPull):
                # What the shell does over mTLS: a full-state exchange with that member.
                dst = self.by_addr.get(out.addr)
                if dst is not None and dst not in self.down and not self.drop(src, dst):
                    self.pending_push_pulls.append((src, dst))
            else:
                self.events.append((self.now, self.nodes[src].name, out))

    def run(self, until: float) -> None:
        step = 0.01
        while self.now < until:
            self.now = round(self.now + step, 6)
            while self.queue and self.queue[0][0] <= self.now:
                _, _, dst, src_addr, data = heapq.heappop(self.queue)
                if dst in self.down:
                    continue
                self.apply(dst, self.nodes[dst].handle_datagram(self.now, src_addr, data))
            for i, node in enumerate(self.nodes):
                if i not in self.down and node.next_deadline() <= self.now:
                    self.apply(i, node.tick(self.now))
            while self.pending_push_pulls:
                self.push_pull(*self.pending_push_pulls.pop(0))

    def state(self, viewer: int, node: int) -> MemberState:
        member = self.nodes[viewer].member(f"n{node}")
        assert member is not None
        return member.state


def test_probe_and_ack_keep_everyone_alive():
    net = Net(3)
    net.join_all()
    net.run(10)
    for viewer in range(3):
        for node in range(3):
            assert net.state(viewer, node) == MemberState.ALIVE
    assert all(n.stats.probes > 0 for n in net.nodes)
    assert not [e for e in net.events if isinstance(e[2], MemberSuspect | MemberDead)]


def test_indirect_probe_saves_a_member_behind_one_broken_link():
    net = Net(4)
    net.join_all()
    net.run(2)
    # n0 and n1 cannot talk directly, but both talk to everyone else.
    net.drop = lambda a, b: {a, b} == {0, 1}
    net.run(20)
    assert net.state(0, 1) == MemberState.ALIVE
    assert net.state(1, 0) == MemberState.ALIVE
    assert net.nodes[0].stats.indirect_probes > 0  # the helpers' acks saved n1


def test_a_silent_member_is_suspected_then_declared_dead_everywhere():
    net = Net(5)
    net.join_all()
    net.run(20)  # long enough for a periodic push-pull to fill any gossip gap
    assert all(len(n.members()) == 5 for n in net.nodes)
    net.down.add(4)
    net.run(40)
    for viewer in range(4):
        assert net.state(viewer, 4) == MemberState.DEAD
    kinds = [
        type(e[2]) for e in net.events if getattr(e[2], "member", None) and e[2].member.name == "n4"
    ]
    assert MemberSuspect in kinds and MemberDead in kinds
    assert kinds.index(MemberSuspect) < kinds.index(MemberDead)


def test_a_suspected_member_that_is_alive_refutes_with_a_higher_incarnation():
    net = Net(3)
    net.join_all()
    net.run(2)
    before = net.nodes[2].incarnation
    # n0 accuses n2 (as if its probes had failed); n2 hears it and refutes.
    accusation = net.nodes[0].codec.encode([Suspect("n2", before, "n0")])
    net.apply(2, net.nodes[2].handle_datagram(net.now, addr(0), accusation))
    net.run(5)
    assert net.nodes[2].incarnation > before
    for viewer in range(3):
        assert net.state(viewer, 2) == MemberState.ALIVE


def test_graceful_leave_is_recorded_as_left_not_failed():
    net = Net(3)
    net.join_all()
    net.run(2)
    net.apply(2, net.nodes[2].leave(net.now))
    net.run(3)
    assert net.nodes[2].leave_complete or net.nodes[2].leaving
    net.down.add(2)
    net.run(20)
    assert net.state(0, 2) == MemberState.LEFT
    assert net.state(1, 2) == MemberState.LEFT
    left = [e for e in net.events if isinstance(e[2], MemberLeft)]
    assert {e[1] for e in left} >= {"n0", "n1"}
    assert not [e for e in net.events if isinstance(e[2], MemberDead)]


def test_metadata_update_spreads_as_a_new_incarnation():
    net = Net(4)
    net.join_all()
    net.run(2)
    meta = net.nodes[3].meta.with_services({"svc": {"v": "2"}})
    net.apply(3, net.nodes[3].update_metadata(net.now, meta))
    net.run(5)
    for viewer in range(3):
        member = net.nodes[viewer].member("n3")
        assert member is not None and member.meta.service("svc").label("v") == "2"  # type: ignore[union-attr]


def test_lifeguard_awareness_stretches_our_own_timeouts():
    net = Net(3)
    net.join_all()
    net.run(2)
    node = net.nodes[0]
    base = node.scaled_probe_timeout()
    # Nobody answers n0 any more: each failed probe (with no nack) raises its awareness.
    net.drop = lambda a, b: b == 0
    net.run(15)
    assert node.scaled_probe_timeout() > base


def test_suspicion_timeout_shrinks_with_independent_confirmations():
    s = Suspicion(
        accuser="n1", incarnation=1, expected=3, min_timeout=2.0, max_timeout=12.0, start=0.0
    )
    first = s.deadline
    assert s.confirm("n2")
    second = s.deadline
    assert not s.confirm("n2")  # the same accuser twice is not independent
    assert s.confirm("n3")
    third = s.deadline
    assert first > second > third >= 2.0
    assert first == pytest.approx(12.0)


def test_broadcasts_stop_after_the_retransmit_limit_and_newer_replace_older():
    queue = BroadcastQueue(retransmit_mult=4)
    members = 50
    limit = retransmit_limit(4, members)  # 4 * ceil(log10(51)) = 8
    assert limit == 8
    queue.queue("n7", b"alive-n7-v1")
    queue.queue("n7", b"alive-n7-v2")  # news about the same member replaces the old
    queue.queue("n8", b"suspect-n8")
    sent: dict[bytes, int] = {}
    for _ in range(limit + 5):
        for payload in queue.get(1400, members):
            sent[payload] = sent.get(payload, 0) + 1
    assert b"alive-n7-v1" not in sent
    assert sent == {b"alive-n7-v2": limit, b"suspect-n8": limit}
    assert len(queue) == 0
    # A small budget packs what fits, fewest-transmitted first.
    queue.queue("a", b"x" * 600)
    queue.queue("b", b"y" * 600)
    queue.queue("c", b"z" * 600)
    first = queue.get(1300, members)
    assert len(first) == 2
    second = queue.get(1300, members)
    assert (b"z" * 600) in second  # the one left out goes first next time


# --- the codec ------------------------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")
metas = st.builds(
    lambda host, port: NodeMeta.create(host, gossip_port=port, services={"s": {"k": "v"}}),
    st.sampled_from(["10.0.0.1", "192.0.2.7", "::1"]),
    st.integers(1, 65535),
)
messages = st.one_of(
    st.builds(Ping, st.integers(0, 2**32 - 1), st.one_of(st.none(), names)),
    st.builds(Ack, st.integers(0, 2**32 - 1)),
    st.builds(Alive, names, st.integers(0, 2**40), metas),
    st.builds(Suspect, names, st.integers(0, 2**40), names),
    st.builds(Dead, names, st.integers(0, 2**40), names),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6))
def test_codec_round_trip(batch):
    sender = Codec("a", keyring=Keyring([KEY]), epoch=5)
    receiver = Codec("b", keyring=Keyring([KEY]), epoch=6)
    decoded = receiver.decode(sender.encode(batch))
    assert isinstance(decoded, Compound)
    assert decoded.sender == "a"
    assert list(decoded.messages) == batch


def _ping_bytes(codec: Codec) -> bytes:
    return codec.encode([Ping(1, "n1")])


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda good: os.urandom(len(good)), None),
        (lambda good: good[: len(good) // 2], None),
        (lambda good: good + b"\x00" * 2000, DropReason.OVERSIZED),
        (lambda good: msgpack.packb([1, 2, 3]), None),
    ],
)
def test_bad_datagrams_are_dropped_counted_and_change_nothing(mangle, reason):
    net = Net(2)
    net.join_all()
    net.run(1)
    victim = net.nodes[1]
    before = [(m.name, m.incarnation, m.state) for m in victim.members()]
    drops_before = sum(victim.drops.values())
    good = _ping_bytes(net.nodes[0].codec)
    outputs = victim.handle_datagram(net.now, addr(0), mangle(good))
    assert not [o for o in outputs if isinstance(o, SendDatagram)]
    assert [(m.name, m.incarnation, m.state) for m in victim.members()] == before
    assert sum(victim.drops.values()) == drops_before + 1
    if reason is not None:
        assert victim.drops[reason] >= 1


def test_wrong_key_and_replay_are_dropped():
    ours = Codec("b", keyring=Keyring([KEY]), epoch=1)
    stranger = Codec("x", keyring=Keyring([generate_gossip_key()]), epoch=1)
    assert ours.decode(stranger.encode([Ack(1)])) in (
        DropReason.AUTH_FAILED,
        DropReason.RETIRED_KEY,
    )
    friend = Codec("a", keyring=Keyring([KEY]), epoch=1)
    datagram = friend.encode([Ack(7)])
    assert isinstance(ours.decode(datagram), Compound)
    assert ours.decode(datagram) == DropReason.REPLAYED
    assert ours.drops[DropReason.REPLAYED] == 1


def test_key_rotation_accepts_old_until_removed():
    old, new = KEY, generate_gossip_key()
    sender = Codec("a", keyring=Keyring([old]), epoch=1)
    ring = Keyring([old])
    receiver = Codec("b", keyring=ring, epoch=1)
    ring.add(new, primary=True)
    assert isinstance(receiver.decode(sender.encode([Ack(1)])), Compound)  # old still accepted
    ring.remove(old)
    assert receiver.decode(sender.encode([Ack(2)])) == DropReason.RETIRED_KEY
    assert receiver.drops[DropReason.RETIRED_KEY] == 1


def test_joined_events_for_everyone():
    net = Net(4)
    net.join_all()
    net.run(3)
    joined = {(e[1], e[2].member.name) for e in net.events if isinstance(e[2], MemberJoined)}
    for viewer in range(4):
        for node in range(4):
            if viewer != node:
                assert (f"n{viewer}", f"n{node}") in joined
