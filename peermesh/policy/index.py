"""What a replica derives from its versions: versions per object, winners, parsed objects.

Never replicated: every replica computes it identically from the same set of versions.
The winner of an object is its highest-ranked ``(lamport, node, hash)`` version that may
win (see :mod:`~peermesh.policy.authority`); a delete is a version too.

History is bounded: when a node writes a version it deletes, in the same transaction, the
versions of that object that have ``history_limit`` or more higher-ranked versions
(:meth:`VersionIndex.prunable`). That rule never removes a version in the global top
``history_limit``, so pruning by different nodes at different times cannot change any
winner and converges like any other delete. If a prune reaches a replica before the newer
versions that justified it, the pruned winner stays in effect as a local *shadow* until a
higher-ranked version arrives, so an object never reverts to an older version or
disappears meanwhile; ``shadowed_winners`` counts these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TypeAlias

from peermesh.policy.authority import Authority, is_authority
from peermesh.policy.crdt import Event
from peermesh.policy.errors import PolicyError, PolicyWarning
from peermesh.policy.model import PolicyObject
from peermesh.policy.records import VersionRecord, decode_cached
from peermesh.policy.results import HistoryEntry
from peermesh.policy.validate import check_set, hosts_of, parse_object

log = logging.getLogger(__name__)

#: An entry checked (or written) in the current step: its JSON, record and object.
Known: TypeAlias = tuple[str, VersionRecord, PolicyObject | None]


class VersionIndex:
    """Versions per object, their winners and the winning objects, kept up to date."""

    def __init__(self, authority: Authority, history_limit: int) -> None:
        self.authority = authority
        self.history_limit = history_limit
        self.versions: dict[str, dict[str, VersionRecord]] = {}
        self.winners: dict[str, VersionRecord] = {}
        self.objects: dict[str, PolicyObject] = {}
        self._hosts: dict[str, frozenset[str]] = {}
        self._by_host: dict[str, set[str]] = {}  # service -> keys of objects naming it
        self.shadows: dict[str, VersionRecord] = {}  # see _effective_winner
        # Entries validated (or written) in the current step, so they are decoded only once.
        self.known: dict[str, Known] = {}
        self.lamport = 0
        self.ignored_entries = 0
        self.shadowed_winners = 0

    def absorb(self, events: Iterable[Event]) -> tuple[set[str], int, int]:
        """Fold map events into the index; return (changed winners, added, pruned)."""
        touched: set[str] = set()
        added = pruned = 0
        for map_key, action, value in events:
            obj_key = map_key.partition("|")[0]
            versions = self.versions.setdefault(obj_key, {})
            touched.add(obj_key)
            if action == "delete":
                if versions.pop(map_key, None) is not None:
                    pruned += 1
                continue
            try:
                record, obj = self._decode_trusted(map_key, value)
            except ValueError as exc:
                # Only reachable if an entry bypassed the scratch check; it must never win.
                self.ignored_entries += 1
                log.error("ignoring invalid policy entry %r: %s", map_key, exc)
                continue
            if map_key not in versions:
                added += 1
            versions[map_key] = record
            self.lamport = max(self.lamport, record.lamport)
            if obj is not None:
                self.known[map_key] = (value, record, obj)
        changed = self.refresh(touched)
        self.known.clear()
        return changed, added, pruned

    def refresh(self, touched: Iterable[str]) -> set[str]:
        """Recompute the winners of ``touched`` objects; return those that changed."""
        changed: set[str] = set()
        touched = set(touched)
        authority = any(is_authority(k) for k in touched)
        if self.authority.enforced and authority and self.authority.recompute(self.versions):
            # Who may win changed for every object: recompute them all.
            touched |= set(self.versions) | set(self.shadows) | set(self.winners)
        for obj_key in touched:
            versions = self.versions.get(obj_key, {})
            if not versions:
                self.versions.pop(obj_key, None)
            best = self._effective_winner(obj_key, versions)
            previous = self.winners.get(obj_key)
            if best == previous:
                continue
            changed.add(obj_key)
            self.objects.pop(obj_key, None)
            for host in self._hosts.pop(obj_key, frozenset()):
                self._by_host[host].discard(obj_key)
            if best is None:
                self.winners.pop(obj_key, None)
                continue
            self.winners[obj_key] = best
            if not best.deleted:
                known = self.known.get(best.map_key)
                obj = known[2] if known else None
                if obj is None:
                    assert best.body is not None
                    obj = parse_object(json.loads(best.body))
                self.objects[obj_key] = obj
                self._hosts[obj_key] = hosts_of(obj)
                for host in self._hosts[obj_key]:
                    self._by_host.setdefault(host, set()).add(obj_key)
        return changed

    def _effective_winner(
        self, obj_key: str, versions: Mapping[str, VersionRecord]
    ) -> VersionRecord | None:
        """The highest-ranked live version, or a *shadow* of a pruned winner.

        Every delta carries the sender's whole delete set, so a replica can learn that a
        version was pruned before it receives the newer versions that justified pruning it.
        Rather than fall back to an older version (or lose the object) meanwhile, the pruned
        winner stays in effect as a local shadow until something ranked above it arrives;
        the pruning rule guarantees such versions exist, so shadows always resolve, and a
        fully synced replica has none.
        """
        authorized = self.authority.authorized
        if self.authority.enforced:
            if is_authority(obj_key):  # never pruned, so never shadowed
                return self.authority.winner(obj_key)
            versions = {k: r for k, r in versions.items() if authorized(r)}
        best = max(versions.values(), key=lambda r: r.rank) if versions else None
        previous = self.winners.get(obj_key)
        shadow = self.shadows.get(obj_key)
        if shadow is not None and not authorized(shadow):
            del self.shadows[obj_key]
            shadow = None
        if previous is not None and not authorized(previous):
            previous = None
        if (
            previous is not None
            and previous.map_key not in versions
            and (best is None or best.rank < previous.rank)
        ):
            if shadow is None or shadow.rank < previous.rank:
                self.shadowed_winners += 1
                log.info(
                    "%s: keeping pruned winner %s until newer versions arrive",
                    obj_key,
                    previous.edit_id,
                )
            shadow = self.shadows[obj_key] = previous
        if shadow is not None and best is not None and best.rank > shadow.rank:
            del self.shadows[obj_key]
            shadow = None
        return shadow if shadow is not None else best

    def _decode_trusted(
        self, map_key: str, value: object
    ) -> tuple[VersionRecord, PolicyObject | None]:
        """An entry checked on the scratch Doc (or written by us) is not decoded again."""
        known = self.known.get(map_key)
        if known is not None and known[0] == value:
            return known[1], known[2]
        return decode_cached(map_key, value)

    def restore_shadow(self, record: VersionRecord) -> None:
        """Reinstate a persisted shadow unless a version ranked above it arrived meanwhile."""
        self.lamport = max(self.lamport, record.lamport)
        current = self.winners.get(record.key)
        if current is None or current.rank < record.rank:
            self.shadows[record.key] = record
            self.refresh([record.key])

    def prunable(
        self, key: str, *, extra: VersionRecord, present: Callable[[str], bool]
    ) -> list[str]:
        """Map keys of versions with at least ``history_limit`` higher-ranked versions.

        With authority enforced, only higher-ranked versions *by the same author* count:
        whether a version may win depends on its author's standing, which can change later,
        and a version with a same-author version above it can never win (both are in
        effect or neither is). So pruning never removes a future winner, whatever happens
        to the admin set, and a non-admin's flood of versions cannot push an admin's winner
        out. MeshConfig is never pruned then (authority is decided by its whole history).
        ``present`` tells whether a map key is still in the document.
        """
        records = dict(self.versions.get(key, {}))
        records[extra.map_key] = extra
        ranked = sorted(records.values(), key=lambda r: r.rank, reverse=True)
        if not self.authority.enforced:
            return [r.map_key for r in ranked[self.history_limit :] if present(r.map_key)]
        if is_authority(extra.key):
            return []
        stale: list[str] = []
        above: dict[str | None, int] = {}
        for r in ranked:
            count = above.get(r.author, 0)
            if count >= self.history_limit and present(r.map_key):
                stale.append(r.map_key)
            above[r.author] = count + 1
        return stale

    def cross_check(
        self,
        upserts: list[PolicyObject],
        deletes: set[str],
        known_services: Collection[str] | None,
    ) -> tuple[PolicyWarning, ...]:
        """Refuse only problems this edit introduces; report pre-existing ones as warnings.

        Replication can leave inconsistencies nobody could have refused (a subset deleted on
        one node while a route to it was added on another); they must not block unrelated
        edits, so the check compares related objects before and after the edit.
        """
        written = {o.key for o in upserts}
        touched: set[str] = set()
        for obj in upserts:
            touched |= hosts_of(obj)
        for key in written | deletes:
            touched |= self._hosts.get(key, frozenset())
        related = {key for host in touched for key in self._by_host.get(host, ())}
        before = [self.objects[key] for key in sorted(related)]
        after = [obj for obj in before if obj.key not in written and obj.key not in deletes]
        after.extend(upserts)
        existing = {e.identity() for e in check_set(before).errors}
        result = check_set(after, known_services)
        new_errors = [e for e in result.errors if e.identity() not in existing]
        if new_errors:
            raise PolicyError.collect(new_errors)
        return tuple(w for w in result.warnings if f"{w.kind}/{w.name}" in written)

    def history(self, key: str) -> list[HistoryEntry]:
        """Kept versions of one object, newest (winning) first."""
        records = dict(self.versions.get(key, {}))
        shadow = self.shadows.get(key)
        if shadow is not None:
            records[shadow.map_key] = shadow
        winner = self.winners.get(key)
        return [
            HistoryEntry(
                edit_id=r.edit_id,
                node=r.node,
                lamport=r.lamport,
                time=r.time,
                hash=r.hash,
                deleted=r.deleted,
                won=r == winner,
                object=parse_object(json.loads(r.body)) if r.body is not None else None,
                author=r.author,
                authorized=self.authority.authorized(r),
            )
            for r in sorted(records.values(), key=lambda r: r.rank, reverse=True)
        ]
