"""The CRDT document: one pycrdt ``Doc`` whose one root map holds every version record.

Flat on purpose: every edit adds a new key (see :mod:`~peermesh.policy.records`) holding
the whole object as one JSON string, so concurrent edits never collide inside the CRDT.
Nested maps per object would lose data (two replicas creating the same nested map
concurrently keep only one of them) and nested CRDT numbers would become floats.

A peer's update is first applied to a *scratch* copy, so it can be checked whole before
the real document sees it; the scratch is rebuilt from the real document when an update
is refused. Observers only record map events, never write (pycrdt runs them
synchronously); everything stays on the trio thread, and ``close()`` unobserves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pycrdt import Doc, Map, MapEvent, Subscription

from peermesh.policy.errors import UpdateRefused

VERSIONS_ROOT: Final = "policy.versions"
LOCAL_ORIGIN: Final = "local"

#: One change of the versions map: (map key, "add" | "update" | "delete", new value).
Event = tuple[str, str, Any]


@dataclass
class _Pending:
    """Map events collected by an observer; observers only record, never write the Doc."""

    events: list[Event] = field(default_factory=list)

    def __call__(self, event: MapEvent) -> None:
        changes: dict[str, dict[str, Any]] = getattr(event, "keys")  # noqa: B009 (slot, untyped)
        for key, change in changes.items():
            self.events.append((key, change["action"], change.get("newValue")))

    def take(self) -> list[Event]:
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


class VersionsDoc:
    """The replicated versions map, and the scratch copy where peers' updates are tried."""

    def __init__(self, client_id: int | None = None) -> None:
        self._doc: Doc = Doc(client_id=client_id)
        self._map: Map[str] = self._doc.get(VERSIONS_ROOT, type=Map)
        self._pending = _Pending()
        self._sub: Subscription | None = self._map.observe(self._pending)
        self._scratch_pending = _Pending()
        self._scratch: Doc = Doc()
        self._scratch_map: Map[str] = self._scratch.get(VERSIONS_ROOT, type=Map)
        self._scratch_sub: Subscription | None = self._scratch_map.observe(self._scratch_pending)

    def __contains__(self, map_key: str) -> bool:
        return map_key in self._map

    def records(self) -> dict[str, str]:
        """The raw replicated content (map key -> record JSON)."""
        return {key: str(value) for key, value in self._map.items()}

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def diff_since(self, remote_state_vector: bytes) -> bytes:
        """Everything we have that a peer with ``remote_state_vector`` lacks."""
        try:
            return self._doc.get_update(remote_state_vector)
        except Exception as exc:
            raise ValueError(f"cannot decode the peer's state vector: {exc}") from None

    def full_update(self) -> bytes:
        return self._doc.get_update()

    def write(self, entries: Sequence[tuple[str, str]], deletes: Iterable[str]) -> bytes:
        """One local transaction: set ``entries``, delete ``deletes``; returns the delta."""
        before = self._doc.get_state()
        with self._doc.transaction(origin=LOCAL_ORIGIN):
            for map_key, value in entries:
                self._map[map_key] = value
            for map_key in deletes:
                del self._map[map_key]
        update = self._doc.get_update(before)
        self._scratch.apply_update(update)
        self._scratch_pending.take()
        return update

    def try_update(self, update: bytes, source: str) -> list[Event]:
        """Apply a peer's update to the scratch copy and return what it changed there.

        Raises :class:`UpdateRefused` (and rebuilds the scratch) if it cannot be decoded
        or writes roots other than ours. A caller that refuses the update for what the
        events hold must call :meth:`reset_scratch`.
        """
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
        except UpdateRefused:
            self.reset_scratch()
            raise
        return self._scratch_pending.take()

    def reset_scratch(self) -> None:
        """Forget what was tried on the scratch copy: rebuild it from the real document."""
        if self._scratch_sub is not None:
            self._scratch_map.unobserve(self._scratch_sub)
        self._scratch = Doc()
        self._scratch_map = self._scratch.get(VERSIONS_ROOT, type=Map)
        self._scratch.apply_update(self._doc.get_update())
        self._scratch_pending.take()
        self._scratch_sub = self._scratch_map.observe(self._scratch_pending)

    def merge(self, update: bytes, *, origin: str) -> None:
        """Apply an update already checked on the scratch copy to the real document."""
        with self._doc.transaction(origin=origin):
            self._doc.apply_update(update)

    def take(self) -> list[Event]:
        """The real document's map events since the last call."""
        return self._pending.take()

    def close(self) -> None:
        """Drop the observers (pycrdt keeps them alive otherwise)."""
        if self._sub is not None:
            self._map.unobserve(self._sub)
            self._sub = None
        if self._scratch_sub is not None:
            self._scratch_map.unobserve(self._scratch_sub)
            self._scratch_sub = None
