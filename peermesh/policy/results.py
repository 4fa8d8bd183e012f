"""What the store answers: a local edit's report, a peer update's result, history, status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peermesh.core.wire import field_map
from peermesh.policy.errors import PolicyWarning
from peermesh.policy.model import PolicyObject


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
        return field_map(self, rename={"edit_id": "edit"}, skip=("object",))


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
    """A replica at a glance, for ``/v1/policy/status`` and tests."""

    node: str
    version: int
    objects: int
    versions: int
    digest: str
    state_vector: dict[int, int]
    refused_updates: int
    shadowed: int  # pruned winners still in effect, waiting for newer versions
    admins: tuple[str, ...] = ()  # effective MeshConfig admins (empty: any identity edits)
