"""The policy control RPCs' messages: push, sync, status and edit, checked on decode.

Each body comes from another agent, so each is read field by field with bounds before a
handler sees it. What the messages carry beyond their shape (a CRDT update's records,
an edit's objects) is checked by the store, which refuses it whole if anything is wrong.
"""

from __future__ import annotations

from typing import Any, Self

from peermesh.core.codec import WireMessage, wire
from peermesh.core.wire import Fields, WireError
from peermesh.net.rpc import Empty, RpcMethod
from peermesh.net.rpc.router import MAX_BODY
from peermesh.policy.errors import PolicyWarning

MAX_OBJECTS_PER_REQUEST = 10_000
_MAX_NODE = 253
_MAX_KEY = 600  # Kind/name
_MAX_DIGEST = 128


def _bytes(raw: object, where: str = "") -> bytes | None:
    """A state vector that is not bytes is none: the answer is then the whole state."""
    return bytes(raw) if isinstance(raw, bytes | bytearray) else None


class PushRequest(
    WireMessage,
    what="policy/push",
    refuse=lambda e: WireError(f"policy/push body must carry a CRDT update (bytes): {e}"),
):
    """``policy/push``: a CRDT update, and the node it came from (never sent it back)."""

    update: bytes = wire(max_len=MAX_BODY)
    sender: str | None = wire(key="from", default=None, max_len=_MAX_NODE)

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        # A bare update (bytes) is accepted too: the sender is then unknown.
        update = _bytes(raw)
        return cls(update) if update is not None else super().from_wire(raw)


class PushReply(WireMessage, what="policy/push reply"):
    """Where the receiver is after merging: its version and policy digest."""

    version: int = wire(minimum=0)
    digest: str = wire(max_len=_MAX_DIGEST)


class SyncRequest(
    WireMessage,
    what="policy/sync",
    refuse=lambda e: WireError(f"policy/sync body must be {{'sv': <state vector bytes>}}: {e}"),
):
    """``policy/sync``: the caller's state vector, so the answer holds only what it lacks."""

    sv: bytes = wire(max_len=MAX_BODY)


class SyncReply(WireMessage, what="policy/sync reply"):
    """What the caller lacks, and our state vector so it can push what *we* lack."""

    update: bytes = wire(max_len=MAX_BODY)
    sv: bytes | None = wire(default=None, decode=_bytes)


class StatusReply(WireMessage, what="policy/status reply"):
    """``policy/status``: one agent's version, digests, size and effective admins."""

    version: int = wire(minimum=0)
    digest: str = wire(max_len=_MAX_DIGEST)
    state_vector_digest: str = wire(max_len=_MAX_DIGEST)
    objects: int = wire(minimum=0)
    # Effective MeshConfig admins (empty: any mesh identity may edit).
    admins: tuple[str, ...] = wire(default=(), max_len=1024, item_len=2048)


class EditRequest(
    WireMessage,
    what="policy/edit",
    refuse=lambda e: WireError(f"policy/edit body must be {{'objects': [...]}}: {e}"),
):
    """``policy/edit``: documents for a MeshConfig admin's edit, validated by the store."""

    objects: tuple[Any, ...] = wire(max_len=MAX_OBJECTS_PER_REQUEST)


def _edit(raw: Any, where: str) -> tuple[str, str]:
    e = Fields(raw, where)
    return e.text("object", max_len=_MAX_KEY), e.text("edit", max_len=_MAX_KEY)


def _edits_to_wire(edits: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    return [{"object": k, "edit": e} for k, e in edits]


def _warning(raw: Any, where: str) -> PolicyWarning:
    w = Fields(raw, where)
    return PolicyWarning(
        kind=w.text("kind", max_len=64),
        name=w.text("name", max_len=_MAX_KEY),
        path=w.text("path", max_len=_MAX_KEY),
        message=w.text("message"),
        code=w.text("code", max_len=64),
    )


class EditReply(WireMessage, what="policy/edit reply"):
    """What an edit wrote: ``edits`` pairs each written object with its new edit id."""

    version: int = wire(minimum=0)
    changed: tuple[str, ...] = wire(absent=(), max_len=MAX_OBJECTS_PER_REQUEST, item_len=_MAX_KEY)
    unchanged: tuple[str, ...] = wire(absent=(), max_len=MAX_OBJECTS_PER_REQUEST, item_len=_MAX_KEY)
    edits: tuple[tuple[str, str], ...] = wire(
        absent=(), max_len=MAX_OBJECTS_PER_REQUEST, item=_edit, encode=_edits_to_wire
    )
    warnings: tuple[PolicyWarning, ...] = wire(
        default=(), max_len=10 * MAX_OBJECTS_PER_REQUEST, item=_warning
    )
    source: str = wire(default="", max_len=2048)


PUSH = RpcMethod("policy/push", PushRequest, PushReply)
SYNC = RpcMethod("policy/sync", SyncRequest, SyncReply)
STATUS = RpcMethod("policy/status", Empty, StatusReply)
EDIT = RpcMethod("policy/edit", EditRequest, EditReply)
