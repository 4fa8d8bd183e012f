"""Resident memory of this process (the agents under test run in it)."""

from __future__ import annotations

import gc
from pathlib import Path


def rss_bytes() -> int:
    """VmRSS from /proc/self/status, after a full collection so garbage is not counted."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
