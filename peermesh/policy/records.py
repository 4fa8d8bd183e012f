"""The version record codec: one edit of one object as the CRDT holds it, checked on decode.

A record is one JSON string under a key written once and never overwritten::

    "Route/reviews|17:node-a:3f2a9c0d1e4b5a69" -> '{"deleted":false,"hash":..,"lamport":17,
                                                   "node":"node-a","object":{..},"time":..}'

The key is kind/name, Lamport counter, node and a content-hash prefix; the value holds the
whole object in canonical JSON, so the content hash can be re-checked by every replica.
Signed records also carry ``author``, ``cert`` and ``sig`` (see
:mod:`~peermesh.policy.authorship`); a signed MeshConfig record that changes the admin set
also carries ``endorsement``, the committee's signature over the change (see
:mod:`~peermesh.policy.anchor`). Records without it, as every journal written before it
existed holds, decode as before. :func:`decode_record` checks every field of an entry
from a peer and re-validates its object; a record is never trusted for its key alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Final

from peermesh.policy.anchor import AdminEndorsement
from peermesh.policy.errors import AuthorshipError, PolicyError
from peermesh.policy.model import KINDS, MESH_CONFIG, PolicyObject, object_key
from peermesh.policy.validate import MAX_OBJECT_BYTES, check_object_canonical

#: A leaf certificate in a record (DER); mesh leaves are about 500 bytes.
MAX_CERT_BYTES: Final = 4096
#: Ed25519 signatures are 64 bytes, DER ECDSA P-256 at most 72.
MAX_SIG_BYTES: Final = 128
#: An object, the record's fields and its signature (a base64 leaf certificate and sig).
MAX_RECORD_BYTES: Final = MAX_OBJECT_BYTES + 4096 + 2 * MAX_CERT_BYTES
#: How far ahead of our own Lamport clock a peer's record may be (a billion edits).
MAX_LAMPORT_JUMP: Final = 1 << 30
_NODE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RECORD_FIELDS = frozenset({"deleted", "hash", "kind", "lamport", "name", "node", "object", "time"})
_SIGNED_FIELDS = _RECORD_FIELDS | {"author", "cert", "sig"}
_ENDORSED_FIELDS = _SIGNED_FIELDS | {"endorsement"}
_MAX_AUTHOR = 2048
_CACHED_RECORD_BYTES = 16 * 1024


def valid_node_name(node: str) -> bool:
    """Whether ``node`` may name a writer in record keys (letters, digits, '-', '_', '.')."""
    return bool(_NODE_NAME.fullmatch(node))


def record_ceiling_floor() -> int:
    """Lower bound for the jump check, so a fresh replica can load an old mesh's policy."""
    return 1 << 20


def tombstone_hash(kind: str, name: str) -> str:
    """Content hash of a delete: the same on every node, so only node/lamport tell them apart."""
    return hashlib.sha256(f"tombstone\n{kind}/{name}".encode()).hexdigest()


def content_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str, limit: int) -> bytes:
    """Strict, canonical base64 (so one record has exactly one encoding)."""
    if not isinstance(text, str) or len(text) > (limit + 2) // 3 * 4:
        raise AuthorshipError(f"{what} is not base64 of at most {limit} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthorshipError(f"{what} is not valid base64") from None
    if not data or b64(data) != text:
        raise AuthorshipError(f"{what} is not canonical base64")
    return data


@dataclass(frozen=True)
class VersionRecord:
    """One edit of one object as stored in the CRDT (``body`` is the canonical JSON).

    ``author`` (SPIFFE ID), ``cert`` (the author's leaf certificate, DER) and ``sig`` are
    set on records written by a store with a signer (see :mod:`~peermesh.policy.authorship`);
    stores without one write and accept unsigned records, as before. ``endorsement`` is
    only ever on a signed MeshConfig record, covered by its author's signature.
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
    endorsement: AdminEndorsement | None = None

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
            if self.endorsement is not None:
                fields["endorsement"] = self.endorsement.to_wire()
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
    if not isinstance(data, dict) or set(data) not in (
        _RECORD_FIELDS,
        _SIGNED_FIELDS,
        _ENDORSED_FIELDS,
    ):
        raise ValueError(f"entry {map_key!r} does not have the fields of a version record")
    author: str | None = None
    cert: bytes | None = None
    sig: bytes | None = None
    endorsement: AdminEndorsement | None = None
    if "endorsement" in data:
        if data["kind"] != MESH_CONFIG:
            raise ValueError(f"entry {map_key!r}: only a MeshConfig record carries an endorsement")
        try:
            endorsement = AdminEndorsement.from_wire(data["endorsement"])
        except ValueError as exc:
            raise ValueError(f"entry {map_key!r}: {exc}") from None
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
    if endorsement is not None:
        record = replace(record, endorsement=endorsement)
    if record.map_key != map_key:
        raise ValueError(f"entry {map_key!r} is stored under the wrong key ({record.map_key})")
    return record, obj


@functools.lru_cache(maxsize=2048)
def _decode_small(map_key: str, raw: str) -> tuple[VersionRecord, PolicyObject | None]:
    return decode_record(map_key, raw)


def clear_decode_cache() -> None:
    """Forget memoised validation results (benchmarks measuring a cold replica use it)."""
    _decode_small.cache_clear()


def decode_cached(map_key: object, raw: object) -> tuple[VersionRecord, PolicyObject | None]:
    """:func:`decode_record`, memoised for typical-size records.

    Validation is a pure function of (key, text) and its results are immutable; in-process
    simulations replay each record into many replicas. Failures are never cached
    (``lru_cache`` does not store exceptions) and large records bypass the cache so it
    stays small.
    """
    if isinstance(map_key, str) and isinstance(raw, str) and len(raw) <= _CACHED_RECORD_BYTES:
        return _decode_small(map_key, raw)
    return decode_record(map_key, raw)
