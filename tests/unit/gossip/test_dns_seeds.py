"""DNS seeds against a real DNS responder on loopback: A, SRV, and hostile answers."""

from __future__ import annotations

import dns.message
import pytest
import trio

from peermesh.config.declare import ConfigError
from peermesh.config.seeds import SeedKind, parse_seed
from peermesh.membership.seeds import MAX_RECORDS, MIN_INTERVAL, DnsSeeds, Refusal, SeedCandidate
from tests.support.dnskit import DnsResponder

SVC = "peermesh-committee.peermesh.svc.cluster.local."


async def _ignore(candidate: SeedCandidate) -> None:
    del candidate


def test_parse_seed_forms() -> None:
    assert parse_seed("dns:" + SVC.rstrip(".")).kind is SeedKind.ADDRESS
    assert parse_seed(f"dns:{SVC}:16000").port == 16000
    srv = parse_seed("srv:_gossip._tcp." + SVC)
    assert (srv.kind, srv.name) == (SeedKind.SRV, "_gossip._tcp." + SVC)
    for bad in ("committee", "ldap:x", "dns:", "dns:x:99999", "dns:" + "a" * 64 + ".b"):
        with pytest.raises(ConfigError):
            parse_seed(bad)


async def _resolve(
    server: DnsResponder, seed: str, reported: list[Refusal] | None = None
) -> tuple[DnsSeeds, list[SeedCandidate]]:
    hook = None if reported is None else reported.append
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        seeds = DnsSeeds(parse_seed(seed), server.address, _ignore, timeout=0.5, on_refused=hook)
        found, _ = await seeds.resolve()
        nursery.cancel_scope.cancel()
    return seeds, found


async def test_a_records_of_a_headless_service() -> None:
    server = DnsResponder({(SVC, "A"): ["127.0.0.2", "127.0.0.3"], (SVC, "AAAA"): ["::1"]})
    seeds, found = await _resolve(server, "dns:" + SVC)
    assert set(found) == {
        SeedCandidate("127.0.0.2", 15443),
        SeedCandidate("127.0.0.3", 15443),
        SeedCandidate("::1", 15443),
    }
    assert seeds.resolved == 1 and not seeds.refused


async def test_srv_records_give_target_and_port() -> None:
    srv = "_gossip._tcp." + SVC
    server = DnsResponder(
        {(srv, "SRV"): ["0 0 16001 pod-0." + SVC], ("pod-0." + SVC, "A"): ["127.0.0.9"]}
    )
    _, found = await _resolve(server, "srv:" + srv)
    assert found == [SeedCandidate("127.0.0.9", 16001)]


async def test_too_many_records_are_cut_and_counted() -> None:
    many = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(MAX_RECORDS * 2)]
    seeds, found = await _resolve(DnsResponder({(SVC, "A"): many}), "dns:" + SVC)
    assert len(found) <= MAX_RECORDS
    assert seeds.refused[Refusal.TOO_MANY_RECORDS] >= 1 or seeds.refused[Refusal.TOO_LARGE] >= 1


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        (b"\x00\x01garbage", Refusal.MALFORMED),
        (b"\x00" * 5000, Refusal.TOO_LARGE),
        (dns.message.make_response(dns.message.make_query("x.", "A")).to_wire(), Refusal.MISMATCH),
    ],
)
async def test_hostile_answers_are_refused_and_counted(hostile: bytes, reason: Refusal) -> None:
    server = DnsResponder(hostile=hostile)
    reported: list[Refusal] = []
    seeds, found = await _resolve(server, "dns:" + SVC, reported)
    assert found == [] and seeds.refused[reason] == 2  # one A and one AAAA query
    assert reported.count(reason) == 2  # the hook the agent's metric counts through


async def test_silence_times_out_and_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    del autojump_clock
    async with trio.open_nursery() as nursery:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        seeds = DnsSeeds(parse_seed("dns:" + SVC), sock.getsockname(), _ignore, timeout=1.0)
        found, _ = await seeds.resolve()
        sock.close()
        nursery.cancel_scope.cancel()
    assert found == [] and seeds.refused[Refusal.TIMEOUT] == 2


async def test_huge_ttl_does_not_stop_refreshing(autojump_clock: trio.testing.MockClock) -> None:
    del autojump_clock
    server = DnsResponder({(SVC, "A"): ["127.0.0.2"]}, ttl=2**31 - 1)
    seen: list[SeedCandidate] = []

    async def collect(candidate: SeedCandidate) -> None:
        seen.append(candidate)

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        seeds = DnsSeeds(parse_seed("dns:" + SVC), server.address, collect, interval=MIN_INTERVAL)
        nursery.start_soon(seeds.run)
        await trio.sleep(MIN_INTERVAL * 3 + 1)
        nursery.cancel_scope.cancel()
    assert len(seen) >= 3


async def test_a_closed_port_is_counted_not_raised() -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    closed = sock.getsockname()
    sock.close()  # nothing listens: loopback answers with ICMP port unreachable
    seeds = DnsSeeds(parse_seed("dns:" + SVC), closed, _ignore, timeout=1.0)
    found, _ = await seeds.resolve()
    assert found == [] and seeds.refused[Refusal.UNREACHABLE] + seeds.refused[Refusal.TIMEOUT] == 2
