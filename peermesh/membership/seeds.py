"""Join candidates from DNS: a headless Service's A/AAAA records, or an SRV name.

mDNS stays on one link; in Kubernetes the committee is reachable by a headless Service
whose DNS name lists every ready pod. ``DnsSeeds`` re-resolves that name periodically and
hands each address to ``on_candidate`` exactly like an mDNS candidate, so membership joins
through it. Every answer is hostile input: its size, record count and TTL are bounded, and
anything refused is counted in ``refused`` by reason instead of raised.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.message
import dns.rdatatype
import trio

from peermesh.config.seeds import DnsSeed, SeedKind

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4096
MAX_RECORDS = 64
MIN_INTERVAL = 5.0
MAX_INTERVAL = 300.0


class Refusal(enum.Enum):
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"
    TOO_MANY_RECORDS = "too_many_records"
    BAD_ADDRESS = "bad_address"
    NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class SeedCandidate:
    """An agent's inbound endpoint found in DNS."""

    address: str
    inbound_port: int


def system_nameserver() -> tuple[str, int]:
    """The first nameserver of /etc/resolv.conf (in a pod: the cluster DNS)."""
    import dns.resolver

    try:
        return (str(dns.resolver.Resolver().nameservers[0]), 53)
    except (dns.resolver.NoResolverConfiguration, IndexError):
        return ("127.0.0.1", 53)


class DnsSeeds:
    """Resolves one seed name against ``nameserver`` every ``interval`` (bounded by TTL)."""

    def __init__(
        self,
        seed: DnsSeed,
        nameserver: tuple[str, int],
        on_candidate: Callable[[SeedCandidate], Awaitable[None]],
        *,
        interval: float = 30.0,
        timeout: float = 2.0,
        on_refused: Callable[[Refusal], None] | None = None,
    ) -> None:
        self.seed = seed
        self.nameserver = nameserver
        self.on_candidate = on_candidate
        self.interval = min(max(interval, MIN_INTERVAL), MAX_INTERVAL)
        self.timeout = timeout
        self.refused: Counter[Refusal] = Counter()
        self.resolved = 0
        self._on_refused = on_refused

    def _refuse(self, reason: Refusal) -> None:
        self.refused[reason] += 1
        if self._on_refused is not None:
            self._on_refused(reason)

    async def run(self) -> None:
        while True:
            found, ttl = await self.resolve()
            for candidate in found:
                await self.on_candidate(candidate)
            # A huge TTL must not stop us noticing new pods; a tiny one must not flood.
            await trio.sleep(min(max(ttl, MIN_INTERVAL), self.interval) if found else self.interval)

    async def resolve(self) -> tuple[list[SeedCandidate], float]:
        """One lookup: the candidates and the smallest TTL, or ``([], 0)`` when refused."""
        if self.seed.kind is SeedKind.SRV:
            answer = await self._query(self.seed.name, dns.rdatatype.SRV)
            if answer is None:
                return [], 0.0
            records, ttl = answer
            found: list[SeedCandidate] = []
            for rdata in records:
                addresses, _ = await self._addresses(str(rdata.target))
                found.extend(SeedCandidate(a, int(rdata.port)) for a in addresses)
            return self._bounded(found), ttl
        addresses, ttl = await self._addresses(self.seed.name)
        return self._bounded([SeedCandidate(a, self.seed.port) for a in addresses]), ttl

    def _bounded(self, found: list[SeedCandidate]) -> list[SeedCandidate]:
        unique = list(dict.fromkeys(found))
        if len(unique) > MAX_RECORDS:
            self._refuse(Refusal.TOO_MANY_RECORDS)
            unique = unique[:MAX_RECORDS]
        if unique:
            self.resolved += 1
        else:
            self._refuse(Refusal.NO_ANSWER)
        return unique

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        addresses: list[str] = []
        ttls: list[float] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            answer = await self._query(name, rdtype)
            if answer is None:
                continue
            records, ttl = answer
            ttls.append(ttl)
            for rdata in records:
                try:
                    addresses.append(str(ipaddress.ip_address(rdata.address)))
                except ValueError:
                    self._refuse(Refusal.BAD_ADDRESS)
        return addresses, min(ttls, default=0.0)

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[list[Any], float] | None:
        query = dns.message.make_query(name, rdtype)
        sock = trio.socket.socket(
            trio.socket.AF_INET6 if ":" in self.nameserver[0] else trio.socket.AF_INET,
            trio.socket.SOCK_DGRAM,
        )
        with sock:
            try:
                await sock.connect(self.nameserver)
                await sock.send(query.to_wire())
                with trio.move_on_after(self.timeout):
                    wire = await sock.recv(MAX_ANSWER_BYTES + 1)
                    return self._parse(query, wire, rdtype)
            except OSError as exc:
                # No route or an ICMP refusal: the next round tries again; never fatal.
                log.debug("DNS seeds: %s unreachable: %s", self.nameserver, exc)
                self._refuse(Refusal.UNREACHABLE)
                return None
        self._refuse(Refusal.TIMEOUT)
        return None

    def _parse(
        self, query: dns.message.Message, wire: bytes, rdtype: dns.rdatatype.RdataType
    ) -> tuple[list[Any], float] | None:
        if len(wire) > MAX_ANSWER_BYTES:
            self._refuse(Refusal.TOO_LARGE)
            return None
        try:
            response = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            self._refuse(Refusal.MALFORMED)
            return None
        if not query.is_response(response):
            self._refuse(Refusal.MISMATCH)
            return None
        records: list[Any] = []
        ttl = MAX_INTERVAL
        for rrset in response.answer:
            if rrset.rdtype != rdtype:
                continue
            ttl = min(ttl, float(rrset.ttl))
            records.extend(rrset)
            if len(records) > MAX_RECORDS:
                self._refuse(Refusal.TOO_MANY_RECORDS)
                records = records[:MAX_RECORDS]
                break
        return (records, ttl) if records else None
