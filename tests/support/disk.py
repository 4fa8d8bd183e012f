"""Real small disks for durability tests: a tmpfs mounted for one test, then removed.

Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped with the reason.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a ``size`` tmpfs on ``mount_point`` (created if missing), unmount afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (filling a real disk to ENOSPC)")
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, *, leave: int = 0) -> int:
    """Grow ``path`` until its file system is full, then give back ``leave`` bytes.

    Returns how many bytes ``path`` holds. With ``leave=0`` the next write that needs a
    new block fails with ENOSPC.
    """
    with open(path, "ab", buffering=0) as handle:
        for piece in (65536, 4096, 512, 1):  # smaller and smaller: full to the last block
            while True:
                try:
                    handle.write(b"\xa5" * piece)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        size = handle.tell()
    if leave:
        size = max(0, size - leave)
        os.truncate(path, size)
    return size
