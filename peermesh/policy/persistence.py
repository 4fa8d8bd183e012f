"""The store's durable storage on disk: a snapshot file and an fsynced update log beside it.

``<path>`` holds the snapshot: a magic line, the SHA-256 of the payload, then the payload
(the update's length, the whole-document update, and the store's shadowed winners).
``<path>.log`` is the :class:`~peermesh.policy.journal.Journal` of changes since. A
snapshot is replaced atomically (write, fsync, rename) and only then is the log emptied;
a crash in between replays the log over a snapshot that already holds it, which is
harmless because CRDT updates are idempotent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from peermesh.core.durable import atomic_write
from peermesh.policy.errors import PolicyStoreCorrupt
from peermesh.policy.journal import Journal
from peermesh.policy.storage import ReplayReport, Snapshot

SNAPSHOT_MAGIC: Final = b"PMPOLICY1\n"
#: The snapshot's name in an agent's data dir (the log is ``policy.bin.log`` beside it).
SNAPSHOT_FILE: Final = "policy.bin"


class DiskPersistence:
    """A :class:`~peermesh.policy.storage.Persistence` in ``path`` and ``path.log``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal = Journal(self.path.with_name(self.path.name + ".log"))

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> DiskPersistence:
        """The agent's policy store in its data dir."""
        return cls(Path(data_dir) / SNAPSHOT_FILE)

    @property
    def snapshot_name(self) -> str:
        return str(self.path)

    @property
    def log_name(self) -> str:
        return str(self.journal.path)

    @property
    def log_size(self) -> int:
        return self.journal.size

    def load_snapshot(self) -> Snapshot | None:
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        hint = (
            f"stop the agent and run `peermesh policy recover --data-dir {self.path.parent}`"
            " to move the damaged files aside (kept) so the agent resyncs everything from"
            " its peers, or restore the file from a backup"
        )
        header = len(SNAPSHOT_MAGIC) + 32
        if not data.startswith(SNAPSHOT_MAGIC) or len(data) < header:
            raise PolicyStoreCorrupt(f"{self.path} is not a peermesh policy snapshot; {hint}")
        checksum, payload = data[len(SNAPSHOT_MAGIC) : header], data[header:]
        if hashlib.sha256(payload).digest() != checksum or len(payload) < 8:
            raise PolicyStoreCorrupt(f"{self.path} fails its checksum (damaged on disk); {hint}")
        size = int.from_bytes(payload[:8], "big")
        return Snapshot(update=payload[8 : 8 + size], shadows=payload[8 + size :])

    def replay_log(self) -> tuple[list[bytes], ReplayReport]:
        return self.journal.replay()

    def append(self, update: bytes) -> None:
        self.journal.append(update)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        payload = len(snapshot.update).to_bytes(8, "big") + snapshot.update + snapshot.shadows
        atomic_write(self.path, SNAPSHOT_MAGIC + hashlib.sha256(payload).digest() + payload)
        self.journal.reset()

    def close(self) -> None:
        self.journal.close()
