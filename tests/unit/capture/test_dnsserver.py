"""The mesh DNS server over real UDP sockets: mesh names here, the rest from a resolver."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import dns.rrset
import trio

from peermesh.capture.dnsanswer import DnsCounter
from peermesh.capture.dnsserver import MeshDnsServer, host_resolvers
from peermesh.capture.vips import VipTable

TABLE = VipTable(["orders"])


async def fake_resolver(sock: trio.socket.SocketType) -> None:
    """A resolver that knows one name, answers the rest NXDOMAIN, and ignores 'silent.'."""
    while True:
        data, sender = await sock.recvfrom(65535)
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text()
        if name == "silent.example.":
            continue
        reply = dns.message.make_response(query)
        if name == "www.example.":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.80"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        await sock.sendto(reply.to_wire(), sender)


async def exchange(address: tuple[str, int], query: dns.message.Message) -> dns.message.Message:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.sendto(query.to_wire(), address)
        data, _ = await sock.recvfrom(65535)
    return dns.message.from_wire(data)


async def test_forwards_non_mesh_names_as_the_resolver_answers_them():
    counts: list[DnsCounter] = []
    resolver = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await resolver.bind(("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_resolver, resolver)
        server = MeshDnsServer(
            ("127.0.0.1", 0),
            lambda: TABLE,
            upstreams=[resolver.getsockname()],
            on_count=counts.append,
        )
        address = await nursery.start(server.run)

        mesh = await exchange(address, dns.message.make_query("orders.mesh.", "A"))
        assert [r.address for r in mesh.answer[0]] == [str(TABLE.vip("orders"))]

        query = dns.message.make_query("www.example.", "A")
        direct = await exchange(resolver.getsockname(), query)
        relayed = await exchange(address, query)
        assert relayed.id == query.id
        assert relayed.to_wire() == direct.to_wire()

        missing = await exchange(address, dns.message.make_query("nope.example.", "A"))
        assert missing.rcode() == dns.rcode.NXDOMAIN

        # Garbage is dropped and counted; the server keeps answering.
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.sendto(b"\xff" * 40, address)
        assert (await exchange(address, dns.message.make_query("orders.mesh.", "A"))).answer
        assert DnsCounter.MALFORMED in counts
        nursery.cancel_scope.cancel()
    resolver.close()


async def test_a_silent_resolver_gets_servfail_after_the_timeout(autojump_clock):
    resolver = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await resolver.bind(("127.0.0.1", 0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_resolver, resolver)
        server = MeshDnsServer(
            ("127.0.0.1", 0), lambda: TABLE, upstreams=[resolver.getsockname()], timeout=3.0
        )
        address = await nursery.start(server.run)
        answer = await exchange(address, dns.message.make_query("silent.example.", "A"))
        assert answer.rcode() == dns.rcode.SERVFAIL
        assert server.core.counters[DnsCounter.TIMEOUT] == 1
        nursery.cancel_scope.cancel()
    resolver.close()


def test_host_resolvers_reads_nameserver_lines(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bad\n")
    assert host_resolvers(conf) == [("10.0.0.2", 53), ("fe80::1", 53)]
    assert host_resolvers(tmp_path / "absent") == []
