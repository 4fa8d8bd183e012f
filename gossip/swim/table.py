"""The core's internal records: one member, one probe in flight, one relay, a sampled set."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from gossip.codec import decode_meta
from gossip.messages import Address, Member, MemberState


class _Node:
    __slots__ = ("blob", "incarnation", "meta", "name", "since", "state")

    def __init__(
        self, name: str, incarnation: int, state: MemberState, blob: bytes, since: float
    ) -> None:
        self.name = sys.intern(name)  # one string per name, however many tables hold it
        self.incarnation = incarnation
        self.state = state
        self.blob = blob  # metadata as sent on the wire: cheap to compare and resend
        self.meta = decode_meta(blob)
        self.since = since

    def snapshot(self) -> Member:
        return Member(self.name, self.incarnation, self.state, self.meta, self.since)


@dataclass(slots=True, eq=False)
class _Probe:
    target: str
    seq: int
    timeout_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True, eq=False)
class _Relay:
    """We are helping someone probe ``target`` indirectly."""

    requester: Address
    seq: int
    want_nack: bool
    nack_at: float
    expires: float


class _Roster:
    """A set of names with O(1) add, remove and uniform random sampling."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return name in self.pos

    def add(self, name: str) -> None:
        if name not in self.pos:
            self.pos[name] = len(self.items)
            self.items.append(name)

    def remove(self, name: str) -> None:
        i = self.pos.pop(name, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def sample(self, rng: random.Random, k: int) -> list[str]:
        k = min(k, len(self.items))
        return rng.sample(self.items, k) if k else []
