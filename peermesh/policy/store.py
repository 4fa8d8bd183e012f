"""The replicated policy store: every policy object of the mesh, sans-IO.

One pycrdt document per agent (:mod:`~peermesh.policy.crdt`) holds every version of every
object as a record written once and never overwritten (:mod:`~peermesh.policy.records`),
so concurrent edits never collide inside the CRDT. The winner of an object is chosen on
read as the version with the largest ``(lamport, node, hash)``, which every replica
computes identically from the same set of versions (:mod:`~peermesh.policy.index`); a
delete is a version with ``deleted: true``. Wall time is recorded for history only:
ordering by Lamport counter means a node with a skewed clock cannot make an old edit win.
History is bounded by pruning that never changes a winner (see the index).

Authorship (agents; see :mod:`~peermesh.policy.authorship`): records are signed by the
writing agent's mesh identity, records from peers must verify, and the MeshConfig
``admins`` chain (:mod:`~peermesh.policy.authority`) decides which versions may win.
Without a signer and verifier (unit tests, simulations, benchmarks) records are unsigned
and everything else holds as is.

Remote updates are checked whole on a scratch copy of the document before the real one
sees them (:mod:`~peermesh.policy.intake`); a refused update leaves the store untouched.
Durability is handed in as a :class:`~peermesh.policy.storage.Persistence`: each change is
appended to it before the edit is acknowledged, and folded into a snapshot now and then.
A change that cannot be appended (a full disk) is not acknowledged and not kept: the
store reloads itself from what the disk holds, so memory and disk never disagree.
The store never opens a file, sleeps or reads a clock (``now`` is a parameter).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final, Protocol

from peermesh.core.durable import StorageFailed
from peermesh.policy.anchor import AdminEndorsement, AdminSetAnchor
from peermesh.policy.authority import Authority
from peermesh.policy.compiled import CompiledPolicy, compile_policy
from peermesh.policy.crdt import VERSIONS_ROOT, VersionsDoc, decode_state_vector
from peermesh.policy.edits import parse_edit
from peermesh.policy.errors import NoIdentity, PolicyStoreCorrupt, UpdateRefused
from peermesh.policy.index import Known, VersionIndex
from peermesh.policy.intake import Verifier, check_entries
from peermesh.policy.model import MESH_CONFIG, PolicyObject, object_key, split_key
from peermesh.policy.records import (
    VersionRecord,
    content_hash,
    decode_record,
    tombstone_hash,
    valid_node_name,
)
from peermesh.policy.results import ApplyReport, ApplyResult, HistoryEntry, StoreStatus
from peermesh.policy.storage import JournalRecordInvalid, Persistence, ReplayReport, Snapshot
from peermesh.policy.validate import canonical_json

__all__ = [
    "COMPACT_AFTER_BYTES",
    "HISTORY_LIMIT",
    "MAX_UPDATE_BYTES",
    "VERSIONS_ROOT",
    "ApplyReport",
    "ApplyResult",
    "HistoryEntry",
    "PolicyStore",
    "PolicyStoreCorrupt",
    "Signer",
    "StoreStatus",
    "UpdateRefused",
    "decode_state_vector",
]

log = logging.getLogger(__name__)

HISTORY_LIMIT: Final = 16
#: A whole-document update from a peer; far above 10,000 objects with full history.
MAX_UPDATE_BYTES: Final = 256 * 1024 * 1024
#: Fold the update log into the snapshot once it is this big.
COMPACT_AFTER_BYTES: Final = 4 << 20


class Signer(Protocol):
    """Signs records as this agent's identity (:class:`RecordSigner` does)."""

    def identity(self) -> str:
        """The SPIFFE ID records are signed as now (raises ``NoIdentity`` before one)."""

    def sign(self, record: VersionRecord) -> VersionRecord:
        """The same record with ``author``, ``cert`` and ``sig`` filled in."""


class PolicyStore:
    """Every policy object of the mesh, replicated, validated, durable, sans-IO.

    Not thread-safe: keep it on the trio thread, as the pycrdt Doc requires. Time comes in
    as ``now`` (seconds since the epoch, recorded in history only; ordering uses Lamport).

    With a ``signer`` every version written here is signed by the agent's identity. With
    a ``verifier`` every version from a peer, the snapshot or the log must be signed by a
    mesh identity (else the whole update is refused, as for invalid content), and
    MeshConfig authority applies (:mod:`~peermesh.policy.authority`).
    """

    def __init__(
        self,
        persistence: Persistence | None = None,
        *,
        node: str,
        history_limit: int = HISTORY_LIMIT,
        client_id: int | None = None,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        anchor: AdminSetAnchor | None = None,
    ) -> None:
        if not valid_node_name(node):
            raise ValueError(f"node name {node!r} must be letters, digits, '-', '_' or '.'")
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.node = node
        self.persistence = persistence
        self.signer = signer
        self.verifier = verifier
        self._client_id = client_id
        self.anchor = anchor
        self._authority = Authority(enforced=verifier is not None, anchor=anchor)
        self._doc = VersionsDoc(client_id)
        self._index = VersionIndex(self._authority, history_limit)
        self._version = 0
        self._subscribers: list[Callable[[frozenset[str]], None]] = []
        self._notifying = False
        self._closed = False
        self._digest: tuple[int, str] | None = None
        self._compiled: tuple[int, CompiledPolicy] | None = None
        self.refused_updates = 0
        self.last_refusal: UpdateRefused | None = None
        self.compact_after_bytes = COMPACT_AFTER_BYTES
        self.journal_report: ReplayReport | None = None
        if persistence is not None:
            self._load(persistence)

    # ------------------------------------------------------------------ reading

    @property
    def version(self) -> int:
        """Bumped by every change of the stored versions, local or remote."""
        return self._version

    @property
    def history_limit(self) -> int:
        return self._index.history_limit

    @property
    def shadowed_winners(self) -> int:
        """How often a pruned winner was kept in effect until newer versions arrived."""
        return self._index.shadowed_winners

    @property
    def ignored_entries(self) -> int:
        return self._index.ignored_entries

    def get(self, kind: str, name: str) -> PolicyObject | None:
        """The winning object, or None if it never existed or its winner is a delete."""
        return self._index.objects.get(object_key(kind, name))

    def objects(self, kind: str | None = None) -> list[PolicyObject]:
        """Winning objects sorted by kind and name."""
        items = sorted(self._index.objects.items())
        return [obj for _, obj in items if kind is None or obj.kind == kind]

    def __len__(self) -> int:
        return len(self._index.objects)

    def __contains__(self, key: str) -> bool:
        return key in self._index.objects

    def winner(self, kind: str, name: str) -> VersionRecord | None:
        """The winning version (possibly a delete) of an object."""
        return self._index.winners.get(object_key(kind, name))

    @property
    def admins(self) -> frozenset[str]:
        """Effective MeshConfig admins (always empty without a verifier)."""
        return self._authority.admins

    @property
    def admin_epoch(self) -> int:
        """How many endorsed admin-set changes the walk found (0 without an anchor)."""
        return self._authority.epoch

    @property
    def unendorsed_admin_changes(self) -> int:
        """MeshConfig versions seen changing the admin set without a valid endorsement."""
        return self._authority.unendorsed_changes

    def needs_endorsement(self, admins: frozenset[str]) -> bool:
        """Whether writing a MeshConfig with ``admins`` needs the committee's endorsement."""
        return self._authority.needs_endorsement(admins)

    def authorized(self, record: VersionRecord) -> bool:
        """Whether ``record`` may win: always without a verifier, else by authority."""
        return self._authority.authorized(record)

    def check_author(self) -> str | None:
        """The identity local edits are signed as, if it may edit now.

        Raises :class:`NoIdentity` (no certificate yet) or :class:`NotAdmin`; returns None
        for a store without a signer.
        """
        if self.signer is None:
            if self.verifier is not None:
                raise NoIdentity(
                    "this policy store checks signatures but has no signer; it cannot edit"
                )
            return None
        author = self.signer.identity()
        self._authority.require_admin(author)
        return author

    def has_edit(self, key: str, edit_id: str) -> bool:
        """Whether this replica holds version ``edit_id`` of object ``key``."""
        return f"{key}|{edit_id}" in self._index.versions.get(key, {})

    def history(self, kind: str, name: str) -> list[HistoryEntry]:
        """Kept versions of one object, newest (winning) first."""
        return self._index.history(object_key(kind, name))

    def digest(self) -> str:
        """Stable hash of the winning objects: equal digests mean equal policy."""
        if self._digest is None or self._digest[0] != self._version:
            h = hashlib.sha256()
            for key in sorted(self._index.objects):
                h.update(f"{key}\n{self._index.winners[key].hash}\n".encode())
            self._digest = (self._version, h.hexdigest())
        return self._digest[1]

    def compiled(self) -> CompiledPolicy:
        """Routing/authorization tables for the current version, built once per change."""
        if self._compiled is None or self._compiled[0] != self._version:
            previous = self._compiled[1] if self._compiled else None
            objects = self._index.objects.values()
            self._compiled = (self._version, compile_policy(objects, previous))
        return self._compiled[1]

    def records(self) -> dict[str, str]:
        """The raw replicated content (map key -> record JSON), for convergence checks."""
        return self._doc.records()

    def status(self) -> StoreStatus:
        return StoreStatus(
            node=self.node,
            version=self._version,
            objects=len(self._index.objects),
            versions=sum(len(v) for v in self._index.versions.values()),
            digest=self.digest(),
            state_vector=decode_state_vector(self.state_vector()),
            refused_updates=self.refused_updates,
            shadowed=len(self._index.shadows),
            admins=tuple(sorted(self._authority.admins)),
        )

    # ------------------------------------------------------------------ local edits

    def apply(
        self,
        objects: Iterable[PolicyObject | Mapping[str, Any]],
        *,
        now: float,
        known_services: Collection[str] | None = None,
        endorsement: AdminEndorsement | None = None,
    ) -> ApplyReport:
        """Validate and write objects (documents or model objects) all together, or none.

        Returns after the edit is durable (when the store has persistence). Raises
        :class:`PolicyError` listing every problem; nothing is written then.
        """
        return self.edit(
            upserts=objects, now=now, known_services=known_services, endorsement=endorsement
        )

    def delete(self, keys: Iterable[str | tuple[str, str]], *, now: float) -> ApplyReport:
        """Delete objects (``"Kind/name"`` or ``(kind, name)``) by writing tombstones."""
        return self.edit(deletes=keys, now=now)

    def edit(
        self,
        *,
        upserts: Iterable[PolicyObject | Mapping[str, Any]] = (),
        deletes: Iterable[str | tuple[str, str]] = (),
        now: float,
        known_services: Collection[str] | None = None,
        endorsement: AdminEndorsement | None = None,
    ) -> ApplyReport:
        """Apply upserts and deletes in one transaction after validating all of them.

        If persisting fails, :class:`~peermesh.core.durable.StorageFailed` propagates and
        the edit is gone from memory too: it was never acknowledged, so it never
        replicates. With a signer,
        raises :class:`NoIdentity` or :class:`NotAdmin` before anything else (see
        :meth:`check_author`). With an anchor, a MeshConfig that changes the admin set
        must come with the committee's ``endorsement`` of that change
        (:class:`~peermesh.policy.errors.EndorsementRequired` otherwise).
        """
        self._check_writable()
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        author = self.check_author()
        now = float(now)
        parsed, delete_keys = parse_edit(upserts, deletes, self._index.objects)
        if self.verifier is not None and author is not None:
            Authority.check_lockout(author, parsed, delete_keys)
        endorsement = self._authority.check_edit(parsed, delete_keys, endorsement)
        warnings = self._index.cross_check(parsed, set(delete_keys), known_services)
        records: list[VersionRecord] = []
        unchanged: list[str] = []
        lamport = self._index.lamport + 1
        known = self._index.known
        for obj in parsed:
            body = canonical_json(obj)
            digest = content_hash(body)
            current = self._index.winners.get(obj.key)
            if current is not None and not current.deleted and current.hash == digest:
                unchanged.append(obj.key)
                continue
            record = self._sign(
                VersionRecord(obj.kind, obj.name, self.node, lamport, now, digest, False, body),
                endorsement if obj.kind == MESH_CONFIG else None,
            )
            records.append(record)
            known[record.map_key] = (record.encode(), record, obj)
        for key in delete_keys:
            kind, name = split_key(key)
            records.append(
                self._sign(
                    VersionRecord(
                        kind, name, self.node, lamport, now, tombstone_hash(kind, name), True, None
                    )
                )
            )
        if not records:
            return ApplyReport(self._version, (), tuple(unchanged), (), warnings, b"")
        entries = [
            (r.map_key, known[r.map_key][0] if r.map_key in known else r.encode()) for r in records
        ]
        present = self._doc.__contains__
        stale = [
            map_key
            for r in records
            for map_key in self._index.prunable(r.key, extra=r, present=present)
        ]
        update = self._doc.write(entries, stale)
        changed, _, _ = self._index.absorb(self._doc.take())
        self._commit(changed, update=update)
        return ApplyReport(
            version=self._version,
            changed=tuple(sorted(changed)),
            unchanged=tuple(unchanged),
            edits=tuple((r.key, r.edit_id) for r in records),
            warnings=warnings,
            update=update,
        )

    def _sign(
        self, record: VersionRecord, endorsement: AdminEndorsement | None = None
    ) -> VersionRecord:
        if endorsement is not None:
            record = dataclasses.replace(record, endorsement=endorsement)
        return self.signer.sign(record) if self.signer is not None else record

    # ------------------------------------------------------------------ sync

    def state_vector(self) -> bytes:
        """What we have, compactly: send it to a peer to receive only what we lack."""
        return self._doc.state_vector()

    def diff_since(self, remote_state_vector: bytes) -> bytes:
        """Everything we have that a peer with ``remote_state_vector`` lacks."""
        return self._doc.diff_since(remote_state_vector)

    def full_update(self) -> bytes:
        return self._doc.full_update()

    def apply_update(self, update: bytes, *, source: str) -> ApplyResult:
        """Merge a peer's update after checking it whole on a scratch copy.

        Raises :class:`UpdateRefused` (and changes nothing) if the update cannot be decoded
        or carries anything invalid. Persists before returning when anything changed;
        raises :class:`~peermesh.core.durable.StorageFailed` (and keeps nothing of the
        update) when that fails, and the peer's next sync offers it again.
        """
        self._check_writable()
        try:
            return self._merge(update, source=source, persist=True, notify=True)
        except UpdateRefused as refused:
            self.refused_updates += 1
            self.last_refusal = refused
            log.warning("%s", refused)
            raise

    def _merge(self, update: bytes, *, source: str, persist: bool, notify: bool) -> ApplyResult:
        if not isinstance(update, bytes | bytearray | memoryview):
            raise UpdateRefused(source, f"expected bytes, got {type(update).__name__}")
        update = bytes(update)
        if len(update) > MAX_UPDATE_BYTES:
            raise UpdateRefused(source, f"update of {len(update)} bytes exceeds {MAX_UPDATE_BYTES}")
        self._index.known.update(self._check_update(update, source))
        self._doc.merge(update, origin=source)
        changed, added, pruned = self._index.absorb(self._doc.take())
        if added or pruned:
            self._commit(changed, persist=persist, notify=notify, update=update)
        self._index.known.clear()
        return ApplyResult(source, frozenset(changed), added, pruned, self._version, len(update))

    def _check_update(self, update: bytes, source: str) -> dict[str, Known]:
        """Try the update on the scratch copy and check what it adds; refuse it whole."""
        events = self._doc.try_update(update, source)
        try:
            return check_entries(events, source=source, verifier=self.verifier, index=self._index)
        except UpdateRefused:
            self._doc.reset_scratch()
            raise
        except Exception as exc:
            # A check that broke on input nobody foresaw still refuses the update whole:
            # the live document never sees what could not be checked.
            self._doc.reset_scratch()
            log.exception("policy update from %s could not be checked", source)
            raise UpdateRefused(
                source, f"update could not be checked ({type(exc).__name__})"
            ) from None

    def _commit(
        self, changed: set[str], *, persist: bool = True, notify: bool = True, update: bytes = b""
    ) -> None:
        if persist:
            try:
                self._persist_update(update)
            except StorageFailed:
                self._roll_back()
                raise
        self._version += 1
        if notify and changed:
            self._notify(frozenset(changed))

    # ------------------------------------------------------------------ durability

    def _persist_update(self, update: bytes) -> None:
        """Append the change to the log (the acknowledgement point); compact into a
        snapshot once the log has grown past ``compact_after_bytes``."""
        if self.persistence is None:
            return
        self.persistence.append(update)
        if self.persistence.log_size >= self.compact_after_bytes:
            try:
                self.compact()
            except StorageFailed as exc:
                # The change is durable in the log already; compaction is retried by the
                # next change, and a crash meanwhile just replays a longer log.
                log.warning("policy compaction postponed: %s", exc)

    def _load(self, persistence: Persistence) -> None:
        snapshot = persistence.load_snapshot()
        if snapshot is not None:
            self._load_snapshot(snapshot, persistence.snapshot_name)
        self._replay_log(persistence)

    def _roll_back(self) -> None:
        """Forget a change that could not be persisted: rebuild memory from the disk.

        The change is already in the document, and CRDT operations cannot be taken out
        of it; reloading is the one way memory comes to equal what was acknowledged.
        A failed append is rare and the reload costs what a restart does.
        """
        assert self.persistence is not None
        history_limit = self._index.history_limit
        self._doc.close()
        self._authority = Authority(enforced=self.verifier is not None, anchor=self.anchor)
        self._doc = VersionsDoc(self._client_id)
        self._index = VersionIndex(self._authority, history_limit)
        self._load(self.persistence)
        self._version += 1  # drop cached digests and tables built from the lost change
        log.warning("policy store rolled back to what %s holds", self.persistence.log_name)

    def compact(self) -> None:
        """Fold the log into a fresh snapshot, then empty the log.

        A crash between the two steps only means the log is replayed over a snapshot
        that already contains it: CRDT updates are idempotent.
        """
        if self.persistence is None:
            return
        shadows = [[r.map_key, r.encode()] for _, r in sorted(self._index.shadows.items())]
        self.persistence.save_snapshot(
            Snapshot(self._doc.full_update(), json.dumps(shadows).encode())
        )

    def _load_snapshot(self, snapshot: Snapshot, where: str) -> None:
        hint = (
            "stop the agent and run `peermesh policy recover` to move the damaged files"
            " aside (kept) so the agent resyncs everything from its peers"
        )
        try:
            self._merge(snapshot.update, source=f"snapshot {where}", persist=False, notify=False)
            for map_key, raw in json.loads(snapshot.shadows):
                self._index.restore_shadow(decode_record(map_key, raw)[0])
        except UpdateRefused as exc:
            raise PolicyStoreCorrupt(
                f"{where} holds invalid policy ({exc.reason}); {hint}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise PolicyStoreCorrupt(f"{where} holds an invalid shadow ({exc}); {hint}") from None

    def _replay_log(self, persistence: Persistence) -> None:
        records, report = persistence.replay_log()
        self.journal_report = report
        if report.corrupt_tail:
            log.warning(
                "policy log %s: %s; kept the %d records before it and cut the rest",
                persistence.log_name,
                report.corrupt_tail,
                report.records,
            )
        for i, record in enumerate(records):
            try:
                self._merge(record, source=f"log record {i}", persist=False, notify=False)
            except UpdateRefused as exc:
                if exc.unsigned:
                    # Written before records were signed: say so rather than drop it quietly.
                    raise PolicyStoreCorrupt(
                        f"{persistence.log_name} holds policy written before policy records"
                        f" were signed ({exc.reason}); move it and {persistence.snapshot_name}"
                        " aside and restart (the agent then resyncs from its peers), and apply"
                        " the old policy again from an admin"
                    ) from None
                offset = report.offsets[i] if i < len(report.offsets) else None
                raise JournalRecordInvalid(persistence.log_name, offset, i, exc.reason) from None

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> Callable[[], None]:
        """Call ``callback(changed_keys)`` after each committed change; returns unsubscribe.

        Callbacks run synchronously after the change is durable and must not write to the
        store (schedule the work instead); a failing callback is logged and does not stop
        the others.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, changed: frozenset[str]) -> None:
        self._notifying = True
        try:
            for callback in list(self._subscribers):
                try:
                    callback(changed)
                except Exception:
                    log.exception("policy subscriber %r failed", callback)
        finally:
            self._notifying = False

    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError("the policy store is closed")
        if self._notifying:
            raise RuntimeError(
                "policy subscribers must not write to the store; schedule the write instead"
            )

    def close(self) -> None:
        """Drop the CRDT observers (pycrdt keeps them alive otherwise) and the storage."""
        if self._closed:
            return
        self._closed = True
        self._doc.close()
        self._subscribers.clear()
        if self.persistence is not None:
            self.persistence.close()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
