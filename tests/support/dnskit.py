"""A small authoritative DNS responder on a loopback UDP port, for seed discovery tests.

``records`` maps (name, type) to rdata texts; ``hostile`` replaces the whole reply with
raw bytes so tests can send garbage, oversize or mismatched answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio


@dataclass
class DnsResponder:
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    ttl: int = 30
    hostile: bytes | None = None
    queries: int = 0
    address: tuple[str, int] = ("127.0.0.1", 0)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            self.address = sock.getsockname()
            task_status.started()
            while True:
                wire, peer = await sock.recvfrom(4096)
                self.queries += 1
                await sock.sendto(self.hostile or self.answer(wire), peer)

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        texts = self.records.get(key)
        if texts is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, self.ttl, dns.rdataclass.IN, question.rdtype, texts
                )
            )
        return response.to_wire(max_size=65535)
