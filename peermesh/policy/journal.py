"""An append-only, fsynced update log: what makes an acknowledged policy edit durable.

Each record is ``length (u32) | crc32 (u32) | payload``. Appending one small delta and
fsyncing it costs the same at 10 objects or 10,000, unlike rewriting a snapshot per
edit; the log is folded into the snapshot now and then (compaction).

An append is acknowledged only once its fsync returned. One that fails (ENOSPC, EIO) is
cut back off the file, so the log always ends at its last good record and the next append
after space returns lands right after it.

On load, only the *final* record may be damaged without refusing: it is the one write a
crash can have interrupted before its fsync returned (so it was never acknowledged), and
it is cut off and reported, as etcd's WAL repair does. A bad checksum or an impossible
length anywhere before it is damage to acknowledged data: :meth:`Journal.replay` raises
:class:`JournalCorrupt` naming the file and offset instead of dropping the later records.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from peermesh.core.durable import SECRET_MODE, StorageFailed, atomic_write, fsync_directory
from peermesh.policy.errors import PolicyStoreCorrupt
from peermesh.policy.storage import ReplayReport

HEADER = struct.Struct(">II")
MAX_RECORD = 256 << 20

log = logging.getLogger(__name__)


class JournalCorrupt(PolicyStoreCorrupt):
    """A record before the log's last one is damaged; the agent refuses to start."""

    default_code = "policy-log-corrupt"

    def __init__(self, path: Path, offset: int, problem: str) -> None:
        self.path = path
        self.offset = offset
        self.problem = problem
        super().__init__(
            f"policy log {path} is damaged at byte {offset} ({problem}), before its last"
            " record: refusing to start rather than drop the acknowledged edits after it",
            hint=(
                "stop the agent and run `peermesh policy recover --data-dir"
                f" {path.parent}`: it moves the damaged files aside (kept, timestamped) and"
                " the agent then rebuilds its policy from its peers, checking every"
                " signature; or restore the file from a backup"
            ),
        )


class Journal:
    """Appends records durably; ``replay()`` yields them and trims a torn final record."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0  # bytes of good records: where the next append goes
        self.records = 0
        self._known = False  # whether ``size`` was learnt from the file (replay or reset)

    def replay(self) -> tuple[list[bytes], ReplayReport]:
        """Every record in order; a torn final record is cut off the file.

        Raises :class:`JournalCorrupt` when a record before the last one is damaged.
        """
        out, report = Journal.read(self.path)
        if report.corrupt_tail is not None:
            with open(self.path, "r+b") as handle:
                handle.truncate(report.good_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        self.size = report.good_bytes
        self.records = len(out)
        self._known = True
        return out, report

    @staticmethod
    def read(path: Path) -> tuple[list[bytes], ReplayReport]:
        """What :meth:`replay` yields, without cutting a torn final record; reads only.

        Raises :class:`JournalCorrupt` when a record before the last one is damaged.
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], ReplayReport(0, 0, None)
        out: list[bytes] = []
        starts: list[int] = []
        offset = 0
        reason: str | None = None
        for payload, end, problem in _records(data, path):
            if problem is not None:
                reason = problem
                break
            out.append(payload)
            starts.append(offset)
            offset = end
        return out, ReplayReport(len(out), offset, reason, tuple(starts))

    @staticmethod
    def check(path: Path) -> str | None:
        """Why a start would refuse the log at ``path``, or None; reads only."""
        try:
            Journal.read(path)
        except JournalCorrupt as exc:
            return exc.message
        return None

    def append(self, payload: bytes) -> None:
        """Write one record and fsync it: when this returns, the record survives a crash.

        Raises :class:`StorageFailed` when the write or fsync fails; the file is then cut
        back to its last good record and nothing of this one remains.
        """
        if len(payload) > MAX_RECORD:
            raise ValueError(f"journal record of {len(payload)} bytes exceeds {MAX_RECORD}")
        record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            fd = self._open()
            view = memoryview(record)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            self._roll_back()
            raise StorageFailed.from_os_error(self.path, exc, "appending to") from exc
        self.size += len(record)
        self.records += 1

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        existed = self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SECRET_MODE)
        try:
            on_disk = os.fstat(fd).st_size
            if not self._known:
                self.size, self._known = on_disk, True
            elif on_disk > self.size:
                # A failed append whose cut-back failed too left bytes past the last good
                # record: cut them now, or the next record would follow garbage.
                os.ftruncate(fd, self.size)
                os.fsync(fd)
            if not existed:
                fsync_directory(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _roll_back(self) -> None:
        """Cut whatever a failed append left, and reopen next time (after a failed fsync
        the descriptor's error state is not to be trusted)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, self.size)
            os.fsync(fd)
        except OSError as exc:
            log.warning(
                "could not cut %s back to %d bytes after a failed append (%s); the next"
                " append cuts it first",
                self.path,
                self.size,
                exc,
            )
        finally:
            os.close(fd)

    def reset(self) -> None:
        """Empty the log (after its records were folded into a snapshot)."""
        self.close()
        atomic_write(self.path, b"", SECRET_MODE)
        self.size = 0
        self.records = 0
        self._known = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _records(data: bytes, path: Path) -> Iterator[tuple[bytes, int, str | None]]:
    """Each record as ``(payload, end, None)``; a torn final record as ``(b"", offset,
    why)``, after which nothing follows. Damage before the final record raises
    :class:`JournalCorrupt`."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            yield b"", offset, f"torn record header at byte {offset}"
            return
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length == 0 and not data[offset:].strip(b"\0"):
            # Zeros to the end: space the file system allocated for a write that never
            # landed (etcd's WAL treats a zero-filled tail the same way).
            yield b"", offset, f"zero-filled tail from byte {offset}"
            return
        if length == 0 or length > MAX_RECORD:
            raise JournalCorrupt(path, offset, f"impossible record length {length}")
        if start + length > len(data):
            yield b"", offset, f"torn record at byte {offset} ({length} bytes announced)"
            return
        payload = data[start : start + length]
        end = start + length
        if zlib.crc32(payload) != crc:
            if end == len(data):
                yield b"", offset, f"torn final record at byte {offset} (checksum mismatch)"
                return
            raise JournalCorrupt(
                path, offset, f"checksum mismatch, {len(data) - end} bytes of records follow"
            )
        offset = end
        yield payload, offset, None
