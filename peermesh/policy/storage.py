"""What the store needs of durable storage, so the store itself never touches a file.

The store decides *what* must be durable and *when*: each change is appended before it is
acknowledged, and now and then everything is folded into a snapshot. Where and how the
bytes are kept (a journal and a snapshot file, fsynced) is
:class:`~peermesh.policy.persistence.DiskPersistence`; a store without persistence
(tests, simulations) keeps everything in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from peermesh.policy.errors import PolicyStoreCorrupt


@dataclass(frozen=True)
class ReplayReport:
    """What reading the log found."""

    records: int
    good_bytes: int
    corrupt_tail: str | None  # why the tail was cut, or None when the log was clean
    offsets: tuple[int, ...] = ()  # where each record starts in the log, when it has bytes


@dataclass(frozen=True)
class Snapshot:
    """The whole document as one update, and the shadowed winners (the store's encoding)."""

    update: bytes
    shadows: bytes


class Persistence(Protocol):
    """Durable storage for one store; every method returns once its bytes survive a crash."""

    @property
    def snapshot_name(self) -> str:
        """Where the snapshot lives, for messages (a path)."""

    @property
    def log_name(self) -> str:
        """Where the log lives, for messages (a path)."""

    @property
    def log_size(self) -> int:
        """Bytes in the log since the last snapshot."""

    def load_snapshot(self) -> Snapshot | None:
        """The last snapshot, or None; a damaged one raises ``PolicyStoreCorrupt``."""

    def replay_log(self) -> tuple[list[bytes], ReplayReport]:
        """Every intact change appended since that snapshot; a damaged tail is cut off."""

    def append(self, update: bytes) -> None:
        """Add one change to the log (the acknowledgement point)."""

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the snapshot atomically, then empty the log it now contains."""

    def close(self) -> None: ...


class JournalRecordInvalid(PolicyStoreCorrupt):
    """A record is intact on disk but its policy is refused (a bad signature, an invalid
    object): it was written by something other than this agent's own checked path, so
    the agent refuses to start rather than serve a store that silently lost an edit."""

    default_code = "policy-log-invalid"

    def __init__(self, path: str, offset: int | None, record: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.record = record
        self.reason = reason
        where = f"record {record}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(
            f"policy log {path} holds an intact {where} whose policy is refused ({reason}):"
            " refusing to start rather than skip it",
            hint=(
                "stop the agent and run `peermesh policy recover --data-dir"
                f" {Path(path).parent}`: it validates every record as a start does and moves"
                " the log holding this one aside (kept, timestamped); the agent then rebuilds"
                " its policy from its peers, checking every signature"
            ),
        )
