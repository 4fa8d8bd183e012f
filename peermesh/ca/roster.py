"""Bootstrap decisions (sans-IO): who is in the initial committee, and its parameters.

Agents started with the same ``--bootstrap-token-file`` and ``--bootstrap-expect N``
tell each other who they are (``ca/bootstrap/hello``, token-authenticated) and merge
what they hear into a :class:`Roster`. When a roster holds N entries every agent
derives the same committee from it: members sorted by node name get identifiers
1..N, the threshold is ⌊N/2⌋+1 unless ``--threshold`` says otherwise, and the
lowest name relays the DKG and coordinates the root signature. Nobody has to trust
the coordinator: every participant checks the run against its own roster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from certs.spiffe import SpiffeId
from peermesh.ca.errors import RosterError
from peermesh.ca.state import CommitteeMember
from peermesh.core.codec import WireMessage, wire

__all__ = ["Roster", "RosterEntry", "RosterError", "default_threshold", "root_validity"]

_MAX_NAME = 253
_MAX_AGENTS = 1024


def default_threshold(n: int) -> int:
    """A majority: any two quorums overlap, so a used-up token cannot be replayed."""
    return n // 2 + 1


class RosterEntry(
    WireMessage,
    what="roster entry",
    refuse=lambda exc: RosterError(f"roster entry is malformed: {exc}"),
):
    """What one initial agent says about itself (authenticated by the bootstrap token)."""

    node: str = wire(max_len=_MAX_NAME)
    service: str = wire(max_len=_MAX_NAME)
    identity_key: bytes = wire(max_len=64)
    bootstrap: tuple[str, int] = wire(item_len=_MAX_NAME)
    inbound: tuple[str, int] = wire(item_len=_MAX_NAME)
    expect: int = wire(minimum=1, maximum=_MAX_AGENTS)
    threshold: int = wire(minimum=1, maximum=_MAX_AGENTS)
    trust_domain: str = wire(max_len=_MAX_NAME)

    def check_decoded(self) -> None:
        if len(self.identity_key) != 32:
            raise RosterError(f"roster entry of {self.node}: identity key is not 32 bytes")

    @property
    def spiffe_id(self) -> str:
        return str(SpiffeId.for_service(self.trust_domain, self.service))


class Roster:
    """The initial agents this one knows of, keyed by node name."""

    def __init__(self, me: RosterEntry) -> None:
        self.me = me
        self.entries: dict[str, RosterEntry] = {me.node: me}
        self.problems: list[str] = []

    def merge(self, wire_entries: Iterable[Any]) -> None:
        """Add what a peer told us; inconsistent entries are refused and remembered."""
        for raw in wire_entries:
            try:
                entry = RosterEntry.from_wire(raw)
                self._check(entry)
            except RosterError as exc:
                if str(exc) not in self.problems:
                    self.problems.append(str(exc))
                continue
            self.entries.setdefault(entry.node, entry)

    def _check(self, entry: RosterEntry) -> None:
        me = self.me
        if entry.expect != me.expect:
            raise RosterError(
                f"{entry.node} expects {entry.expect} agents, {me.node} expects {me.expect}:"
                " start every initial agent with the same --bootstrap-expect"
            )
        if entry.threshold != me.threshold:
            raise RosterError(
                f"{entry.node} uses threshold {entry.threshold}, {me.node} {me.threshold}:"
                " give every initial agent the same --threshold"
            )
        if entry.trust_domain != me.trust_domain:
            raise RosterError(
                f"{entry.node} is in trust domain {entry.trust_domain!r}, {me.node} in"
                f" {me.trust_domain!r}: use one --trust-domain"
            )
        known = self.entries.get(entry.node)
        if known is not None and known.identity_key != entry.identity_key:
            raise RosterError(
                f"two agents call themselves {entry.node} (different identity keys);"
                " node names must be unique"
            )

    def wire(self) -> list[dict[str, Any]]:
        return [e.to_wire() for _, e in sorted(self.entries.items())]

    @property
    def complete(self) -> bool:
        return len(self.entries) >= self.me.expect

    def members(self) -> tuple[CommitteeMember, ...]:
        """The committee derived from a complete roster (sorted names -> 1..N)."""
        return tuple(
            CommitteeMember(
                node=e.node,
                identifier=i,
                identity_key=e.identity_key,
                service=e.service,
                address=e.inbound,
                bootstrap=e.bootstrap,
            )
            for i, (_, e) in enumerate(sorted(self.entries.items()), start=1)
        )

    def participants(self) -> Mapping[str, tuple[int, bytes]]:
        return {m.node: (m.identifier, m.identity_key) for m in self.members()}

    @property
    def coordinator(self) -> str:
        return min(self.entries)


def root_validity(now: dt.datetime, years: int = 10) -> tuple[dt.datetime, dt.datetime]:
    """The root's validity window (a little back-dated for clock skew)."""
    start = now - dt.timedelta(minutes=5)
    return start, start + dt.timedelta(days=365 * years)
