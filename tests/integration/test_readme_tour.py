"""README's "By hand" tour, run as written, in a network namespace of its own.

The commands are taken from README.md, not copied here, so the tour cannot drift from
what the agents accept. Its fixed ports are why it needs a namespace (and root): other
tests on this machine may hold them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NETNS = f"pmtour{os.getpid() % 100000}"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]


def tour_commands() -> list[str]:
    """The shell commands of README's "By hand" block, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"By hand[^\n]*\n+```sh\n(.*?)```", text, re.S)
    assert match, "README.md has no 'By hand' sh block"
    joined = match.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_readme_tour_commands_work_as_written(tmp_path):
    commands = tour_commands()
    assert any(c.startswith("peermesh agent") for c in commands)
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    venv_bin = str(REPO / ".venv" / "bin")
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env["VIRTUAL_ENV"] = str(REPO / ".venv")
    env.pop("http_proxy", None)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    background: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        for command in commands:
            argv = ["ip", "netns", "exec", NETNS, "bash", "-c"]
            if command.endswith("&"):
                script = "exec " + command[:-1].strip()
                background.append(
                    subprocess.Popen([*argv, script], cwd=tmp_path, env=env, start_new_session=True)
                )
                continue
            # A person types the next command after the agents are up: retry until it
            # works (or give up), never skip it.
            deadline = time.monotonic() + 60
            while True:
                result = subprocess.run(
                    [*argv, command], cwd=tmp_path, env=env, capture_output=True, timeout=60
                )
                if result.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert result.returncode == 0, (
                f"README command failed: {command}\n{shlex.quote(result.stderr.decode())}"
            )
            assert all(p.poll() is None for p in background), f"a process died before {command}"
    finally:
        for proc in background:
            proc.terminate()
        for proc in background:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
