"""The agent process does not load what only other commands or switched-off features use.

Each check runs in a fresh interpreter, since this test process has imported most of
the tree already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.meshkit import REPO

# Imported by the CLI commands that print (rich), read files (yaml), the DNS server
# (--dns: dnspython), mDNS (zeroconf), a trace exporter (OpenTelemetry), the chaos and
# bench reports (matplotlib), the tests (hypothesis), and misspelt-policy hints (difflib).
NOT_IN_AGENT = (
    "rich",
    "yaml",
    "dns",
    "zeroconf",
    "opentelemetry",
    "matplotlib",
    "hypothesis",
    "difflib",
)

_PROBE = """
import json, sys
from peermesh.cli import main
main.get_command(None, "agent")
import peermesh.agent.root
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _loaded(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_agent_command_and_root_leave_optional_packages_unloaded() -> None:
    loaded = _loaded(_PROBE)
    assert "trio" in loaded and "peermesh" in loaded  # the probe did import the agent
    assert sorted(loaded.intersection(NOT_IN_AGENT)) == []


@pytest.mark.parametrize("command", ["status", "policy", "top"])
def test_other_commands_are_found_after_the_agent_only_start(command: str) -> None:
    code = (
        "import json, sys\nfrom peermesh.cli import main\n"
        f"cmd = main.get_command(None, {command!r})\n"
        "print(json.dumps([cmd.name, 'rich' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == [command, True]
