"""Durable file writes: acknowledged state must survive a crash (write, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def atomic_write(path: Path, data: bytes, mode: int = PUBLIC_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The temporary file is created with ``mode`` from the start, so a secret is never
    readable by others even for an instant; the directory is fsynced after the rename
    so the new name itself is durable.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename or create inside ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
