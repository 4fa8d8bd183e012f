"""The way out of a damaged policy store: move the damaged files aside, resync from peers.

Every policy edit is replicated and signed, so the mesh holds every acknowledged edit an
agent's own files held (once it was replicated). :func:`recover` checks the snapshot and
the log the way a start does: their checksums, and then (with the agent's trust bundle)
every record's signature, authority and object, by loading them into a scratch store as
the agent would, so an intact record a start would refuse is found too. Each damaged file
is renamed to ``<name>.damaged-<UTC time>`` in the same directory (kept for a post-mortem,
never deleted), and the agent's next start begins from what is left and pulls the rest
from its peers through the ordinary sync, which checks every record as it checks any
peer's update.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from peermesh.core.durable import fsync_directory
from peermesh.policy.errors import PolicyStoreCorrupt
from peermesh.policy.intake import Verifier
from peermesh.policy.journal import Journal
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.storage import JournalRecordInvalid, ReplayReport, Snapshot
from peermesh.policy.store import PolicyStore

#: The node name of the scratch store that validates the files (never written to disk).
_SCRATCH_NODE = "policy-recover"


@dataclass(frozen=True)
class Damage:
    """One file of the store that a start would refuse, and why (``record`` and
    ``offset`` name the refused log record when the file is intact but its policy is not)."""

    path: Path
    reason: str
    record: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found and did."""

    damaged: tuple[Damage, ...]
    moved: tuple[tuple[Path, Path], ...]  # (from, to)


def check(persistence: DiskPersistence, verifier: Verifier | None = None) -> list[Damage]:
    """The store's files that a start would refuse (a torn final log record is not one:
    a start repairs that itself). Reads only; changes nothing.

    Checksums first; then the files whose checksums hold are loaded into a scratch store
    the way a start loads them, with ``verifier`` checking signatures (without one, only
    the objects are checked). The log is validated over the snapshot when the snapshot
    is sound, else over nothing, which is where the next start begins once it is moved.
    """
    found: list[Damage] = []
    snapshot: Snapshot | None = None
    try:
        snapshot = persistence.load_snapshot()
    except PolicyStoreCorrupt as exc:
        found.append(Damage(persistence.path, exc.message))
    problem = Journal.check(persistence.journal.path)
    if problem is not None:
        found.append(Damage(persistence.journal.path, problem))
    if snapshot is not None:
        try:
            _load(_Files(persistence, snapshot, log=False), verifier)
        except PolicyStoreCorrupt as exc:
            found.append(Damage(persistence.path, exc.message))
            snapshot = None
    if problem is None:
        try:
            _load(_Files(persistence, snapshot, log=True), verifier)
        except JournalRecordInvalid as exc:
            found.append(
                Damage(persistence.journal.path, exc.reason, record=exc.record, offset=exc.offset)
            )
        except PolicyStoreCorrupt as exc:
            found.append(Damage(persistence.journal.path, exc.message))
    return found


def _load(files: _Files, verifier: Verifier | None) -> None:
    """Load ``files`` as a start would; raises what the start would raise."""
    PolicyStore(files, node=_SCRATCH_NODE, verifier=verifier).close()


class _Files(DiskPersistence):
    """The same files, read only: the snapshot as already read, the log read in place (a
    torn final record is skipped, not cut), and any write refused."""

    def __init__(self, files: DiskPersistence, snapshot: Snapshot | None, *, log: bool) -> None:
        super().__init__(files.path)
        self._snapshot = snapshot
        self._log = log

    def load_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def replay_log(self) -> tuple[list[bytes], ReplayReport]:
        if not self._log:
            return [], ReplayReport(0, 0, None)
        return Journal.read(self.journal.path)

    def append(self, update: bytes) -> None:
        raise RuntimeError("the recovery check never writes")

    def save_snapshot(self, snapshot: Snapshot) -> None:
        raise RuntimeError("the recovery check never writes")


def recover(
    persistence: DiskPersistence,
    *,
    now: dt.datetime,
    everything: bool = False,
    verifier: Verifier | None = None,
) -> Recovery:
    """Move the damaged files (or, with ``everything``, both files) aside.

    Run it while the agent is stopped; a file that is fine stays where it is, so the
    agent restarts from it and only resyncs what it lacks. ``verifier`` checks record
    signatures as the agent's start does (see :func:`check`).
    """
    damaged = check(persistence, verifier)
    targets = list(dict.fromkeys(d.path for d in damaged))
    if everything:
        targets = [p for p in (persistence.path, persistence.journal.path) if p.exists()]
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    moved: list[tuple[Path, Path]] = []
    for path in targets:
        if not path.exists():
            continue
        target = path.with_name(f"{path.name}.damaged-{stamp}")
        suffix = 1
        while target.exists():
            target = path.with_name(f"{path.name}.damaged-{stamp}.{suffix}")
            suffix += 1
        os.rename(path, target)
        moved.append((path, target))
    if moved:
        fsync_directory(persistence.path.parent)
    return Recovery(tuple(damaged), tuple(moved))
