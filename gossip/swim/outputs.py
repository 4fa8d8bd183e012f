"""What the SWIM core hands its owner: actions to carry out, membership events, counters."""

from __future__ import annotations

from dataclasses import dataclass

from gossip.messages import Address, Member


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``data`` as one UDP datagram to ``addr``."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Exchange full state with the member at ``addr`` (``node`` is None for a seed).

    The shell POSTs :meth:`Swim.push_pull_state` to the peer, which merges it
    *before* answering with its own state, and merges the answer with
    :meth:`Swim.merge_push_pull`.
    """

    addr: Address
    node: str | None


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """Something happened to ``member`` (its state as the table now holds it)."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberJoined(MemberEvent):
    """A member appeared, or came back after being dead or gone."""


@dataclass(frozen=True, slots=True)
class _Accused(MemberEvent):
    """A member another one (``accuser``) reported as failing."""

    accuser: str


@dataclass(frozen=True, slots=True)
class MemberSuspect(_Accused):
    """A member stopped answering; it is kept (deprioritised) while it may refute."""


@dataclass(frozen=True, slots=True)
class MemberDead(_Accused):
    """A member failed: take it out of service now."""


@dataclass(frozen=True, slots=True)
class MemberLeft(MemberEvent):
    """A member left on purpose."""


@dataclass(frozen=True, slots=True)
class MemberUpdated(MemberEvent):
    """A member changed its metadata or recovered from suspicion."""


Action = SendDatagram | StartPushPull
Event = MemberJoined | MemberSuspect | MemberDead | MemberLeft | MemberUpdated
Output = Action | Event


@dataclass(slots=True)
class SwimStats:
    """Counters for metrics (``peermesh_gossip_*``) and tests."""

    probes: int = 0
    probe_acks: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    nacks_received: int = 0
    refutations: int = 0
    suspicions: int = 0
    push_pulls: int = 0
    push_pull_rejected: int = 0
    reconnect_pings: int = 0


__all__ = [
    "Action",
    "Event",
    "MemberDead",
    "MemberJoined",
    "MemberLeft",
    "MemberSuspect",
    "MemberUpdated",
    "Output",
    "SendDatagram",
    "StartPushPull",
    "SwimStats",
]
