"""Finding h2load, nginx and HAProxy, and the versions of everything on the request path."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

from bench._common import REPO, command_version

# --- tools and versions ----------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin (nginx and haproxy live there on Debian)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if candidate.exists() else None


def required_tools() -> dict[str, str]:
    """Paths of h2load, nginx and haproxy; exits with an install hint when any is missing."""
    tools = {name: find_tool(name) for name in ("h2load", "nginx", "haproxy")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        packages = {"h2load": "nghttp2-client", "nginx": "nginx-light", "haproxy": "haproxy"}
        print(
            f"bench.dataplane: missing {', '.join(missing)}; it needs h2load, nginx and haproxy.\n"
            f"  Debian/Ubuntu: sudo apt-get install -y {' '.join(packages[m] for m in missing)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return {name: path for name, path in tools.items() if path is not None}


def versions(tools: dict[str, str]) -> dict[str, str]:
    """Versions of everything on the request path."""

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return {
        "Python": platform.python_version(),
        "trio": dist("trio"),
        "h2": dist("h2"),
        "OpenSSL (Python)": ssl.OPENSSL_VERSION.removeprefix("OpenSSL ").split(" ")[0],
        "OpenSSL (system)": command_version(["openssl", "version"]),
        "nginx": command_version([tools["nginx"], "-v"]),
        "HAProxy": command_version([tools["haproxy"], "-v"], r"\d+\.\d+\.\d+[^\s]*"),
        "h2load": command_version([tools["h2load"], "--version"]),
        "peermesh": peermesh_revision(),
    }


def peermesh_revision() -> str:
    """The commit the agents ran from (read-only git), marked when peermesh/ differs from it."""
    git = shutil.which("git")
    if git is None:
        return "?"
    try:
        head = subprocess.run(
            [git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        dirty = subprocess.run(
            [git, "-C", str(REPO), "diff-index", "--quiet", "HEAD", "--", "peermesh"],
            capture_output=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.returncode == 1 else "")
