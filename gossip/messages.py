"""Gossip protocol messages and member metadata, as immutable values.

These are plain data: the codec (``gossip.codec``) turns them into bytes and back,
the state machine (``gossip.swim``) decides what they mean. Keeping them frozen
means a decoded message can be shared, cached and compared without defensive
copies.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

Address = tuple[str, int]
"""A UDP endpoint: ``(host, port)``."""

DEFAULT_GOSSIP_PORT = 15946
DEFAULT_INBOUND_PORT = 15443


class MemberState(enum.IntEnum):
    """What a node believes about a member; the order is the order of severity."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Service:
    """One service fronted by a node, with the labels the balancer selects on."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, key: str, default: str | None = None) -> str | None:
        """The value of one label (``version``, ``zone``...), or ``default``."""
        for k, v in self.labels:
            if k == key:
                return v
        return default

    def labels_dict(self) -> dict[str, str]:
        """The labels as a fresh dict, for callers that want a mapping."""
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What a member advertises about itself: the endpoint table the proxy balances over.

    ``addresses[0]`` is the address other members send gossip to; the rest are
    extra addresses the inbound listener is reachable on. ``version`` grows with
    every change so consumers can tell a new advertisement from a repeat.
    """

    addresses: tuple[str, ...]
    gossip_port: int = DEFAULT_GOSSIP_PORT
    inbound_port: int = DEFAULT_INBOUND_PORT
    services: tuple[Service, ...] = ()
    version: int = 0

    @classmethod
    def create(
        cls,
        addresses: str | tuple[str, ...] | list[str],
        *,
        gossip_port: int = DEFAULT_GOSSIP_PORT,
        inbound_port: int = DEFAULT_INBOUND_PORT,
        services: Mapping[str, Mapping[str, str]] | None = None,
        version: int = 0,
    ) -> NodeMeta:
        """Build metadata from friendly types, sorted so equal content encodes equally."""
        addrs = (addresses,) if isinstance(addresses, str) else tuple(addresses)
        svcs = tuple(
            Service(name, tuple(sorted((str(k), str(v)) for k, v in labels.items())))
            for name, labels in sorted((services or {}).items())
        )
        return cls(addrs, gossip_port, inbound_port, svcs, version)

    @property
    def gossip_addr(self) -> Address:
        """Where this member receives gossip datagrams."""
        return (self.addresses[0] if self.addresses else "", self.gossip_port)

    def services_map(self) -> dict[str, dict[str, str]]:
        """Services and their labels as plain dicts, e.g. ``{"orders": {"version": "v2"}}``."""
        return {s.name: dict(s.labels) for s in self.services}

    def service(self, name: str) -> Service | None:
        """The named service if this member fronts it."""
        for s in self.services:
            if s.name == name:
                return s
        return None

    def with_services(self, services: Mapping[str, Mapping[str, str]]) -> NodeMeta:
        """A copy advertising ``services`` instead, with the version bumped."""
        fresh = NodeMeta.create(
            self.addresses,
            gossip_port=self.gossip_port,
            inbound_port=self.inbound_port,
            services=services,
            version=self.version + 1,
        )
        return fresh


# --- failure detection -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? ``target`` names the intended receiver (None when only an address is known,
    e.g. a seed) so a node that took over an old address does not answer for someone else.

    ``introduce`` asks the receiver to put its own Alive in the ack: sent to a member
    that talks to us although we have never heard of it (it joined while we were cut off).
    """

    seq: int
    target: str | None
    introduce: bool = False


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Please ping ``target`` for me and relay its ack (SWIM's k indirect probes).

    ``want_nack`` asks the helper to answer Nack when the target stays silent, so
    the requester can tell "target is down" from "I am the one who is cut off"
    (Lifeguard's local health signal).
    """

    seq: int
    target: str
    target_addr: Address
    want_nack: bool = True


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a Ping, or a helper relaying the target's answer."""

    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    """A helper could not reach the target of an IndirectPing in time."""

    seq: int


# --- membership state (gossiped, piggybacked) ------------------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    """``node`` is alive at ``incarnation`` with ``meta``; newer incarnations win."""

    node: str
    incarnation: int
    meta: NodeMeta


@dataclass(frozen=True, slots=True)
class Suspect:
    """``sender`` suspects ``node`` at ``incarnation``; it has a while to refute."""

    node: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``node`` is dead at ``incarnation``. When ``sender == node`` it is a graceful leave."""

    node: str
    incarnation: int
    sender: str

    @classmethod
    def leave(cls, node: str, incarnation: int) -> Dead:
        """The message a node sends about itself when it leaves on purpose."""
        return cls(node, incarnation, node)

    @property
    def is_leave(self) -> bool:
        """True when the node declared itself gone: a leave, not a failure."""
        return self.sender == self.node


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead
"""Anything that can travel inside one datagram."""


@dataclass(frozen=True, slots=True)
class Compound:
    """The content of one datagram: several messages from one sender.

    Piggybacking membership changes on probes is what makes SWIM dissemination
    cost nothing extra; the codec packs as many as fit in the datagram budget.
    """

    sender: str
    messages: tuple[Message, ...]


# --- push-pull (full state exchange, carried over HTTP/2 by the shell) -----------


@dataclass(frozen=True, slots=True)
class PushPullEntry:
    """One member as the sender sees it."""

    node: str
    incarnation: int
    state: MemberState
    meta: NodeMeta


@dataclass(frozen=True, slots=True)
class PushPullState:
    """A node's whole member table, so two long-separated members can reconcile."""

    sender: str
    members: tuple[PushPullEntry, ...]


# --- what the state machine tells its owner --------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one member as this node sees it."""

    name: str
    incarnation: int
    state: MemberState
    meta: NodeMeta
    state_since: float

    @property
    def addr(self) -> Address:
        """Where the member receives gossip."""
        return self.meta.gossip_addr
