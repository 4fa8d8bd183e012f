"""Access log: one JSON line per request, written off the request path.

The proxy only appends a record to a bounded in-memory buffer (no I/O, no await).
A task in the agent's nursery drains the buffer and writes batches from a worker
thread, so a slow or stuck sink (a full pipe, a hung disk) never delays traffic: when
the buffer is full the newest line is dropped and counted
(``peermesh_access_log_dropped_total``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from typing import IO, Protocol

import trio

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4096
BATCH = 1024  # lines per write (one thread hop each)
# Seconds a line may wait for others to share its write. Each write is a hop to a worker
# thread and back, which costs far more CPU than encoding a line: at a few hundred
# requests a second a 50 ms interval cost more than the lines themselves. (Envoy flushes
# its access log files once a second by default.) A buffer half full cuts the wait short.
FLUSH_INTERVAL = 0.25


class Loggable(Protocol):
    """A finished request or TCP connection: it renders its own JSON line."""

    def log_line(self) -> bytes: ...


class AccessLog:
    """A bounded buffer of finished requests and the writer that drains it."""

    def __init__(self, sink: str | IO[bytes], *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.sink = sink
        self.capacity = capacity
        self._buffer: deque[Loggable] = deque()
        self._wakeup = trio.Event()
        self._filling = trio.Event()
        self._soon = max(1, capacity // 2)
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._file: IO[bytes] | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def offer(self, record: Loggable) -> bool:
        """Queue one request or connection; False (and counted) if the buffer is full."""
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            return False
        self._buffer.append(record)
        if not self._wakeup.is_set():
            self._wakeup.set()
        if len(self._buffer) >= self._soon and not self._filling.is_set():
            self._filling.set()
        return True

    def _open(self) -> IO[bytes]:
        if self._file is None:
            if not isinstance(self.sink, str):
                self._file = self.sink
            elif self.sink == "-":
                self._file = sys.stdout.buffer
            else:
                fd = os.open(self.sink, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
                self._file = os.fdopen(fd, "ab", buffering=0)
        return self._file

    def _write(self, lines: bytes) -> None:
        out = self._open()
        out.write(lines)
        out.flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain forever (until cancelled); one thread call per batch."""
        task_status.started()
        while True:
            await self._wakeup.wait()
            # Let a batch gather: one thread hop and one write per interval, not per line.
            with trio.move_on_after(FLUSH_INTERVAL):
                await self._filling.wait()
            self._wakeup = trio.Event()
            self._filling = trio.Event()
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                lines = b"".join([r.log_line() for r in batch])
                try:
                    await trio.to_thread.run_sync(self._write, lines, abandon_on_cancel=True)
                    self.written += len(batch)
                except OSError as exc:
                    self.write_errors += 1
                    self.dropped += len(batch)
                    log.warning("access log: cannot write to %s: %s", self.sink, exc)

    def close(self) -> None:
        if self._file is not None and isinstance(self.sink, str) and self.sink != "-":
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
