"""The replicated policy store: one pycrdt ``Doc`` per agent, sans-IO.

Layout of the document — one root map, ``policy.versions``, flat on purpose::

    "Route/reviews|17:node-a:3f2a9c0d1e4b5a69" -> '{"deleted":false,"hash":..,"lamport":17,
                                                   "node":"node-a","object":{..},"time":..}'

Every edit of an object adds a *new* key (kind/name, Lamport counter, node, content hash)
holding the whole object as one JSON string. Keys are written once and never overwritten,
so concurrent edits never collide inside the CRDT; the winner of an object is chosen on
read as the version with the largest ``(lamport, node, hash)``, which every replica computes
identically from the same set of versions. A delete is a version with ``deleted: true``.
Wall time is recorded for history only: ordering by Lamport counter means a node with a
skewed clock cannot make an old edit win. (Nested maps per object would lose data: two
replicas creating the same nested map concurrently keep only one of them. Nested CRDT
numbers would also become floats.)

History is bounded: when a node writes a version it deletes, in the same transaction, the
versions of that object that have ``history_limit`` or more higher-ranked versions. That
rule never removes a version in the global top ``history_limit``, so pruning by different
nodes at different times cannot change any winner and converges like any other delete.
Deletions arriving from peers are accepted as pruning (refusing them could stall
anti-entropy when deltas arrive out of order). If a prune reaches a replica before the
newer versions that justified it, the pruned winner stays in effect as a local *shadow*
(persisted with the snapshot) until a higher-ranked version arrives, so an object never
reverts to an older version or disappears meanwhile; ``shadowed_winners`` counts these.

Authorship (agents; see :mod:`~peermesh.policy.authorship` and ``PolicyStore``): records
are signed by the writing agent's mesh identity, records from peers must verify, and the
MeshConfig ``admins`` chain decides which versions may win. Without a signer and verifier
(unit tests, simulations, benchmarks) records are unsigned and everything above holds as is.

Remote updates are checked on a scratch copy of the document before the real one sees
them: undecodable bytes, unknown roots, malformed records, invalid or oversized objects, or
records whose content does not match their hash refuse the whole update and leave the
store untouched. Durability: with a ``path`` the whole document is written with
:func:`peermesh.core.durable.atomic_write` (write, fsync, rename) before an edit is acknowledged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pycrdt import Doc, Map, MapEvent, Subscription

from peermesh.core.durable import atomic_write
from peermesh.policy.authorship import (
    MAX_CERT_BYTES,
    MAX_SIG_BYTES,
    AuthorshipError,
    NoIdentity,
    NotAdmin,
    RecordSigner,
    RecordVerifier,
    authority_order,
    b64,
    unb64,
)
from peermesh.policy.compiled import CompiledPolicy, compile_policy
from peermesh.policy.errors import PolicyStoreCorrupt, UpdateRefused
from peermesh.policy.journal import Journal, ReplayReport
from peermesh.policy.model import KINDS, PolicyObject, object_key, split_key
from peermesh.policy.validate import (
    MAX_OBJECT_BYTES,
    PolicyError,
    PolicyWarning,
    canonical_json,
    check_object,
    check_object_canonical,
    check_set,
    hosts_of,
    normalize,
    parse_object,
)

log = logging.getLogger(__name__)

VERSIONS_ROOT: Final = "policy.versions"
HISTORY_LIMIT: Final = 16
#: A whole-document update from a peer; far above 10,000 objects with full history.
MAX_UPDATE_BYTES: Final = 256 * 1024 * 1024
#: An object, the record's fields and its signature (a base64 leaf certificate and sig).
MAX_RECORD_BYTES: Final = MAX_OBJECT_BYTES + 4096 + 2 * MAX_CERT_BYTES
SNAPSHOT_MAGIC: Final = b"PMPOLICY1\n"
#: Fold the update log into the snapshot once it is this big.
COMPACT_AFTER_BYTES: Final = 4 << 20
_NODE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECORD_FIELDS = frozenset({"deleted", "hash", "kind", "lamport", "name", "node", "object", "time"})
_SIGNED_FIELDS = _RECORD_FIELDS | {"author", "cert", "sig"}
_MAX_AUTHOR = 2048
#: The kind whose versions decide who may edit (see ``PolicyStore`` on authority).
AUTHORITY_KIND: Final = "MeshConfig"
_LOCAL_ORIGIN = "local"


#: How far ahead of our own Lamport clock a peer's record may be (a billion edits).
MAX_LAMPORT_JUMP: Final = 1 << 30


def record_ceiling_floor() -> int:
    """Lower bound for the jump check, so a fresh replica can load an old mesh's policy."""
    return 1 << 20


def tombstone_hash(kind: str, name: str) -> str:
    """Content hash of a delete: the same on every node, so only node/lamport tell them apart."""
    return hashlib.sha256(f"tombstone\n{kind}/{name}".encode()).hexdigest()


def content_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class VersionRecord:
    """One edit of one object as stored in the CRDT (``body`` is the canonical JSON).

    ``author`` (SPIFFE ID), ``cert`` (the author's leaf certificate, DER) and ``sig`` are
    set on records written by a store with a signer (see :mod:`~peermesh.policy.authorship`);
    stores without one write and accept unsigned records, as before.
    """

    kind: str
    name: str
    node: str
    lamport: int
    time: float
    hash: str
    deleted: bool
    body: str | None
    author: str | None = None
    cert: bytes | None = None
    sig: bytes | None = None

    @property
    def key(self) -> str:
        return object_key(self.kind, self.name)

    @property
    def edit_id(self) -> str:
        """Unique per edit: Lamport counter, node, and a content-hash prefix."""
        return f"{self.lamport}:{self.node}:{self.hash[:16]}"

    @property
    def map_key(self) -> str:
        return f"{self.key}|{self.edit_id}"

    @property
    def rank(self) -> tuple[int, str, str]:
        """Total order deciding the winner; identical on every replica."""
        return (self.lamport, self.node, self.hash)

    @property
    def signed(self) -> bool:
        return self.sig is not None

    def admins(self) -> frozenset[str]:
        """``spec.admins`` of a MeshConfig version (none for a delete)."""
        if self.body is None:
            return frozenset()
        admins = json.loads(self.body).get("spec", {}).get("admins", ())
        return frozenset(str(a) for a in admins)

    def encode(self) -> str:
        obj = json.loads(self.body) if self.body is not None else None
        fields: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "node": self.node,
            "lamport": self.lamport,
            "time": self.time,
            "hash": self.hash,
            "deleted": self.deleted,
            "object": obj,
        }
        if self.sig is not None:
            assert self.cert is not None
            fields.update(author=self.author, cert=b64(self.cert), sig=b64(self.sig))
        return json.dumps(
            fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )


def decode_record(map_key: object, raw: object) -> tuple[VersionRecord, PolicyObject | None]:
    """Check one CRDT entry from a peer; raises ``ValueError`` saying what is wrong.

    The object is re-validated and re-hashed, so a record whose content does not match its
    hash, kind or name (corruption, or a buggy peer) is refused like an invalid object.
    """
    if not isinstance(map_key, str):
        raise ValueError(f"entry key {map_key!r} is not a string")
    if not isinstance(raw, str):
        raise ValueError(f"entry {map_key!r} holds a {type(raw).__name__}, expected JSON text")
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(
            f"entry {map_key!r} is {len(raw)} bytes, more than the {MAX_RECORD_BYTES} allowed "
            f"(objects are limited to {MAX_OBJECT_BYTES} bytes)"
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"entry {map_key!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"entry {map_key!r} is nested too deeply") from None
    if not isinstance(data, dict) or set(data) not in (_RECORD_FIELDS, _SIGNED_FIELDS):
        raise ValueError(f"entry {map_key!r} does not have the fields of a version record")
    author: str | None = None
    cert: bytes | None = None
    sig: bytes | None = None
    if "sig" in data:
        author = data["author"]
        if not isinstance(author, str) or not 0 < len(author) <= _MAX_AUTHOR:
            raise ValueError(f"entry {map_key!r} has an invalid author {author!r:.80}")
        try:
            cert = unb64(data["cert"], "its certificate", MAX_CERT_BYTES)
            sig = unb64(data["sig"], "its signature", MAX_SIG_BYTES)
        except AuthorshipError as exc:
            raise ValueError(f"entry {map_key!r}: {exc}") from None
    kind, name, node, lamport = data["kind"], data["name"], data["node"], data["lamport"]
    time, digest, deleted, obj_data = data["time"], data["hash"], data["deleted"], data["object"]
    if kind not in KINDS or not isinstance(name, str):
        raise ValueError(f"entry {map_key!r} has an unknown kind {kind!r}")
    if not isinstance(node, str) or not _NODE_NAME.fullmatch(node):
        raise ValueError(f"entry {map_key!r} has an invalid node name {node!r}")
    if isinstance(lamport, bool) or not isinstance(lamport, int) or not 1 <= lamport < 2**53:
        raise ValueError(f"entry {map_key!r} has an invalid Lamport counter {lamport!r}")
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
        raise ValueError(f"entry {map_key!r} has an invalid time {time!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError(f"entry {map_key!r} has an invalid content hash")
    if not isinstance(deleted, bool):
        raise ValueError(f"entry {map_key!r} has a non-boolean 'deleted'")
    obj: PolicyObject | None = None
    body: str | None = None
    if deleted:
        if obj_data is not None or digest != tombstone_hash(kind, name):
            raise ValueError(f"entry {map_key!r} is a malformed delete")
    else:
        # The raw length is bounded above, so the size/depth walk can be skipped.
        obj, body, errors = check_object_canonical(obj_data, size_checked=True)
        if errors:
            raise PolicyError.collect(errors)
        assert obj is not None and body is not None
        if obj.kind != kind or obj.name != name:
            raise ValueError(f"entry {map_key!r} holds {obj.key}, not {kind}/{name}")
        if content_hash(body) != digest:
            raise ValueError(f"entry {map_key!r}: content does not match its hash")
    record = VersionRecord(
        kind, name, node, lamport, float(time), digest, deleted, body, author, cert, sig
    )
    if record.map_key != map_key:
        raise ValueError(f"entry {map_key!r} is stored under the wrong key ({record.map_key})")
    return record, obj


_CACHED_RECORD_BYTES = 16 * 1024


@functools.lru_cache(maxsize=2048)
def _decode_small(map_key: str, raw: str) -> tuple[VersionRecord, PolicyObject | None]:
    return decode_record(map_key, raw)


def clear_decode_cache() -> None:
    """Forget memoised validation results (benchmarks measuring a cold replica use it)."""
    _decode_small.cache_clear()


def _decode_cached(map_key: object, raw: object) -> tuple[VersionRecord, PolicyObject | None]:
    """:func:`decode_record`, memoised for typical-size records.

    Validation is a pure function of (key, text) and its results are immutable; in-process
    simulations replay each record into many replicas. Failures are never cached
    (``lru_cache`` does not store exceptions) and large records bypass the cache so it
    stays small.
    """
    if isinstance(map_key, str) and isinstance(raw, str) and len(raw) <= _CACHED_RECORD_BYTES:
        return _decode_small(map_key, raw)
    return decode_record(map_key, raw)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class HistoryEntry:
    """One edit of an object, as ``peermesh policy history`` shows it."""

    edit_id: str
    node: str
    lamport: int
    time: float
    hash: str
    deleted: bool
    won: bool
    object: PolicyObject | None
    author: str | None = None  # SPIFFE ID of the signer; None for unsigned stores
    authorized: bool = True  # False: its author was not a MeshConfig admin (never wins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edit": self.edit_id,
            "node": self.node,
            "lamport": self.lamport,
            "time": self.time,
            "hash": self.hash,
            "deleted": self.deleted,
            "won": self.won,
            "author": self.author,
            "authorized": self.authorized,
        }


@dataclass(frozen=True)
class ApplyReport:
    """Outcome of a local edit. ``update`` is the delta to push to a few peers at once;
    ``edits`` pairs each written object key with its new edit id."""

    version: int
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    edits: tuple[tuple[str, str], ...]
    warnings: tuple[PolicyWarning, ...]
    update: bytes


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of a peer's update. ``changed`` lists objects whose winner changed."""

    source: str
    changed: frozenset[str]
    added_versions: int
    pruned_versions: int
    version: int
    size: int

    @property
    def new(self) -> bool:
        """Whether the update taught us anything (the cue for rumour-style forwarding)."""
        return bool(self.added_versions or self.pruned_versions)


@dataclass(frozen=True)
class StoreStatus:
    node: str
    version: int
    objects: int
    versions: int
    digest: str
    state_vector: dict[int, int]
    refused_updates: int
    shadowed: int  # pruned winners still in effect, waiting for newer versions
    admins: tuple[str, ...] = ()  # effective MeshConfig admins (empty: any identity edits)


@dataclass
class _Pending:
    """Map events collected by an observer; observers only record, never write the Doc."""

    events: list[tuple[str, str, Any]] = field(default_factory=list)

    def __call__(self, event: MapEvent) -> None:
        changes: dict[str, dict[str, Any]] = getattr(event, "keys")  # noqa: B009 (slot, untyped)
        for key, change in changes.items():
            self.events.append((key, change["action"], change.get("newValue")))

    def take(self) -> list[tuple[str, str, Any]]:
        events, self.events = self.events, []
        return events


def decode_state_vector(state: bytes) -> dict[int, int]:
    """A Yjs state vector (varuint count, then client/clock pairs) as a dict."""
    pos = 0

    def varuint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(state):
                raise ValueError("truncated state vector")
            byte = state[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    count = varuint()
    result: dict[int, int] = {}
    for _ in range(count):
        client = varuint()
        result[client] = varuint()
    return result


# ---------------------------------------------------------------------------- the store


class PolicyStore:
    """Every policy object of the mesh, replicated, validated, durable, sans-IO.

    Not thread-safe: keep it on the trio thread, as the pycrdt Doc requires. Time comes in
    as ``now`` (seconds since the epoch, recorded in history only; ordering uses Lamport).

    **Authorship** (the agent passes both; tests and simulations may pass neither). With a
    ``signer`` every version written here is signed by the agent's identity. With a
    ``verifier`` every version from a peer, the snapshot or the log must be signed by a
    mesh identity (else the whole update is refused, as for invalid content), and
    *authority* applies: MeshConfig versions are walked in rank order (but a version whose
    certificate was issued after another's had expired comes after it, see
    :func:`~peermesh.policy.authorship.authority_order`) starting from "no admins"; one
    counts if the admin set so far is empty or its author is in it, and then its
    ``spec.admins`` (none for a delete) becomes the admin set. Only counted MeshConfig
    versions can win (the last counted one). Once the resulting admin set is non-empty,
    versions of other kinds whose author is not in it are kept (for convergence and
    history) but never win. The
    answer depends only on the set of versions, so every replica agrees. MeshConfig
    versions are then never pruned (the walk needs all of them) and a peer update that
    deletes one is refused.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        node: str,
        history_limit: int = HISTORY_LIMIT,
        client_id: int | None = None,
        signer: RecordSigner | None = None,
        verifier: RecordVerifier | None = None,
    ) -> None:
        if not _NODE_NAME.fullmatch(node):
            raise ValueError(f"node name {node!r} must be letters, digits, '-', '_' or '.'")
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.node = node
        self.path = Path(path) if path is not None else None
        self.history_limit = history_limit
        self.signer = signer
        self.verifier = verifier
        # Authority (only with a verifier): the effective admin set, and the map keys of
        # the MeshConfig versions that counted in the walk.
        self._admins: frozenset[str] = frozenset()
        self._counted: set[str] = set()
        self._authority_winner: dict[str, VersionRecord] = {}
        self._doc: Doc = Doc(client_id=client_id)
        self._map: Map[str] = self._doc.get(VERSIONS_ROOT, type=Map)
        self._pending = _Pending()
        self._sub: Subscription | None = self._map.observe(self._pending)
        self._scratch_pending = _Pending()
        self._scratch: Doc = Doc()
        self._scratch_map: Map[str] = self._scratch.get(VERSIONS_ROOT, type=Map)
        self._scratch_sub: Subscription | None = self._scratch_map.observe(self._scratch_pending)
        # Derived, never replicated: versions per object, winners, parsed winning objects.
        self._versions: dict[str, dict[str, VersionRecord]] = {}
        self._winner: dict[str, VersionRecord] = {}
        self._objects: dict[str, PolicyObject] = {}
        self._hosts: dict[str, frozenset[str]] = {}
        self._by_host: dict[str, set[str]] = {}  # service -> keys of objects naming it
        self._shadows: dict[str, VersionRecord] = {}  # see _effective_winner
        # Entries validated (or written) in the current step, so they are decoded only once.
        self._known: dict[str, tuple[str, VersionRecord, PolicyObject | None]] = {}
        self._lamport = 0
        self._version = 0
        self._subscribers: list[Callable[[frozenset[str]], None]] = []
        self._notifying = False
        self._closed = False
        self._digest: tuple[int, str] | None = None
        self._compiled: tuple[int, CompiledPolicy] | None = None
        self.refused_updates = 0
        self.ignored_entries = 0
        self.shadowed_winners = 0
        self.last_refusal: UpdateRefused | None = None
        self.compact_after_bytes = COMPACT_AFTER_BYTES
        self.journal_report: ReplayReport | None = None
        self._journal: Journal | None = None
        if self.path is not None:
            self._journal = Journal(self.path.with_name(self.path.name + ".log"))
            if self.path.exists():
                self._load(self.path)
            self._replay_journal()

    # ------------------------------------------------------------------ reading

    @property
    def version(self) -> int:
        """Bumped by every change of the stored versions, local or remote."""
        return self._version

    def get(self, kind: str, name: str) -> PolicyObject | None:
        """The winning object, or None if it never existed or its winner is a delete."""
        return self._objects.get(object_key(kind, name))

    def objects(self, kind: str | None = None) -> list[PolicyObject]:
        """Winning objects sorted by kind and name."""
        items = sorted(self._objects.items())
        return [obj for _, obj in items if kind is None or obj.kind == kind]

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: str) -> bool:
        return key in self._objects

    def winner(self, kind: str, name: str) -> VersionRecord | None:
        """The winning version (possibly a delete) of an object."""
        return self._winner.get(object_key(kind, name))

    @property
    def admins(self) -> frozenset[str]:
        """Effective MeshConfig admins (always empty without a verifier): see the class doc."""
        return self._admins

    def authorized(self, record: VersionRecord) -> bool:
        """Whether ``record`` may win: always without a verifier, else by authority."""
        if self.verifier is None:
            return True
        if record.kind == AUTHORITY_KIND:
            return record.map_key in self._counted
        return not self._admins or record.author in self._admins

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
        if self.verifier is not None and self._admins and author not in self._admins:
            raise NotAdmin(author, sorted(self._admins))
        return author

    def has_edit(self, key: str, edit_id: str) -> bool:
        """Whether this replica holds version ``edit_id`` of object ``key``."""
        return f"{key}|{edit_id}" in self._versions.get(key, {})

    def history(self, kind: str, name: str) -> list[HistoryEntry]:
        """Kept versions of one object, newest (winning) first."""
        key = object_key(kind, name)
        records = dict(self._versions.get(key, {}))
        shadow = self._shadows.get(key)
        if shadow is not None:
            records[shadow.map_key] = shadow
        winner = self._winner.get(key)
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
                authorized=self.authorized(r),
            )
            for r in sorted(records.values(), key=lambda r: r.rank, reverse=True)
        ]

    def digest(self) -> str:
        """Stable hash of the winning objects: equal digests mean equal policy."""
        if self._digest is None or self._digest[0] != self._version:
            h = hashlib.sha256()
            for key in sorted(self._objects):
                h.update(f"{key}\n{self._winner[key].hash}\n".encode())
            self._digest = (self._version, h.hexdigest())
        return self._digest[1]

    def compiled(self) -> CompiledPolicy:
        """Routing/authorization tables for the current version, built once per change."""
        if self._compiled is None or self._compiled[0] != self._version:
            previous = self._compiled[1] if self._compiled else None
            self._compiled = (self._version, compile_policy(self._objects.values(), previous))
        return self._compiled[1]

    def records(self) -> dict[str, str]:
        """The raw replicated content (map key -> record JSON), for convergence checks."""
        return {key: str(value) for key, value in self._map.items()}

    def status(self) -> StoreStatus:
        return StoreStatus(
            node=self.node,
            version=self._version,
            objects=len(self._objects),
            versions=sum(len(v) for v in self._versions.values()),
            digest=self.digest(),
            state_vector=decode_state_vector(self.state_vector()),
            refused_updates=self.refused_updates,
            shadowed=len(self._shadows),
            admins=tuple(sorted(self._admins)),
        )

    # ------------------------------------------------------------------ local edits

    def apply(
        self,
        objects: Iterable[PolicyObject | Mapping[str, Any]],
        *,
        now: float,
        known_services: Collection[str] | None = None,
    ) -> ApplyReport:
        """Validate and write objects (documents or model objects) all together, or none.

        Returns after the edit is on disk (when the store has a path). Raises
        :class:`PolicyError` listing every problem; nothing is written then.
        """
        return self.edit(upserts=objects, now=now, known_services=known_services)

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
    ) -> ApplyReport:
        """Apply upserts and deletes in one transaction after validating all of them.

        If writing the snapshot fails the error propagates: the edit is not acknowledged
        (it stays in memory and may still replicate, like a request that timed out).
        With a signer, raises :class:`NoIdentity` or :class:`NotAdmin` before anything
        else (see :meth:`check_author`).
        """
        self._check_writable()
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        author = self.check_author()
        now = float(now)
        parsed: list[PolicyObject] = []
        errors: list[PolicyError] = []
        for item in upserts:
            if isinstance(item, Mapping):
                obj, problems = check_object(item)
            else:
                try:
                    obj, problems = normalize(item), []
                except PolicyError as exc:
                    obj, problems = None, list(exc.errors)
            errors.extend(problems)
            if obj is not None:
                parsed.append(obj)
        delete_keys: list[str] = []
        for ref in deletes:
            key = object_key(*ref) if isinstance(ref, tuple) else ref
            try:
                kind, name = split_key(key)
            except ValueError as exc:
                errors.append(PolicyError(str(exc), path="", hint="write e.g. Route/reviews"))
                continue
            if key not in self._objects:
                errors.append(
                    PolicyError(
                        "does not exist (or is already deleted)",
                        kind=kind,
                        name=name,
                        hint="see `peermesh policy get` for what exists",
                    )
                )
            delete_keys.append(key)
        if errors:
            raise PolicyError.collect(errors)
        if len(set(delete_keys)) != len(delete_keys) or {o.key for o in parsed} & set(delete_keys):
            raise PolicyError("the same object is deleted twice or both written and deleted")
        if self.verifier is not None and author is not None:
            self._check_lockout(author, parsed, delete_keys)
        warnings = self._cross_check(parsed, set(delete_keys), known_services)
        records: list[VersionRecord] = []
        unchanged: list[str] = []
        lamport = self._lamport + 1
        for obj in parsed:
            body = canonical_json(obj)
            digest = content_hash(body)
            current = self._winner.get(obj.key)
            if current is not None and not current.deleted and current.hash == digest:
                unchanged.append(obj.key)
                continue
            record = self._sign(
                VersionRecord(obj.kind, obj.name, self.node, lamport, now, digest, False, body)
            )
            records.append(record)
            self._known[record.map_key] = (record.encode(), record, obj)
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
        before = self._doc.get_state()
        with self._doc.transaction(origin=_LOCAL_ORIGIN):
            for record in records:
                known = self._known.get(record.map_key)
                self._map[record.map_key] = known[0] if known else record.encode()
            for record in records:
                for stale in self._prunable(record.key, extra=record):
                    del self._map[stale]
        update = self._doc.get_update(before)
        self._scratch.apply_update(update)
        self._scratch_pending.take()
        changed, _, _ = self._absorb()
        self._commit(changed, update=update)
        return ApplyReport(
            version=self._version,
            changed=tuple(sorted(changed)),
            unchanged=tuple(unchanged),
            edits=tuple((r.key, r.edit_id) for r in records),
            warnings=warnings,
            update=update,
        )

    @staticmethod
    def _check_lockout(author: str, parsed: list[PolicyObject], deletes: list[str]) -> None:
        """Refuse a batch that sets admins without its author *and* writes other objects:
        those would never be in effect (their signer is no admin once it lands)."""
        configs = [o for o in parsed if o.kind == AUTHORITY_KIND]
        admins = frozenset(getattr(configs[-1].spec, "admins", ())) if configs else frozenset()
        others = [o.key for o in parsed if o.kind != AUTHORITY_KIND]
        others += [k for k in deletes if not k.startswith(AUTHORITY_KIND + "/")]
        if admins and author not in admins and others:
            raise PolicyError(
                f"this change sets admins to {', '.join(sorted(admins))}, which does not"
                f" include {author} (this agent), so the other {len(others)} object(s) in"
                " it would never be in effect",
                kind=AUTHORITY_KIND,
                name=configs[-1].name,
                path="spec.admins",
                hint="add this agent's identity to admins, or apply the other objects from"
                " an agent running as an admin once the MeshConfig is in place",
            )

    def _sign(self, record: VersionRecord) -> VersionRecord:
        return self.signer.sign(record) if self.signer is not None else record

    def _prunable(self, key: str, *, extra: VersionRecord) -> list[str]:
        """Map keys of versions with at least ``history_limit`` higher-ranked versions.

        With a verifier, only higher-ranked versions *by the same author* count: whether a
        version may win depends on its author's standing, which can change later, and a
        version with a same-author version above it can never win (both are in effect or
        neither is). So pruning never removes a future winner, whatever happens to the
        admin set, and a non-admin's flood of versions cannot push an admin's winner out.
        MeshConfig is never pruned then (authority is decided by its whole history).
        """
        records = dict(self._versions.get(key, {}))
        records[extra.map_key] = extra
        ranked = sorted(records.values(), key=lambda r: r.rank, reverse=True)
        if self.verifier is None:
            return [r.map_key for r in ranked[self.history_limit :] if r.map_key in self._map]
        if extra.kind == AUTHORITY_KIND:
            return []
        stale: list[str] = []
        above: dict[str | None, int] = {}
        for r in ranked:
            count = above.get(r.author, 0)
            if count >= self.history_limit and r.map_key in self._map:
                stale.append(r.map_key)
            above[r.author] = count + 1
        return stale

    def _cross_check(
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
        before = [self._objects[key] for key in sorted(related)]
        after = [obj for obj in before if obj.key not in written and obj.key not in deletes]
        after.extend(upserts)
        existing = {e.identity() for e in check_set(before).errors}
        result = check_set(after, known_services)
        new_errors = [e for e in result.errors if e.identity() not in existing]
        if new_errors:
            raise PolicyError.collect(new_errors)
        return tuple(w for w in result.warnings if f"{w.kind}/{w.name}" in written)

    # ------------------------------------------------------------------ sync

    def state_vector(self) -> bytes:
        """What we have, compactly: send it to a peer to receive only what we lack."""
        return self._doc.get_state()

    def diff_since(self, remote_state_vector: bytes) -> bytes:
        """Everything we have that a peer with ``remote_state_vector`` lacks."""
        try:
            return self._doc.get_update(remote_state_vector)
        except Exception as exc:
            raise ValueError(f"cannot decode the peer's state vector: {exc}") from None

    def full_update(self) -> bytes:
        return self._doc.get_update()

    def apply_update(self, update: bytes, *, source: str) -> ApplyResult:
        """Merge a peer's update after checking it whole on a scratch copy.

        Raises :class:`UpdateRefused` (and changes nothing) if the update cannot be decoded
        or carries anything invalid. Persists before returning when anything changed.
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
        self._known.update(self._check_on_scratch(update, source))
        with self._doc.transaction(origin=source):
            self._doc.apply_update(update)
        changed, added, pruned = self._absorb()
        if added or pruned:
            self._commit(changed, persist=persist, notify=notify, update=update)
        self._known.clear()
        return ApplyResult(source, frozenset(changed), added, pruned, self._version, len(update))

    def _check_on_scratch(
        self, update: bytes, source: str
    ) -> dict[str, tuple[str, VersionRecord, PolicyObject | None]]:
        """Apply to the scratch Doc and validate what changed; rebuild it if refused."""
        self._scratch_pending.take()
        try:
            try:
                self._scratch.apply_update(update)
            except Exception as exc:  # pycrdt raises ValueError; be safe with any decoder error
                raise UpdateRefused(source, f"cannot decode update: {exc}") from None
            roots = set(self._scratch.keys()) - {VERSIONS_ROOT}
            if roots:
                raise UpdateRefused(
                    source,
                    f"update writes unknown document roots {sorted(roots)}; "
                    f"only '{VERSIONS_ROOT}' is replicated",
                )
            checked: dict[str, tuple[str, VersionRecord, PolicyObject | None]] = {}
            deleted: list[str] = []
            for key, action, value in self._scratch_pending.take():
                if action == "delete":
                    if self.verifier is not None and key.startswith(AUTHORITY_KIND + "/"):
                        raise UpdateRefused(
                            source,
                            f"update deletes MeshConfig version {key!r}; MeshConfig history is"
                            " never pruned because it decides who may edit",
                        )
                    deleted.append(key)
                    continue  # history pruning (see module docstring)
                try:
                    record, obj = _decode_cached(key, value)
                except PolicyError as exc:
                    raise UpdateRefused(
                        source, f"invalid object in entry {key!r}: {exc}", exc
                    ) from None
                except ValueError as exc:
                    raise UpdateRefused(source, str(exc)) from None
                if self.verifier is not None:
                    try:
                        self.verifier.verify(record)
                    except NoIdentity as exc:
                        raise UpdateRefused(source, str(exc)) from None
                    except AuthorshipError as exc:
                        raise UpdateRefused(
                            source,
                            f"entry {key!r} {exc}; forged or corrupt records never win",
                            unsigned=not record.signed,
                        ) from None
                ceiling = max(self._lamport, record_ceiling_floor()) + MAX_LAMPORT_JUMP
                if record.lamport > ceiling:
                    # A forged huge counter would make every later edit lose (or overflow):
                    # no honest partition produces a jump of this size.
                    raise UpdateRefused(
                        source,
                        f"entry {key!r} has Lamport counter {record.lamport}, implausibly far"
                        f" ahead of ours ({self._lamport}); refusing a forged or corrupt clock",
                    )
                checked[key] = (value, record, obj)
            if self.verifier is not None and deleted:
                self._check_prunes(deleted, checked, source)
            return checked
        except UpdateRefused:
            self._rebuild_scratch()
            raise

    def _check_prunes(
        self,
        deleted: list[str],
        checked: Mapping[str, tuple[str, VersionRecord, PolicyObject | None]],
        source: str,
    ) -> None:
        """With a verifier, a peer may delete only what the pruning rule allows.

        Deletions carry no signature, so a compromised agent could otherwise roll objects
        back by deleting their newest versions. A version may go only if, after the
        update, ``history_limit`` versions of the same object by the same author rank
        above it (see :meth:`_prunable`). Those are never pruned anywhere, so a sync
        reply (which carries all we lack) always justifies its deletions; a push that
        arrives before the versions that justify its deletions is refused and the edit
        comes again with anti-entropy.
        """
        gone = set(deleted)
        for key in deleted:
            obj_key = key.partition("|")[0]
            victim = self._versions.get(obj_key, {}).get(key)
            if victim is None:
                continue
            versions = dict(self._versions.get(obj_key, {}))
            versions.update((k, c[1]) for k, c in checked.items() if k.startswith(obj_key + "|"))
            above = sum(
                1
                for r in versions.values()
                if r.map_key not in gone and r.author == victim.author and r.rank > victim.rank
            )
            if above < self.history_limit:
                raise UpdateRefused(
                    source,
                    f"update deletes version {victim.edit_id} of {obj_key}, one of the"
                    f" {self.history_limit} newest by {victim.author} that we hold; only older"
                    " history may be pruned (out-of-order delivery, or a rollback attempt)",
                )

    def _rebuild_scratch(self) -> None:
        if self._scratch_sub is not None:
            self._scratch_map.unobserve(self._scratch_sub)
        self._scratch = Doc()
        self._scratch_map = self._scratch.get(VERSIONS_ROOT, type=Map)
        self._scratch.apply_update(self._doc.get_update())
        self._scratch_pending.take()
        self._scratch_sub = self._scratch_map.observe(self._scratch_pending)

    # ------------------------------------------------------------------ derived state

    def _absorb(self) -> tuple[set[str], int, int]:
        """Fold the collected map events into the per-object index; return changed winners."""
        touched: set[str] = set()
        added = pruned = 0
        for map_key, action, value in self._pending.take():
            obj_key = map_key.partition("|")[0]
            versions = self._versions.setdefault(obj_key, {})
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
            self._lamport = max(self._lamport, record.lamport)
            if obj is not None:
                self._known[map_key] = (value, record, obj)
        changed = self._refresh(touched)
        self._known.clear()
        return changed, added, pruned

    def _refresh(self, touched: Iterable[str]) -> set[str]:
        """Recompute the winners of ``touched`` objects; return those that changed."""
        changed: set[str] = set()
        touched = set(touched)
        authority = any(k.startswith(AUTHORITY_KIND + "/") for k in touched)
        if self.verifier is not None and authority and self._recompute_authority():
            # Who may win changed for every object: recompute them all.
            touched |= set(self._versions) | set(self._shadows) | set(self._winner)
        for obj_key in touched:
            versions = self._versions.get(obj_key, {})
            if not versions:
                self._versions.pop(obj_key, None)
            best = self._effective_winner(obj_key, versions)
            previous = self._winner.get(obj_key)
            if best == previous:
                continue
            changed.add(obj_key)
            self._objects.pop(obj_key, None)
            for host in self._hosts.pop(obj_key, frozenset()):
                self._by_host[host].discard(obj_key)
            if best is None:
                self._winner.pop(obj_key, None)
                continue
            self._winner[obj_key] = best
            if not best.deleted:
                known = self._known.get(best.map_key)
                obj = known[2] if known else None
                if obj is None:
                    assert best.body is not None
                    obj = parse_object(json.loads(best.body))
                self._objects[obj_key] = obj
                self._hosts[obj_key] = hosts_of(obj)
                for host in self._hosts[obj_key]:
                    self._by_host.setdefault(host, set()).add(obj_key)
        return changed

    def _recompute_authority(self) -> bool:
        """Walk MeshConfig versions (class docstring, :func:`authority_order`); True if
        the admin set changed. The last counted version of each MeshConfig wins."""
        records = [
            r
            for key, versions in self._versions.items()
            if key.startswith(AUTHORITY_KIND + "/")
            for r in versions.values()
        ]
        admins: frozenset[str] = frozenset()
        counted: set[str] = set()
        last: dict[str, VersionRecord] = {}
        for r in authority_order(records):
            if not admins or r.author in admins:
                counted.add(r.map_key)
                last[r.key] = r
                admins = r.admins()
        previous = self._admins
        self._admins, self._counted, self._authority_winner = admins, counted, last
        if admins != previous:
            log.info(
                "policy admins are now %s",
                ", ".join(sorted(admins)) if admins else "none (any mesh identity may edit)",
            )
        return admins != previous

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
        if self.verifier is not None:
            if obj_key.startswith(AUTHORITY_KIND + "/"):  # never pruned, so never shadowed
                return self._authority_winner.get(obj_key)
            versions = {k: r for k, r in versions.items() if self.authorized(r)}
        best = max(versions.values(), key=lambda r: r.rank) if versions else None
        previous = self._winner.get(obj_key)
        shadow = self._shadows.get(obj_key)
        if shadow is not None and not self.authorized(shadow):
            del self._shadows[obj_key]
            shadow = None
        if previous is not None and not self.authorized(previous):
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
            shadow = self._shadows[obj_key] = previous
        if shadow is not None and best is not None and best.rank > shadow.rank:
            del self._shadows[obj_key]
            shadow = None
        return shadow if shadow is not None else best

    def _decode_trusted(
        self, map_key: str, value: object
    ) -> tuple[VersionRecord, PolicyObject | None]:
        """An entry checked on the scratch Doc (or written by us) is not decoded again."""
        known = self._known.get(map_key)
        if known is not None and known[0] == value:
            return known[1], known[2]
        return _decode_cached(map_key, value)

    def _commit(
        self, changed: set[str], *, persist: bool = True, notify: bool = True, update: bytes = b""
    ) -> None:
        self._version += 1
        if persist:
            self._persist_update(update)
        if notify and changed:
            self._notify(frozenset(changed))

    # ------------------------------------------------------------------ durability

    def _persist_update(self, update: bytes) -> None:
        """Append the change to the log and fsync (the acknowledgement point); compact
        into a snapshot once the log has grown past ``compact_after_bytes``."""
        if self._journal is None:
            return
        self._journal.append(update)
        if self._journal.size >= self.compact_after_bytes:
            self.compact()

    def compact(self) -> None:
        """Fold the log into a fresh snapshot (atomic rename), then empty the log.

        A crash between the two steps only means the log is replayed over a snapshot
        that already contains it: CRDT updates are idempotent.
        """
        if self._journal is None:
            return
        self._persist()
        self._journal.reset()

    def _replay_journal(self) -> None:
        assert self._journal is not None
        records, report = self._journal.replay()
        self.journal_report = report
        if report.corrupt_tail:
            log.warning(
                "policy log %s: %s; kept the %d records before it and cut the rest",
                self._journal.path,
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
                        f"{self._journal.path} holds policy written before policy records were"
                        f" signed ({exc.reason}); move it and {self.path} aside and restart"
                        " (the agent then resyncs from its peers), and apply the old policy"
                        " again from an admin"
                    ) from None
                log.warning("policy log record %d refused (%s); skipped", i, exc.reason)

    def _persist(self) -> None:
        """Snapshot: magic, SHA-256 of the payload, then the payload: the update's length,
        the whole-document update, and the shadowed winners (JSON ``[[key, record], ...]``)."""
        if self.path is None:
            return
        update = self._doc.get_update()
        shadows = [[r.map_key, r.encode()] for _, r in sorted(self._shadows.items())]
        payload = len(update).to_bytes(8, "big") + update + json.dumps(shadows).encode()
        atomic_write(self.path, SNAPSHOT_MAGIC + hashlib.sha256(payload).digest() + payload)

    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        hint = (
            f"move {path} aside and restart: the agent then starts empty and resyncs "
            "everything from its peers"
        )
        header = len(SNAPSHOT_MAGIC) + 32
        if not data.startswith(SNAPSHOT_MAGIC) or len(data) < header:
            raise PolicyStoreCorrupt(f"{path} is not a peermesh policy snapshot; {hint}")
        checksum, payload = data[len(SNAPSHOT_MAGIC) : header], data[header:]
        if hashlib.sha256(payload).digest() != checksum or len(payload) < 8:
            raise PolicyStoreCorrupt(f"{path} fails its checksum (damaged on disk); {hint}")
        size = int.from_bytes(payload[:8], "big")
        update, shadows = payload[8 : 8 + size], payload[8 + size :]
        try:
            self._merge(update, source=f"snapshot {path}", persist=False, notify=False)
            for map_key, raw in json.loads(shadows):
                self._restore_shadow(decode_record(map_key, raw)[0])
        except UpdateRefused as exc:
            raise PolicyStoreCorrupt(
                f"{path} holds invalid policy ({exc.reason}); {hint}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise PolicyStoreCorrupt(f"{path} holds an invalid shadow ({exc}); {hint}") from None

    def _restore_shadow(self, record: VersionRecord) -> None:
        """Reinstate a persisted shadow unless a version ranked above it arrived meanwhile."""
        self._lamport = max(self._lamport, record.lamport)
        current = self._winner.get(record.key)
        if current is None or current.rank < record.rank:
            self._shadows[record.key] = record
            self._refresh([record.key])

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
        """Drop the CRDT observers (pycrdt keeps them alive otherwise)."""
        if self._closed:
            return
        self._closed = True
        if self._sub is not None:
            self._map.unobserve(self._sub)
            self._sub = None
        if self._scratch_sub is not None:
            self._scratch_map.unobserve(self._scratch_sub)
            self._scratch_sub = None
        self._subscribers.clear()
        if self._journal is not None:
            self._journal.close()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
