"""The agent process does not load what only other commands or switched-off features use.

Each check runs in a fresh interpreter, since this test process has imported most of
the tree already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.meshkit import REPO

# Imported by the CLI commands that print (rich), read files (yaml), the DNS server
# (--dns: dnspython), mDNS (zeroconf), the tests (OpenTelemetry's protobuf classes decode
# exported spans; hypothesis), the chaos and bench reports (matplotlib), and
# misspelt-policy hints (difflib).
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

# Modules an idle agent does not run, loaded by the code path that needs them: RE2 (and
# the C++ runtime behind it) by the first policy regex, the DKG state machines by a key
# ceremony, the h2 engine (h2's connection machine, hyperframe) by the first session on
# that engine. Full module names: their packages' other modules may load (the limits
# and error codes both engines share come from h2.exceptions, h2.errors and hpack).
NOT_IN_IDLE_AGENT = (
    "re2",
    "certs.dkg",
    "peermesh.net.http.h2conn",
    "h2.connection",
    "hyperframe",
)

_PROBE = """
import json, sys
from peermesh.cli import main
main.get_command(None, "agent")
import peermesh.agent.root
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


# Builds the agent the way ``peermesh agent`` does (flags through click, then the config
# and the Agent, whose constructor opens the data dir, policy store and CA state), but
# stops before ``run()`` opens sockets.
_CONSTRUCT = """
import json, sys
from peermesh.cli import main
from peermesh.config import AgentConfig
command = main.get_command(None, "agent")
ctx = command.make_context("agent", [
    "--name", "node-a", "--service", "web=9", "--data-dir", sys.argv[1],
    "--gossip", "off", "--no-mdns", *sys.argv[2:],
])
from peermesh.agent import Agent
Agent(AgentConfig.build(**ctx.params))
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(code: str, *args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_agent_command_and_root_leave_optional_packages_unloaded() -> None:
    loaded = _loaded(_PROBE)
    assert "trio" in loaded and "peermesh" in loaded  # the probe did import the agent
    assert sorted(loaded.intersection(NOT_IN_AGENT)) == []


def test_a_constructed_idle_agent_has_not_loaded_regex_or_ceremony_code(tmp_path: Path) -> None:
    loaded = _loaded(_CONSTRUCT, str(tmp_path / "data"))
    assert "peermesh.agent.root" in loaded and "peermesh.policy.safe_regex" in loaded
    assert "peermesh.ca.dkgrelay" in loaded  # the relay is there, its machines are not
    assert sorted(loaded.intersection(NOT_IN_IDLE_AGENT)) == []
    assert sorted({name.split(".")[0] for name in loaded}.intersection(NOT_IN_AGENT)) == []


def test_an_agent_exporting_spans_loads_no_opentelemetry(tmp_path: Path) -> None:
    """Spans are encoded and sent by the project's own OTLP code, not the SDK."""
    loaded = _loaded(_CONSTRUCT, str(tmp_path / "data"), "--otlp-endpoint", "http://127.0.0.1:4318")
    assert "peermesh.observability.spanexport" in loaded
    assert not any(name.split(".")[0] == "opentelemetry" for name in loaded)
    assert "google.protobuf" not in loaded


def test_a_missing_re2_still_fails_when_the_policy_code_loads() -> None:
    code = (
        "import sys\nsys.modules['re2'] = None\n"  # what importing an absent package finds
        "import peermesh.policy.safe_regex\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0
    assert "ImportError: peermesh needs RE2 for policy regexes" in done.stderr


def test_the_first_policy_regex_loads_re2() -> None:
    code = (
        "import json, sys\nfrom peermesh.policy.safe_regex import compile_regex\n"
        "before = 're2' in sys.modules\n"
        "matched = compile_regex('/api/v[0-9]+').fullmatch('/api/v2') is not None\n"
        "print(json.dumps([before, 're2' in sys.modules, matched]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == [False, True, True]


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
