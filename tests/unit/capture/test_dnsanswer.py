"""The mesh DNS core: mesh names answered, the rest forwarded unchanged, all bounded."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from peermesh.capture.dnsanswer import MAX_QUERY_BYTES, DnsCounter, Forward, MeshDns, Reply
from peermesh.capture.vips import VipTable

CLIENT = ("127.0.0.1", 40000)
TABLE = VipTable(["orders", "payments"])


def core(**kwargs: object) -> MeshDns:
    return MeshDns(lambda: TABLE, upstreams=1, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


def ask(name: str, rdtype: str = "A") -> bytes:
    return bytes(dns.message.make_query(name, rdtype).to_wire())


def reply_of(actions: list) -> dns.message.Message:
    assert len(actions) == 1 and isinstance(actions[0], Reply)
    assert actions[0].to == CLIENT
    return dns.message.from_wire(actions[0].data)


def test_mesh_name_gets_its_vip_authoritatively():
    mesh = core()
    answer = reply_of(mesh.query(ask("orders.mesh."), CLIENT, 0.0))
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.AA
    assert [r.address for r in answer.answer[0]] == [str(TABLE.vip("orders"))]
    assert mesh.counters[DnsCounter.ANSWERED] == 1
    # Case does not matter; AAAA gets NOERROR with no data (the name exists, IPv4 only).
    assert reply_of(mesh.query(ask("ORDERS.Mesh."), CLIENT, 0.0)).answer
    empty = reply_of(mesh.query(ask("orders.mesh.", "AAAA"), CLIENT, 0.0))
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer


def test_unknown_mesh_name_is_nxdomain_and_never_forwarded():
    mesh = core()
    for name in ("nosuch.mesh.", "a.b.mesh.", "mesh."):
        answer = reply_of(mesh.query(ask(name), CLIENT, 0.0))
        assert answer.rcode() == dns.rcode.NXDOMAIN
    assert mesh.counters[DnsCounter.FORWARDED] == 0


def test_bare_names_only_when_enabled_and_known():
    assert isinstance(core().query(ask("orders."), CLIENT, 0.0)[0], Forward)
    bare = core(bare_names=True)
    assert reply_of(bare.query(ask("orders."), CLIENT, 0.0)).answer
    # An unknown bare name may still be the host's: forwarded, not refused.
    assert isinstance(bare.query(ask("localhost."), CLIENT, 0.0)[0], Forward)


def test_other_names_are_forwarded_unchanged_but_for_the_id():
    mesh = core()
    query = ask("example.com.")
    [forward] = mesh.query(query, CLIENT, 0.0)
    assert isinstance(forward, Forward) and forward.upstream == 0
    assert forward.data[2:] == query[2:]
    upstream_reply = dns.message.make_response(dns.message.from_wire(forward.data))
    upstream_reply.answer.append(dns.rrset.from_text("example.com.", 300, "IN", "A", "192.0.2.7"))
    wire = bytes(upstream_reply.to_wire())
    [back] = mesh.response(wire, 0.1)
    assert isinstance(back, Reply) and back.to == CLIENT
    assert back.data[:2] == query[:2] and back.data[2:] == wire[2:]
    assert mesh.inflight == 0
    # The same reply again is stray: counted, dropped.
    assert mesh.response(wire, 0.2) == []
    assert mesh.counters[DnsCounter.STRAY_RESPONSE] == 1


def test_unanswered_forward_times_out_with_servfail():
    mesh = core(timeout=2.0)
    mesh.query(ask("slow.example."), CLIENT, 10.0)
    assert mesh.expire(11.9) == []
    assert mesh.next_deadline() == 12.0
    answer = reply_of(mesh.expire(12.0))
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert mesh.counters[DnsCounter.TIMEOUT] == 1 and mesh.inflight == 0


def test_in_flight_is_bounded():
    mesh = core(max_inflight=2)
    for i in range(2):
        assert isinstance(mesh.query(ask(f"n{i}.example."), CLIENT, 0.0)[0], Forward)
    answer = reply_of(mesh.query(ask("n3.example."), CLIENT, 0.0))
    assert answer.rcode() == dns.rcode.SERVFAIL
    assert mesh.counters[DnsCounter.OVERLOADED] == 1


def test_bad_datagrams_are_counted_and_dropped():
    mesh = core()
    assert mesh.query(b"\x00" * 5, CLIENT, 0.0) == []
    assert mesh.query(b"garbage that is not dns at all", CLIENT, 0.0) == []
    assert mesh.query(b"\x00" * (MAX_QUERY_BYTES + 1), CLIENT, 0.0) == []
    response = dns.message.make_response(dns.message.make_query("orders.mesh.", "A"))
    assert mesh.query(bytes(response.to_wire()), CLIENT, 0.0) == []  # a response, not a query
    assert mesh.counters[DnsCounter.MALFORMED] == 3
    assert mesh.counters[DnsCounter.TOO_LARGE] == 1
    assert mesh.response(b"short", 0.0) == []


def test_no_upstreams_means_servfail_not_silence():
    mesh = MeshDns(lambda: TABLE, upstreams=0)
    assert reply_of(mesh.query(ask("example.com."), CLIENT, 0.0)).rcode() == dns.rcode.SERVFAIL
