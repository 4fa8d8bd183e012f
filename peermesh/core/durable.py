"""Durable file writes: acknowledged state must survive a crash (write, fsync, rename).

A write that fails (a full disk, a quota, an I/O error) raises :class:`StorageFailed`,
which an API answers with 507 Insufficient Storage: the operation it belonged to is
refused, never acknowledged, and the file keeps its previous content.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Final

from peermesh.core.errors import PeermeshError

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644

#: errno values that mean "no room": freeing space (or raising a quota) fixes them.
NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFailed(PeermeshError, OSError):
    """A durable write failed; nothing was acknowledged and the file is as before.

    Also an :class:`OSError` (with the original ``errno``), so code that handled a failed
    write as an ``OSError`` keeps doing so.
    """

    default_status = 507
    default_code = "storage-failed"

    @classmethod
    def from_os_error(cls, path: Path | str, exc: OSError, what: str) -> StorageFailed:
        """The refusal for ``exc``, raised while ``what`` (e.g. "appending to") ``path``."""
        reason = exc.strerror or str(exc)
        if exc.errno in NO_SPACE:
            error = cls(
                f"{what} {path} failed: {reason}; nothing was acknowledged",
                code="insufficient-storage",
                hint=f"free space on the file system of {path}, then retry",
            )
        else:
            error = cls(
                f"{what} {path} failed: {reason}; nothing was acknowledged",
                hint=f"check the disk holding {path} (kernel log, SMART), then retry",
            )
        error.errno = exc.errno
        error.strerror = exc.strerror
        error.filename = str(path)
        return error


def atomic_write(path: Path, data: bytes, mode: int = PUBLIC_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The temporary file is created with ``mode`` from the start, so a secret is never
    readable by others even for an instant; the directory is fsynced after the rename
    so the new name itself is durable.
    """
    path = Path(path)
    try:
        _atomic_write(path, data, mode)
    except StorageFailed:
        raise
    except OSError as exc:
        raise StorageFailed.from_os_error(path, exc, "writing") from exc


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
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
