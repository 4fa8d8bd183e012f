"""Running ``nft`` for capture: install, remove, status of our own table only."""

from __future__ import annotations

import shutil
import subprocess

from peermesh.capture.rules import (
    TABLE_FAMILY,
    TABLE_NAME,
    CaptureError,
    CaptureSpec,
    remove_script,
    table_script,
)

NFT_TIMEOUT = 30.0


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        raise CaptureError("nft not found: install the nftables package (apt install nftables)")
    try:
        return subprocess.run(
            [nft, *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CaptureError(f"nft {' '.join(args)} did not finish in {NFT_TIMEOUT:.0f}s") from None


def _apply(script: str) -> None:
    done = _nft("-f", "-", script=script)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith(("Error", "/dev"))]
        why = "; ".join(lines[:3]) or done.stderr.strip()[:300] or "no message"
        raise CaptureError(
            f"nft refused the capture rules: {why} (run as root, in the namespace to change)"
        )


def install(spec: CaptureSpec) -> str:
    """Replace our table with one built from ``spec``; returns the script applied."""
    script = table_script(spec)
    _apply(script)
    return script


def remove() -> None:
    """Delete our table (nothing else); fine when it is absent."""
    _apply(remove_script())


def status() -> str | None:
    """Our table as ``nft list`` prints it, or None when capture is not installed."""
    done = _nft("list", "table", TABLE_FAMILY, TABLE_NAME)
    if done.returncode != 0:
        if "No such file" in done.stderr or "does not exist" in done.stderr:
            return None
        raise CaptureError(f"nft list failed: {done.stderr.strip() or 'no message'}")
    return done.stdout
