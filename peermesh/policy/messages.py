"""The policy control RPCs' messages: push, sync, status and edit, checked on decode.

Each body comes from another agent, so each is read field by field with bounds before a
handler sees it. What the messages carry beyond their shape (a CRDT update's records,
an edit's objects) is checked by the store, which refuses it whole if anything is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from peermesh.core.wire import Fields, WireError, field_map
from peermesh.net.rpc import Empty, RpcMethod
from peermesh.net.rpc.router import MAX_BODY
from peermesh.policy.errors import PolicyWarning

MAX_OBJECTS_PER_REQUEST = 10_000
_MAX_NODE = 253
_MAX_KEY = 600  # Kind/name
_MAX_DIGEST = 128


def _bytes(raw: object) -> bytes | None:
    return bytes(raw) if isinstance(raw, bytes | bytearray) else None


@dataclass(frozen=True)
class PushRequest:
    """``policy/push``: a CRDT update, and the node it came from (never sent it back)."""

    update: bytes
    sender: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"update": self.update, "from": self.sender}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        # A bare update (bytes) is accepted too: the sender is then unknown.
        update = _bytes(raw)
        if update is not None:
            return cls(update)
        update = _bytes(raw.get("update")) if isinstance(raw, Mapping) else None
        if update is None:
            raise WireError("policy/push body must carry a CRDT update (bytes)")
        return cls(update, Fields(raw, "policy/push").opt_text("from", max_len=_MAX_NODE))


@dataclass(frozen=True)
class PushReply:
    """Where the receiver is after merging: its version and policy digest."""

    version: int
    digest: str

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "digest": self.digest}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "policy/push reply")
        return cls(
            version=f.integer("version", minimum=0),
            digest=f.text("digest", max_len=_MAX_DIGEST),
        )


@dataclass(frozen=True)
class SyncRequest:
    """``policy/sync``: the caller's state vector, so the answer holds only what it lacks."""

    sv: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"sv": self.sv}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        sv = _bytes(raw.get("sv")) if isinstance(raw, Mapping) else None
        if sv is None:
            raise WireError("policy/sync body must be {'sv': <state vector bytes>}")
        return cls(sv)


@dataclass(frozen=True)
class SyncReply:
    """What the caller lacks, and our state vector so it can push what *we* lack."""

    update: bytes
    sv: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"update": self.update, "sv": self.sv}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "policy/sync reply")
        sv = _bytes(f.value("sv"))
        return cls(update=f.blob("update", max_len=MAX_BODY), sv=sv)


@dataclass(frozen=True)
class StatusReply:
    """``policy/status``: one agent's version, digests, size and effective admins."""

    version: int
    digest: str
    state_vector_digest: str
    objects: int
    # Effective MeshConfig admins (empty: any mesh identity may edit).
    admins: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return field_map(self)

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "policy/status reply")
        admins = f.items("admins", max_items=1024, default=[])
        if not all(isinstance(a, str) and len(a) <= 2048 for a in admins):
            raise WireError("policy/status reply.admins: expected SPIFFE IDs")
        return cls(
            version=f.integer("version", minimum=0),
            digest=f.text("digest", max_len=_MAX_DIGEST),
            state_vector_digest=f.text("state_vector_digest", max_len=_MAX_DIGEST),
            objects=f.integer("objects", minimum=0),
            admins=tuple(admins),
        )


@dataclass(frozen=True)
class EditRequest:
    """``policy/edit``: documents for a MeshConfig admin's edit, validated by the store."""

    objects: tuple[Any, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"objects": list(self.objects)}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        objects = raw.get("objects") if isinstance(raw, Mapping) else None
        if not isinstance(objects, list):
            raise WireError("policy/edit body must be {'objects': [...]}")
        return cls(tuple(objects))


@dataclass(frozen=True)
class EditReply:
    """What an edit wrote: ``edits`` pairs each written object with its new edit id."""

    version: int
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    edits: tuple[tuple[str, str], ...]
    warnings: tuple[PolicyWarning, ...] = field(default=())
    source: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "changed": list(self.changed),
            "unchanged": list(self.unchanged),
            "edits": [{"object": k, "edit": e} for k, e in self.edits],
            "warnings": [w.to_dict() for w in self.warnings],
            "source": self.source,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "policy/edit reply")
        limit = MAX_OBJECTS_PER_REQUEST
        edits = []
        for item in f.items("edits", max_items=limit, default=[]):
            e = Fields(item, "policy/edit reply.edits[]")
            edits.append((e.text("object", max_len=_MAX_KEY), e.text("edit", max_len=_MAX_KEY)))
        warnings = []
        for item in f.items("warnings", max_items=10 * limit, default=[]):
            w = Fields(item, "policy/edit reply.warnings[]")
            warnings.append(
                PolicyWarning(
                    kind=w.text("kind", max_len=64),
                    name=w.text("name", max_len=_MAX_KEY),
                    path=w.text("path", max_len=_MAX_KEY),
                    message=w.text("message"),
                    code=w.text("code", max_len=64),
                )
            )
        return cls(
            version=f.integer("version", minimum=0),
            changed=_texts(f, "changed", limit),
            unchanged=_texts(f, "unchanged", limit),
            edits=tuple(edits),
            warnings=tuple(warnings),
            source=f.text("source", max_len=2048, default=""),
        )


def _texts(f: Fields, key: str, limit: int) -> tuple[str, ...]:
    items = f.items(key, max_items=limit, default=[])
    if not all(isinstance(i, str) and len(i) <= _MAX_KEY for i in items):
        raise WireError(f"{f.what}.{key}: expected object keys (Kind/name)")
    return tuple(items)


PUSH = RpcMethod("policy/push", PushRequest, PushReply)
SYNC = RpcMethod("policy/sync", SyncRequest, SyncReply)
STATUS = RpcMethod("policy/status", Empty, StatusReply)
EDIT = RpcMethod("policy/edit", EditRequest, EditReply)
