"""The mesh DNS decision, sans-IO: answer a mesh name, or forward the query unchanged.

``<service>.mesh`` (and a bare ``<service>`` when enabled and the service is known) is
answered here, authoritatively, with the service's VIP (:mod:`.vips`). Every other query
goes to the host's resolvers as it came, only its 16-bit id swapped for one of ours so
answers cannot be confused; the resolver's reply goes back with the client's id restored.
The core holds the in-flight table (bounded in count and time); the shell only moves
datagrams and calls :meth:`MeshDns.expire` on a timer.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from peermesh.capture.vips import VipTable

MESH_SUFFIX = "mesh"
#: A query larger than this is refused (EDNS0 clients ask for at most 4096 in practice).
MAX_QUERY_BYTES = 4096
#: UDP cannot carry more, so a larger "reply" is not a reply.
MAX_RESPONSE_BYTES = 65535
DEFAULT_MAX_INFLIGHT = 1024
DEFAULT_TIMEOUT = 5.0
#: Short, so a service that appears or a VIP that moves is seen within seconds.
MESH_TTL = 30

Address = tuple[str, int]


class DnsCounter(enum.StrEnum):
    """What happened to a datagram (the ``peermesh_dns_*`` counters' reason label)."""

    ANSWERED = "answered"
    NXDOMAIN = "nxdomain"
    FORWARDED = "forwarded"
    RELAYED = "relayed"
    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    STRAY_RESPONSE = "stray-response"


@dataclass(frozen=True)
class Reply:
    """Send ``data`` to the client at ``to``."""

    to: Address
    data: bytes


@dataclass(frozen=True)
class Forward:
    """Send ``data`` to upstream resolver number ``upstream``."""

    upstream: int
    data: bytes


Action = Reply | Forward


@dataclass
class _Pending:
    client: Address
    client_id: int
    question: bytes
    deadline: float
    query: dns.message.Message


class MeshDns:
    """Answers mesh names from a :class:`VipTable`, forwards the rest."""

    def __init__(
        self,
        table: Callable[[], VipTable],
        *,
        upstreams: int,
        bare_names: bool = False,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        timeout: float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
        on_count: Callable[[DnsCounter], None] | None = None,
    ) -> None:
        self.table = table
        self.upstreams = upstreams
        self.bare_names = bare_names
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.rng = rng or random.Random()
        self.counters: Counter[DnsCounter] = Counter()
        self._pending: dict[int, _Pending] = {}
        self._next_upstream = 0
        self.on_count = on_count

    def _count(self, what: DnsCounter) -> None:
        self.counters[what] += 1
        if self.on_count is not None:
            self.on_count(what)

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def query(self, data: bytes, client: Address, now: float) -> list[Action]:
        """A datagram from an app."""
        if len(data) > MAX_QUERY_BYTES:
            self._count(DnsCounter.TOO_LARGE)
            return []
        try:
            message = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, IndexError):
            self._count(DnsCounter.MALFORMED)
            return []
        if message.flags & dns.flags.QR or message.opcode() != dns.opcode.QUERY:
            self._count(DnsCounter.MALFORMED)
            return []
        if len(message.question) != 1:
            self._count(DnsCounter.MALFORMED)
            return [Reply(client, _error(message, dns.rcode.FORMERR))]
        question = message.question[0]
        mesh = self._mesh_answer(message, question)
        if mesh is not None:
            return [Reply(client, mesh)]
        return self._forward(data, message, client, now)

    def response(self, data: bytes, now: float) -> list[Action]:
        """A datagram from an upstream resolver."""
        if len(data) < 12 or len(data) > MAX_RESPONSE_BYTES:
            self._count(DnsCounter.STRAY_RESPONSE)
            return []
        wire_id = int.from_bytes(data[:2], "big")
        pending = self._pending.get(wire_id)
        if pending is None or _question_bytes(data) != pending.question:
            self._count(DnsCounter.STRAY_RESPONSE)
            return []
        del self._pending[wire_id]
        self._count(DnsCounter.RELAYED)
        return [Reply(pending.client, pending.client_id.to_bytes(2, "big") + data[2:])]

    def expire(self, now: float) -> list[Action]:
        """SERVFAIL every forwarded query whose resolver did not answer in time."""
        late = [key for key, p in self._pending.items() if p.deadline <= now]
        actions: list[Action] = []
        for key in late:
            pending = self._pending.pop(key)
            self._count(DnsCounter.TIMEOUT)
            reply = _error(pending.query, dns.rcode.SERVFAIL)
            actions.append(Reply(pending.client, reply))
        return actions

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def service_for(self, name: dns.name.Name) -> tuple[str | None, bool]:
        """(service, ours): ours is True when the name is in the mesh domain."""
        labels = [label.decode("ascii", "replace").lower() for label in name.relativize(
            dns.name.root
        ).labels]  # fmt: skip
        if len(labels) == 2 and labels[1] == MESH_SUFFIX:
            return labels[0], True
        if len(labels) == 1 and labels[0] == MESH_SUFFIX:
            return None, True
        if len(labels) > 2 and labels[-1] == MESH_SUFFIX:
            return None, True
        if self.bare_names and len(labels) == 1:
            return labels[0], False
        return None, False

    def _mesh_answer(self, query: dns.message.Message, question: dns.rrset.RRset) -> bytes | None:
        service, ours = self.service_for(question.name)
        if service is None and not ours:
            return None
        table = self.table()
        vip = table.vip(service) if service is not None else None
        if vip is None:
            if not ours:
                return None  # a bare name we do not know: the host's resolvers may
            self._count(DnsCounter.NXDOMAIN)
            return _error(query, dns.rcode.NXDOMAIN, authoritative=True)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if question.rdclass == dns.rdataclass.IN and question.rdtype in (
            dns.rdatatype.A,
            dns.rdatatype.ANY,
        ):
            response.answer.append(
                dns.rrset.from_text(question.name, MESH_TTL, "IN", "A", str(vip))
            )
        # AAAA and other types: NOERROR with no data (the name exists, only as IPv4).
        self._count(DnsCounter.ANSWERED)
        return bytes(response.to_wire())

    def _forward(
        self, data: bytes, message: dns.message.Message, client: Address, now: float
    ) -> list[Action]:
        if self.upstreams <= 0 or len(self._pending) >= self.max_inflight:
            self._count(DnsCounter.OVERLOADED)
            return [Reply(client, _error(message, dns.rcode.SERVFAIL))]
        wire_id = self.rng.getrandbits(16)
        while wire_id in self._pending:
            wire_id = self.rng.getrandbits(16)
        self._pending[wire_id] = _Pending(
            client=client,
            client_id=message.id,
            question=_question_bytes(data),
            deadline=now + self.timeout,
            query=message,
        )
        upstream = self._next_upstream % self.upstreams
        self._next_upstream += 1
        self._count(DnsCounter.FORWARDED)
        return [Forward(upstream, wire_id.to_bytes(2, "big") + data[2:])]


def _question_bytes(data: bytes) -> bytes:
    """The question section as sent (names compared case-insensitively, 0x20 aside)."""
    if len(data) < 12 or int.from_bytes(data[4:6], "big") != 1:
        return b""
    end = 12
    while end < len(data):
        length = data[end]
        if length == 0:
            end += 1
            break
        if length & 0xC0:
            return b""  # a pointer in the first question: not something we sent
        end += 1 + length
    return data[12 : end + 4].lower()


def _error(
    query: dns.message.Message, rcode: dns.rcode.Rcode, *, authoritative: bool = False
) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if authoritative:
        response.flags |= dns.flags.AA
    return bytes(response.to_wire())
