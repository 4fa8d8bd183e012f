"""An append-only, fsynced update log: what makes an acknowledged policy edit durable.

Each record is ``length (u32) | crc32 (u32) | payload``. Appending one small delta and
fsyncing it costs the same at 10 objects or 10,000, unlike rewriting a snapshot per
edit; the log is folded into the snapshot now and then (compaction). A torn or
damaged tail (power loss mid-append, a bad sector) is detected by length or CRC,
reported, and cut off: every record before it is kept.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from peermesh.core.durable import SECRET_MODE, atomic_write, fsync_directory
from peermesh.policy.storage import ReplayReport

HEADER = struct.Struct(">II")
MAX_RECORD = 256 << 20


class Journal:
    """Appends records durably; ``replay()`` yields the good ones and trims a bad tail."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0
        self.records = 0

    def replay(self) -> tuple[list[bytes], ReplayReport]:
        """Every intact record in order; a damaged tail is cut off the file."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], ReplayReport(0, 0, None)
        out: list[bytes] = []
        offset = 0
        reason: str | None = None
        for payload, end, problem in _records(data):
            if problem is not None:
                reason = problem
                break
            out.append(payload)
            offset = end
        if reason is not None:
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)
                handle.flush()
                os.fsync(handle.fileno())
        self.size = offset
        self.records = len(out)
        return out, ReplayReport(len(out), offset, reason)

    def append(self, payload: bytes) -> None:
        """Write one record and fsync it: when this returns, the record survives a crash."""
        if len(payload) > MAX_RECORD:
            raise ValueError(f"journal record of {len(payload)} bytes exceeds {MAX_RECORD}")
        if self._fd is None:
            existed = self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SECRET_MODE)
            if not existed:
                fsync_directory(self.path.parent)
        record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.size += len(record)
        self.records += 1

    def reset(self) -> None:
        """Empty the log (after its records were folded into a snapshot)."""
        self.close()
        atomic_write(self.path, b"", SECRET_MODE)
        self.size = 0
        self.records = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _records(data: bytes) -> Iterator[tuple[bytes, int, str | None]]:
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            yield b"", offset, f"truncated record header at byte {offset}"
            return
        length, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_RECORD or start + length > len(data):
            yield b"", offset, f"truncated record at byte {offset} ({length} bytes announced)"
            return
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            yield b"", offset, f"checksum mismatch in record at byte {offset}"
            return
        offset = start + length
        yield payload, offset, None
