"""The way out of a damaged policy store: move the damaged files aside, resync from peers.

Every policy edit is replicated and signed, so the mesh holds every acknowledged edit an
agent's own files held (once it was replicated). :func:`recover` checks the snapshot and
the log the way a start does; each damaged one is renamed to ``<name>.damaged-<UTC time>``
in the same directory (kept for a post-mortem, never deleted), and the agent's next start
begins from what is left and pulls the rest from its peers through the ordinary sync,
which checks every record's signature and authority as it checks any peer's update.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from peermesh.core.durable import fsync_directory
from peermesh.policy.errors import PolicyStoreCorrupt
from peermesh.policy.journal import Journal
from peermesh.policy.persistence import DiskPersistence


@dataclass(frozen=True)
class Damage:
    """One file of the store that a start would refuse, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found and did."""

    damaged: tuple[Damage, ...]
    moved: tuple[tuple[Path, Path], ...]  # (from, to)


def check(persistence: DiskPersistence) -> list[Damage]:
    """The store's files that a start would refuse (a torn final log record is not one:
    a start repairs that itself). Reads only; changes nothing."""
    found: list[Damage] = []
    try:
        persistence.load_snapshot()
    except PolicyStoreCorrupt as exc:
        found.append(Damage(persistence.path, exc.message))
    problem = Journal.check(persistence.journal.path)
    if problem is not None:
        found.append(Damage(persistence.journal.path, problem))
    return found


def recover(
    persistence: DiskPersistence, *, now: dt.datetime, everything: bool = False
) -> Recovery:
    """Move the damaged files (or, with ``everything``, both files) aside.

    Run it while the agent is stopped; a file that is fine stays where it is, so the
    agent restarts from it and only resyncs what it lacks.
    """
    damaged = check(persistence)
    targets = [d.path for d in damaged]
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
