"""What a peer's update must pass, entry by entry, before the replica's document sees it.

The update has been applied to the scratch copy (:class:`~peermesh.policy.crdt.VersionsDoc`)
and these are the map events it caused there. Undecodable or malformed records, invalid
or oversized objects, content that does not match its hash, unsigned or forged records
(with a verifier), forged Lamport counters and deletions the pruning rule does not allow
each refuse the whole update; nothing of it is applied then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from peermesh.policy.authority import is_authority
from peermesh.policy.crdt import Event
from peermesh.policy.errors import AuthorshipError, NoIdentity, PolicyError, UpdateRefused
from peermesh.policy.index import Known, VersionIndex
from peermesh.policy.records import (
    MAX_LAMPORT_JUMP,
    VersionRecord,
    decode_cached,
    record_ceiling_floor,
)


class Verifier(Protocol):
    """Checks a record's signature by a mesh identity (:class:`RecordVerifier` does)."""

    def verify(self, record: VersionRecord) -> None:
        """Return if authentic; raise ``AuthorshipError`` (``NoIdentity``: cannot tell yet)."""


def check_entries(
    events: Iterable[Event], *, source: str, verifier: Verifier | None, index: VersionIndex
) -> dict[str, Known]:
    """The update's new entries, decoded and checked; raises :class:`UpdateRefused`."""
    checked: dict[str, Known] = {}
    deleted: list[str] = []
    for key, action, value in events:
        if action == "delete":
            if verifier is not None and is_authority(key):
                raise UpdateRefused(
                    source,
                    f"update deletes MeshConfig version {key!r}; MeshConfig history is"
                    " never pruned because it decides who may edit",
                )
            deleted.append(key)
            continue  # history pruning (see peermesh.policy.index)
        try:
            record, obj = decode_cached(key, value)
        except PolicyError as exc:
            raise UpdateRefused(source, f"invalid object in entry {key!r}: {exc}", exc) from None
        except ValueError as exc:
            raise UpdateRefused(source, str(exc)) from None
        if verifier is not None:
            try:
                verifier.verify(record)
            except NoIdentity as exc:
                raise UpdateRefused(source, str(exc)) from None
            except AuthorshipError as exc:
                raise UpdateRefused(
                    source,
                    f"entry {key!r} {exc}; forged or corrupt records never win",
                    unsigned=not record.signed,
                ) from None
        ceiling = max(index.lamport, record_ceiling_floor()) + MAX_LAMPORT_JUMP
        if record.lamport > ceiling:
            # A forged huge counter would make every later edit lose (or overflow):
            # no honest partition produces a jump of this size.
            raise UpdateRefused(
                source,
                f"entry {key!r} has Lamport counter {record.lamport}, implausibly far"
                f" ahead of ours ({index.lamport}); refusing a forged or corrupt clock",
            )
        checked[key] = (value, record, obj)
    if verifier is not None and deleted:
        _check_prunes(deleted, checked, source, index)
    return checked


def _check_prunes(
    deleted: list[str], checked: Mapping[str, Known], source: str, index: VersionIndex
) -> None:
    """With a verifier, a peer may delete only what the pruning rule allows.

    Deletions carry no signature, so a compromised agent could otherwise roll objects
    back by deleting their newest versions. A version may go only if, after the
    update, ``history_limit`` versions of the same object by the same author rank
    above it (see :meth:`VersionIndex.prunable`). Those are never pruned anywhere, so a
    sync reply (which carries all we lack) always justifies its deletions; a push that
    arrives before the versions that justify its deletions is refused and the edit
    comes again with anti-entropy.
    """
    gone = set(deleted)
    for key in deleted:
        obj_key = key.partition("|")[0]
        victim = index.versions.get(obj_key, {}).get(key)
        if victim is None:
            continue
        versions = dict(index.versions.get(obj_key, {}))
        versions.update((k, c[1]) for k, c in checked.items() if k.startswith(obj_key + "|"))
        above = sum(
            1
            for r in versions.values()
            if r.map_key not in gone and r.author == victim.author and r.rank > victim.rank
        )
        if above < index.history_limit:
            raise UpdateRefused(
                source,
                f"update deletes version {victim.edit_id} of {obj_key}, one of the"
                f" {index.history_limit} newest by {victim.author} that we hold; only older"
                " history may be pruned (out-of-order delivery, or a rollback attempt)",
            )
