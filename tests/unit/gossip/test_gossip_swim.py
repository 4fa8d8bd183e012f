"""The SWIM/Lifeguard state machine, driven with bytes and `now` only: no sockets, no sleeps.

A hand-driven network (``Net``) delivers each node's ``SendDatagram`` outputs when the
test says so, with per-link drop rules, so every protocol path can be forced.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest

from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue, retransmit_limit
from gossip.codec import Codec, DropReason, Keyring, encode_message, encode_state
from gossip.messages import (
    Ack,
    Address,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    PushPullEntry,
    PushPullState,
    Suspect,
)
from gossip.profiles import LAN, LOCAL, WAN, Profile, get_profile
from gossip.suspicion import Suspicion, suspicion_timeout
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

KEY = bytes(range(32))
ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)


def addr_of(name: str) -> Address:
    return (f"10.0.0.{int(name[1:])}", 15946)


def make(
    name: str, *, profile: Profile = LAN, seed: int = 0, keyring: Keyring | None = None
) -> Swim:
    meta = NodeMeta.create(addr_of(name)[0], services={"web": {"version": "v1"}})
    codec = Codec(name, keyring=keyring or Keyring([KEY]), epoch=1)
    return Swim(name, meta, codec=codec, profile=profile, rng=random.Random(seed), now=0.0)


def peek(data: bytes) -> Compound:
    """Decode a datagram as an outside observer would (a fresh codec, no replay state)."""
    result = Codec("observer", keyring=Keyring([KEY]), epoch=1).decode(data)
    assert isinstance(result, Compound), result
    return result


def kinds(data: bytes) -> list[type]:
    return [type(m) for m in peek(data).messages]


class Net:
    """A hand-driven network: a queue of datagrams, delivered when the test says so."""

    def __init__(self, *nodes: Swim) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.by_addr = {n.meta.gossip_addr: n for n in nodes}
        self.queue: list[tuple[str, Address, bytes]] = []  # (from, to, data)
        self.events: list[tuple[float, str, Output]] = []
        self.sent: list[tuple[str, Address, bytes]] = []
        self.now = 0.0
        self.drop: Callable[[str, str], bool] = lambda src, dst: False

    def apply(self, src: str, outputs: Iterable[Output]) -> None:
        for o in outputs:
            if isinstance(o, SendDatagram):
                self.sent.append((src, o.addr, o.data))
                self.queue.append((src, o.addr, o.data))
            elif isinstance(o, StartPushPull):
                self.push_pull(src, o.addr)
            else:
                self.events.append((self.now, src, o))

    def push_pull(self, src: str, addr: Address) -> None:
        dst = self.by_addr.get(addr)
        if dst is None or self.drop(src, dst.name):
            return
        a = self.nodes[src]
        self.apply(dst.name, dst.merge_push_pull(self.now, a.push_pull_state()))
        self.apply(src, a.merge_push_pull(self.now, dst.push_pull_state()))

    def flush(self) -> None:
        """Deliver everything queued (and what that provokes), at the current time."""
        while self.queue:
            src, to, data = self.queue.pop(0)
            dst = self.by_addr.get(to)
            if dst is None or self.drop(src, dst.name):
                continue
            self.apply(
                dst.name, dst.handle_datagram(self.now, self.nodes[src].meta.gossip_addr, data)
            )

    def run_until(self, t_end: float, step: float = 0.05) -> None:
        """Advance time, ticking every node whose deadline is due, delivering as we go."""
        while self.now < t_end:
            self.now = round(self.now + step, 6)
            for n in list(self.nodes.values()):
                if n.next_deadline() <= self.now:
                    self.apply(n.name, n.tick(self.now))
            self.flush()

    def join_all(self) -> None:
        first, *rest = self.nodes.values()
        for n in rest:
            self.apply(n.name, n.join(self.now, [first.meta.gossip_addr]))
        self.flush()

    def state(self, observer: str, subject: str) -> MemberState | None:
        m = self.nodes[observer].member(subject)
        return None if m is None else m.state

    def of(self, kind: type, subject: str | None = None) -> list[tuple[float, str, Output]]:
        return [
            e
            for e in self.events
            if isinstance(e[2], kind) and (subject is None or e[2].member.name == subject)  # type: ignore[union-attr]
        ]


def cluster(n: int, profile: Profile = LAN) -> Net:
    net = Net(*(make(f"n{i}", profile=profile, seed=i) for i in range(1, n + 1)))
    net.join_all()
    return net


# --- joining ------------------------------------------------------------------------------


def test_join_through_a_seed_reaches_everyone() -> None:
    net = cluster(5)
    net.run_until(3.0)
    for a in net.nodes:
        for b in net.nodes:
            assert net.state(a, b) == ALIVE, (a, b)
    assert all(n.num_live == 5 for n in net.nodes.values())
    assert len(net.of(MemberJoined)) == 5 * 4


def test_join_announces_itself_and_asks_for_push_pull() -> None:
    a = make("n1")
    outs = a.join(0.0, [("10.0.0.9", 15946)])
    sends = [o for o in outs if isinstance(o, SendDatagram)]
    assert [o for o in outs if isinstance(o, StartPushPull)] == [
        StartPushPull(("10.0.0.9", 15946), None)
    ]
    assert kinds(sends[0].data)[:2] == [Alive, Ping]


# --- probing ------------------------------------------------------------------------------


def test_probe_and_ack_keep_everyone_alive() -> None:
    net = cluster(2)
    a, b = net.nodes["n1"], net.nodes["n2"]
    net.sent.clear()
    while a.stats.probes == 0:
        net.run_until(net.now + 0.05)
    ping = next(d for s, _, d in net.sent if s == "n1" and Ping in kinds(d))
    probe = next(m for m in peek(ping).messages if isinstance(m, Ping))
    assert probe.target == "n2"
    ack = next(d for s, _, d in net.sent if s == "n2" and Ack in kinds(d))
    assert Ack(probe.seq) in peek(ack).messages
    assert a.stats.probe_acks == a.stats.probes == 1
    assert a.stats.indirect_probes == 0
    assert net.state("n1", "n2") == ALIVE and net.state("n2", "n1") == ALIVE
    assert b.codec.accepted > 0
    # Left alone for a while, a healthy mesh keeps probing and never suspects anyone.
    net = cluster(3)
    net.run_until(10.0)
    assert all(n.stats.probes > 0 for n in net.nodes.values())
    assert all(net.state(a, b) == ALIVE for a in net.nodes for b in net.nodes)
    assert not net.of(MemberSuspect) and not net.of(MemberDead)


def test_indirect_probe_saves_a_member_the_direct_path_lost() -> None:
    net = cluster(4)
    net.run_until(2.0)
    net.drop = lambda src, dst: {src, dst} == {"n1", "n2"}  # n1 and n2 cannot talk directly
    a = net.nodes["n1"]
    net.run_until(12.0)
    assert a.stats.indirect_probes >= 1
    assert any(IndirectPing in kinds(d) for s, _, d in net.sent if s == "n1")
    assert net.state("n1", "n2") == ALIVE and net.state("n2", "n1") == ALIVE
    assert not net.of(MemberSuspect, "n2")
    assert a.awareness.score == 0  # helpers answered: n1 knows it is healthy


def test_a_silent_member_is_suspected_then_declared_dead_everywhere() -> None:
    net = cluster(4)
    net.run_until(2.0)
    net.drop = lambda src, dst: "n4" in (src, dst)  # n4 crashes
    net.run_until(60.0)
    suspects = net.of(MemberSuspect, "n4")
    deaths = net.of(MemberDead, "n4")
    assert {obs for _, obs, _ in deaths} == {"n1", "n2", "n3"}
    first_suspect, first_dead = suspects[0][0], deaths[0][0]
    # Never dead before the minimum suspicion timeout has run.
    assert first_dead - first_suspect >= LAN.suspicion_min(4) - 1e-6
    assert all(net.state(o, "n4") == DEAD for o in ("n1", "n2", "n3"))
    assert not net.of(MemberLeft)


def test_a_suspected_member_that_is_alive_refutes_with_a_higher_incarnation() -> None:
    net = cluster(3)
    net.run_until(2.0)
    a, b = net.nodes["n1"], net.nodes["n2"]
    # n1 wrongly suspects n2 and says so.
    net.apply("n1", a.handle_datagram(net.now, ("10.0.0.3", 15946), suspect_from("n3", "n2", 0)))
    assert net.state("n1", "n2") == SUSPECT
    net.run_until(net.now + 5.0)
    assert b.incarnation == 1  # refuted by out-bidding the accusation
    assert b.stats.refutations == 1
    assert all(net.state(o, "n2") == ALIVE for o in ("n1", "n3"))
    assert net.nodes["n1"].member("n2").incarnation == 1  # type: ignore[union-attr]
    assert not net.of(MemberDead)
    assert net.of(MemberUpdated, "n2")  # the suspect recovered


def test_buddy_system_tells_a_suspect_in_the_probe() -> None:
    net = cluster(2)
    a = net.nodes["n1"]
    net.run_until(1.0)
    net.drop = lambda src, dst: dst == "n2"  # n2 hears nothing, so cannot refute meanwhile
    net.apply("n1", a.handle_datagram(net.now, ("10.0.0.9", 15946), suspect_from("n9", "n2", 0)))
    assert net.state("n1", "n2") == SUSPECT
    net.sent.clear()
    while not any(Ping in kinds(d) for s, _, d in net.sent if s == "n1"):
        net.run_until(net.now + 0.1)
    ping = next(d for s, _, d in net.sent if s == "n1" and Ping in kinds(d))
    assert peek(ping).messages[0] == Suspect("n2", 0, "n1")


def suspect_from(sender: str, node: str, inc: int) -> bytes:
    """A datagram from ``sender`` accusing ``node``."""
    return Codec(sender, keyring=Keyring([KEY]), epoch=7).encode([Suspect(node, inc, sender)])


def dead_from(sender: str, node: str, inc: int, epoch: int = 7) -> bytes:
    return Codec(sender, keyring=Keyring([KEY]), epoch=epoch).encode([Dead(node, inc, sender)])


# --- Lifeguard ------------------------------------------------------------------------------


def test_awareness_raises_timeouts_after_missed_nacks() -> None:
    net = cluster(4)
    net.run_until(2.0)
    a = net.nodes["n1"]
    assert a.awareness.score == 0
    assert a.scaled_probe_timeout() == LAN.probe_timeout
    net.drop = lambda src, dst: dst == "n1"  # n1 hears nothing: it is the sick one
    net.run_until(6.0)
    assert a.stats.indirect_probes >= 1
    assert a.stats.nacks_received == 0
    score = a.awareness.score
    assert score >= 2  # each failed probe adds the nacks that never came
    assert a.scaled_probe_timeout() == pytest.approx(LAN.probe_timeout * (score + 1))
    assert a.scaled_probe_interval() == pytest.approx(LAN.probe_interval * (score + 1))


def test_nacks_keep_a_healthy_prober_calm() -> None:
    net = cluster(4)
    net.run_until(2.0)
    net.drop = lambda src, dst: "n4" in (src, dst)  # n4 is down, the rest is fine
    net.run_until(10.0)
    probers = [n for n in net.nodes.values() if n.name != "n4" and n.stats.indirect_probes]
    assert probers
    for n in probers:
        assert n.stats.nacks_received > 0
        assert n.awareness.score == 0  # helpers said "I can't reach it either"


def test_awareness_saturates_and_recovers() -> None:
    aw = Awareness(8)
    assert aw.apply_delta(100) == 7 and aw.multiplier == 8
    assert aw.scale(0.5) == 4.0
    assert aw.apply_delta(-100) == 0 and aw.healthy


def test_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    lo, hi = 4.0, 24.0
    s = Suspicion(accuser="a", incarnation=0, expected=2, min_timeout=lo, max_timeout=hi, start=10)
    assert s.deadline == 10 + hi
    assert not s.confirm("a")  # the accuser itself is not a confirmation
    assert s.confirm("b")
    after_one = s.deadline
    assert 10 + lo < after_one < 10 + hi
    assert not s.confirm("b")  # not independent
    assert s.confirm("c")
    assert s.deadline == 10 + lo
    assert not s.confirm("d")  # enough: it cannot get shorter than min
    assert suspicion_timeout(0, 0, lo, hi) == lo  # nobody to confirm: min at once


def test_swim_suspicion_deadline_follows_confirmations() -> None:
    net = cluster(6)
    net.run_until(2.0)
    a = net.nodes["n1"]
    a.handle_datagram(net.now, ("10.0.0.2", 15946), suspect_from("n2", "n6", 0))
    first = a.suspicion_deadline("n6")
    assert first == pytest.approx(net.now + LAN.suspicion_max(6))
    a.handle_datagram(net.now, ("10.0.0.3", 15946), suspect_from("n3", "n6", 0))
    second = a.suspicion_deadline("n6")
    assert second is not None and first is not None and second < first
    a.handle_datagram(net.now, ("10.0.0.4", 15946), suspect_from("n4", "n6", 0))
    assert a.suspicion_deadline("n6") == pytest.approx(net.now + LAN.suspicion_min(6))


def test_a_verdict_about_a_member_we_trust_is_only_an_accusation() -> None:
    net = cluster(4)
    net.run_until(2.0)
    a = net.nodes["n1"]
    outs = a.handle_datagram(net.now, ("10.0.0.2", 15946), dead_from("n2", "n3", 0))
    assert net.state("n1", "n3") == SUSPECT
    assert not [o for o in outs if isinstance(o, MemberDead)]


# --- dissemination --------------------------------------------------------------------------


def test_broadcast_queue_respects_retransmit_limit() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("x", b"x" * 50)
    limit = retransmit_limit(4, 10)
    assert limit == 8
    sent = 0
    while q.get(1000, 10):
        sent += 1
    assert sent == limit
    assert len(q) == 0


def test_broadcast_queue_orders_and_replaces() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("a", b"A" * 10)
    assert q.get(1000, 10) == [b"A" * 10]
    q.queue("b", b"B" * 10, accusation=True)
    q.queue("c", b"C" * 10)
    # Fewest transmits first; alive news before accusations among equals.
    assert q.get(1000, 10) == [b"C" * 10, b"B" * 10, b"A" * 10]
    q.queue("a", b"a" * 10)  # newer news about "a" replaces the old
    assert q.transmits("a") == 0
    assert q.get(15, 10) == [b"a" * 10]  # the budget holds only one
    q.queue("me", b"M" * 10, urgent=True)
    assert q.get(1000, 10)[0] == b"M" * 10
    q.discard("me")
    assert "me" not in q


def test_broadcast_queue_packs_small_messages_into_the_tail() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("big", b"B" * 90)
    q.queue("small", b"s" * 9)
    assert q.get(100, 10) == [b"B" * 90, b"s" * 9]
    assert q.get(50, 10) == [b"s" * 9]  # "big" does not fit, "small" is found behind it


def test_each_node_sends_a_change_a_limited_number_of_times() -> None:
    net = cluster(5)
    net.run_until(3.0)
    net.sent.clear()
    b = net.nodes["n2"]
    meta = b.meta.with_services({"web": {"version": "v2"}})
    net.apply("n2", b.update_metadata(net.now, meta))
    net.run_until(net.now + 10.0)
    limit = retransmit_limit(LAN.retransmit_mult, 5)
    for name in net.nodes:
        carried = sum(
            1
            for src, _, d in net.sent
            if src == name
            and any(isinstance(m, Alive) and m.node == "n2" for m in peek(d).messages)
        )
        assert carried <= limit, (name, carried)
    assert all(len(n.broadcasts) == 0 for n in net.nodes.values())


def test_metadata_update_spreads_as_a_new_incarnation() -> None:
    net = cluster(5)
    net.run_until(3.0)
    b = net.nodes["n2"]
    meta = b.meta.with_services({"web": {"version": "v2", "zone": "b"}, "api": {}})
    net.apply("n2", b.update_metadata(net.now, meta))
    assert b.incarnation == 1
    net.run_until(net.now + 3.0)
    for name in ("n1", "n3", "n4", "n5"):
        seen = net.nodes[name].member("n2")
        assert seen is not None and seen.meta == meta and seen.incarnation == 1
    assert {o for _, o, _ in net.of(MemberUpdated, "n2")} == {"n1", "n3", "n4", "n5"}


def test_graceful_leave_is_seen_as_left_not_failed() -> None:
    net = cluster(4)
    net.run_until(2.0)
    b = net.nodes["n2"]
    net.apply("n2", b.leave(net.now))
    assert b.leaving and not b.leave_complete
    net.run_until(net.now + 5.0)
    assert b.leave_complete
    assert {o for _, o, _ in net.of(MemberLeft, "n2")} == {"n1", "n3", "n4"}
    assert not net.of(MemberDead, "n2") and not net.of(MemberSuspect, "n2")
    assert all(net.state(o, "n2") == LEFT for o in ("n1", "n3", "n4"))
    net.drop = lambda src, dst: "n2" in (src, dst)  # gone for good
    net.run_until(net.now + 60.0)
    assert not net.of(MemberDead, "n2")  # a left member is not probed, so never "fails"
    assert all(net.nodes[o].member("n2") is None for o in ("n1", "n3", "n4"))  # reaped


# --- push-pull, partitions, zombies ---------------------------------------------------------


def test_push_pull_merges_and_refuses_garbage() -> None:
    a = make("n1")
    meta = NodeMeta.create("10.0.0.5")
    state = PushPullState(
        "n5",
        (
            PushPullEntry("n5", 3, ALIVE, meta),
            PushPullEntry("n6", 1, ALIVE, meta),
            PushPullEntry("n7", 0, LEFT, meta),
            PushPullEntry("n1", 4, DEAD, a.meta),  # n5 believes we are dead
        ),
    )
    outs = a.merge_push_pull(0.0, encode_state(state))
    assert {e.member.name for e in outs if isinstance(e, MemberJoined)} == {"n5", "n6"}
    assert a.incarnation == 5  # refuted
    assert a.member("n7") is None  # never knew it: a tombstone of a stranger is ignored
    before = a.stats.push_pull_rejected
    assert a.merge_push_pull(0.0, b"\x01garbage") == []
    assert a.merge_push_pull(0.0, a.push_pull_state()) == []  # our own state reflected
    assert a.stats.push_pull_rejected == before + 2


def test_a_buried_member_that_talks_is_told_and_refutes() -> None:
    net = cluster(3)
    net.run_until(2.0)
    a, c = net.nodes["n1"], net.nodes["n3"]
    net.drop = lambda src, dst: "n3" in (src, dst)  # n3 is cut off long enough to be buried
    net.run_until(net.now + LAN.suspicion_max(3) + 2)
    assert net.state("n1", "n3") == DEAD and net.state("n3", "n1") == DEAD
    # n3 pings n1 out of the blue: n1 answers with the news, which n3 refutes.
    hello = Codec("n3", keyring=Keyring([KEY]), epoch=500).encode([Ping(77, "n1")])
    reply = [o for o in a.handle_datagram(net.now, c.meta.gossip_addr, hello)]
    answer = next(o for o in reply if isinstance(o, SendDatagram))
    assert peek(answer.data).messages[:2] == (Dead("n3", 0, "n1"), Ack(77))
    c.handle_datagram(net.now, a.meta.gossip_addr, answer.data)
    assert c.incarnation == 1
    net.drop = lambda src, dst: False
    net.run_until(net.now + 15.0)
    assert all(net.state(x, y) == ALIVE for x in net.nodes for y in net.nodes)


def test_a_stranger_is_asked_to_introduce_itself() -> None:
    net = cluster(2)
    net.run_until(1.0)
    a = net.nodes["n1"]
    stranger = make("n9", seed=9)
    stranger.restore(net.now, a.push_pull_state())  # n9 knows n1 (from some other member)
    # n9 joined while n1 was cut off, so n1 never heard of it; now n9 pings n1.
    hello = stranger.codec.encode([Ping(5, "n1")])
    reply = a.handle_datagram(net.now, stranger.meta.gossip_addr, hello)
    datagrams = [o.data for o in reply if isinstance(o, SendDatagram)]
    asks = [m for d in datagrams for m in peek(d).messages if isinstance(m, Ping)]
    assert len(asks) == 1 and asks[0].target == "n9" and asks[0].introduce
    ask = next(d for d in datagrams if asks[0] in peek(d).messages)
    answer = stranger.handle_datagram(net.now, a.meta.gossip_addr, ask)
    intro = next(o for o in answer if isinstance(o, SendDatagram))
    assert Alive("n9", 0, stranger.meta) in peek(intro.data).messages
    events = a.handle_datagram(net.now, stranger.meta.gossip_addr, intro.data)
    assert [e.member.name for e in events if isinstance(e, MemberJoined)] == ["n9"]


def test_restore_adopts_a_state_without_gossiping_it() -> None:
    a = make("n1")
    meta = NodeMeta.create("10.0.0.5")
    state = PushPullState("n5", tuple(PushPullEntry(f"n{i}", 0, ALIVE, meta) for i in range(2, 9)))
    outs = a.restore(0.0, encode_state(state))
    assert len([o for o in outs if isinstance(o, MemberJoined)]) == 7
    assert len(a.broadcasts) == 0 and a.num_live == 8
    assert a.next_deadline() < 1.0  # it probes as usual


def test_healed_partition_reconverges() -> None:
    net = cluster(6, profile=LOCAL)
    net.run_until(2.0)
    left, right = {"n1", "n2", "n3"}, {"n4", "n5", "n6"}
    net.drop = lambda src, dst: (src in left) != (dst in left)
    net.run_until(40.0)
    for a in left:
        for b in right:
            assert net.state(a, b) == DEAD and net.state(b, a) == DEAD
    net.drop = lambda src, dst: False
    net.run_until(70.0)
    for a in net.nodes:
        for b in net.nodes:
            assert net.state(a, b) == ALIVE, (a, b)


# --- refusal of bad datagrams ------------------------------------------------------------------


def fingerprint(s: Swim) -> tuple[object, ...]:
    return (
        sorted((m.name, m.state, m.incarnation, m.meta) for m in s.members()),
        s.incarnation,
        s.awareness.score,
        len(s.broadcasts),
        s.next_deadline(),
        s.stats,
    )


def test_bad_datagrams_are_dropped_counted_and_change_nothing() -> None:
    net = cluster(3)
    net.run_until(2.0)
    a = net.nodes["n1"]
    sender = Codec("n2", keyring=Keyring([KEY]), epoch=99)
    good = sender.encode([Dead("n3", 0, "n2"), Alive("n9", 0, NodeMeta.create("10.0.0.9"))])
    assert a.handle_datagram(net.now, ("10.0.0.2", 15946), good)  # accepted once: n9 joins
    before = fingerprint(a)
    wrong_key = Codec("n2", keyring=Keyring([bytes(32)]), epoch=99).encode([Dead("n3", 5, "n2")])
    plaintext = Codec("n2", insecure=True).encode([Dead("n3", 5, "n2")])
    cases = {
        DropReason.REPLAYED: good,
        DropReason.AUTH_FAILED: wrong_key,
        DropReason.TRUNCATED: good[:20],
        DropReason.OVERSIZED: good + bytes(1400),
        DropReason.PLAINTEXT_REFUSED: plaintext,
        DropReason.UNKNOWN_VERSION: b"\x09" + random.Random(1).randbytes(200),
    }
    for reason, data in cases.items():
        assert a.handle_datagram(net.now, ("10.0.0.2", 15946), data) == []
        assert a.drops[reason] == 1, reason
    for _ in range(50):
        junk = random.Random(_).randbytes(random.Random(_).randrange(0, 1500))
        assert a.handle_datagram(net.now, ("10.0.0.2", 15946), junk) == []
    assert fingerprint(a) == before


def test_truncated_msgpack_in_insecure_mode_changes_nothing() -> None:
    codec = Codec("n1", insecure=True)
    a = Swim("n1", NodeMeta.create("10.0.0.1"), codec=codec, rng=random.Random(1))
    data = Codec("n2", insecure=True).encode([Alive("n2", 0, NodeMeta.create("10.0.0.2"))])
    before = fingerprint(a)
    assert a.handle_datagram(0.0, ("10.0.0.2", 15946), data[:-4]) == []
    assert a.drops[DropReason.MALFORMED] == 1
    assert fingerprint(a) == before
    assert [type(o) for o in a.handle_datagram(0.0, ("10.0.0.2", 15946), data)] == [MemberJoined]


def test_rotation_between_live_nodes() -> None:
    ring1, ring2 = Keyring([KEY]), Keyring([KEY])
    a, b = make("n1", keyring=ring1), make("n2", keyring=ring2, seed=2)
    net = Net(a, b)
    net.join_all()
    net.run_until(2.0)
    new = bytes(range(100, 132))
    ring1.add(new, primary=True)  # n1 rotates first: n2 cannot read it yet
    net.run_until(3.0)
    assert b.drops[DropReason.AUTH_FAILED] > 0
    ring2.add(new)  # n2 installs the key: traffic flows again, old key still accepted
    seen = a.codec.accepted, b.codec.accepted
    net.run_until(5.0)
    assert a.codec.accepted > seen[0] and b.codec.accepted > seen[1]
    ring2.use(new)
    ring1.remove(KEY)
    ring2.remove(KEY)
    stale = Codec("n2", keyring=Keyring([KEY]), epoch=50).encode([Ping(1, "n1")])
    assert a.handle_datagram(net.now, b.meta.gossip_addr, stale) == []
    assert a.drops[DropReason.RETIRED_KEY] == 1
    net.run_until(8.0)
    assert net.state("n1", "n2") == ALIVE and net.state("n2", "n1") == ALIVE


# --- profiles ---------------------------------------------------------------------------------


def test_profiles_carry_memberlists_defaults_and_validate_overrides() -> None:
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.suspicion_mult) == (1.0, 0.5, 4)
    assert (LAN.suspicion_max_timeout_mult, LAN.gossip_interval, LAN.gossip_nodes) == (6, 0.2, 3)
    assert (LAN.retransmit_mult, LAN.push_pull_interval, LAN.indirect_checks) == (4, 30.0, 3)
    assert LAN.awareness_max_multiplier == 8
    assert (WAN.probe_interval, WAN.probe_timeout, WAN.gossip_nodes) == (5.0, 3.0, 4)
    assert (LOCAL.probe_timeout, LOCAL.indirect_checks, LOCAL.retransmit_mult) == (0.2, 1, 2)
    assert get_profile("lan", gossip_nodes=5).gossip_nodes == 5
    assert LAN.retransmit_limit(1000) == 16
    assert LAN.suspicion_min(1000) == pytest.approx(12.0)
    assert LAN.push_pull_period(1000) == 180.0
    with pytest.raises(ValueError, match="shorter than probe_interval"):
        LAN.replace(probe_timeout=2.0)
    with pytest.raises(ValueError, match="unknown gossip profile settings: nope"):
        LAN.replace(nope=1)
    with pytest.raises(ValueError, match="choose one of"):
        get_profile("moon")


def test_messages_encode_small_enough_to_pack_many() -> None:
    alive = encode_message(Alive("n00001", 3, NodeMeta.create("10.0.0.1", services={"a": {}})))
    assert len(alive) < 80
    msgs: list[Message] = [Nack(1), IndirectPing(1, "n2", ("10.0.0.2", 1), True)]
    assert all(len(encode_message(m)) < 40 for m in msgs)
