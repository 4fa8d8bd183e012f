"""mDNS for real: agents on separate hosts (network namespaces on one bridge), no --join."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack

from chaos.netns import Lab
from gossip.codec import generate_gossip_key, save_keyring
from tests.support.meshkit import process
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki
from tests.support.root import NEEDS_ROOT

pytestmark = NEEDS_ROOT

NODES = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}


def test_agents_in_namespaces_find_each_other_by_mdns(tmp_path):
    dirs = make_mesh_pki(tmp_path, nodes=NODES)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    lab = Lab(prefix="pmtest")
    hosts = lab.up(len(NODES))
    try:
        with ExitStack() as stack:
            for host, (node, service) in zip(hosts, NODES.items(), strict=True):
                stack.enter_context(
                    process(
                        host.command(
                            sys.executable, "-m", "examples.service", "--name", service,
                            "--port", "8080",
                        )
                    )
                )  # fmt: skip
                stack.enter_context(
                    process(
                        host.command(
                            sys.executable, "-m", "peermesh", "agent", "--name", node,
                            "--service", f"{service}=8080", "--data-dir", str(dirs[node]),
                            "--trust-domain", TRUST_DOMAIN,
                            "--inbound", f"{host.address}:15443",
                            "--gossip", f"{host.address}:15946",
                            "--advertise", host.address,
                            "--gossip-key-file", str(key), "--gossip-profile", "local",
                            "--log-level", "warning",
                        )
                    )
                )  # fmt: skip

            def members(host) -> dict[str, str]:
                out = subprocess.run(
                    host.command("curl", "-s", "--max-time", "2", "127.0.0.1:15000/v1/members"),
                    capture_output=True, text=True,
                )  # fmt: skip
                try:
                    data = json.loads(out.stdout)
                except ValueError:
                    return {}
                return {m["name"]: m["state"] for m in data.get("members", [])}

            deadline = time.monotonic() + 60
            expected = dict.fromkeys(NODES, "alive")
            while time.monotonic() < deadline:
                views = [members(h) for h in hosts]
                if all(view == expected for view in views):
                    break
                time.sleep(0.5)
            assert [members(h) for h in hosts] == [expected] * len(hosts)
            # Traffic crosses hosts through the gossip-built endpoint table.
            reply = subprocess.run(
                hosts[0].command(
                    "curl", "-s", "--max-time", "5", "-H", "Host: payments",
                    "http://127.0.0.1:15001/",
                ),
                capture_output=True, text=True,
            )  # fmt: skip
            assert json.loads(reply.stdout)["service"] == "payments"
    finally:
        lab.down()
    assert not [
        n
        for n in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True
        ).stdout.split()
        if n.startswith("pmtest")
    ]
