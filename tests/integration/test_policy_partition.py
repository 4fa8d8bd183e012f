"""Policy across a real partition: five hosts split 3|2 by nftables, edits on both sides."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import ExitStack

from chaos.faults import heal, partition
from chaos.netns import Host, Lab
from gossip.codec import generate_gossip_key, save_keyring
from tests.support.meshkit import process
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki
from tests.support.root import NEEDS_ROOT

pytestmark = NEEDS_ROOT

NODES = {f"node-{i}": svc for i, svc in enumerate(["web", "orders", "orders", "pay", "inv"], 1)}


def admin(host: Host, method: str, path: str, body: dict | None = None) -> dict:
    args = ["curl", "-s", "--max-time", "5", "-X", method, f"127.0.0.1:15000{path}"]
    args += ["-H", "X-Peermesh-Request: 1"]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(host.command(*args), capture_output=True, text=True)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {}


def route(name: str) -> dict:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": "orders", "http": [{"route": [{"destination": {"host": "orders"}}]}]},
    }


def wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(0.25)


def names(host: Host) -> set[str]:
    return {o["name"] for o in admin(host, "GET", "/v1/policy").get("objects", [])}


def test_edits_on_both_sides_of_a_3_2_split_survive_the_heal(tmp_path):
    dirs = make_mesh_pki(tmp_path, nodes=NODES)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    lab = Lab(prefix="pmpol")
    hosts = lab.up(len(NODES))
    try:
        with ExitStack() as stack:
            for i, (host, (node, service)) in enumerate(zip(hosts, NODES.items(), strict=True)):
                seed = hosts[i - 1].address if i else hosts[1].address
                stack.enter_context(
                    process(
                        host.command(
                            sys.executable, "-m", "peermesh", "agent", "--name", node,
                            "--service", f"{service}=8080", "--data-dir", str(dirs[node]),
                            "--trust-domain", TRUST_DOMAIN,
                            "--inbound", f"{host.address}:15443",
                            "--gossip", f"{host.address}:15946", "--advertise", host.address,
                            "--join", f"{seed}:15443", "--no-mdns",
                            "--gossip-key-file", str(key), "--gossip-profile", "local",
                            "--log-level", "warning",
                        )
                    )
                )  # fmt: skip
            wait(lambda: all(admin(h, "GET", "/v1/policy/status").get("peers") for h in hosts))
            assert admin(hosts[0], "PUT", "/v1/policy", {"objects": [route("before")]})["changed"]
            wait(lambda: all("before" in names(h) for h in hosts))

            majority, minority = hosts[:3], hosts[3:]
            partition([majority, minority])
            edits = {
                "left-1": hosts[0],
                "left-2": hosts[2],
                "right-1": hosts[3],
                "right-2": hosts[4],
            }
            for name, host in edits.items():
                reply = admin(host, "PUT", "/v1/policy", {"objects": [route(name)]})
                assert reply.get("changed") == [f"Route/{name}"], reply  # acknowledged
            # Each side converges on its own edits and cannot see the other's.
            wait(lambda: all({"left-1", "left-2"} <= names(h) for h in majority))
            wait(lambda: all({"right-1", "right-2"} <= names(h) for h in minority))
            assert not {"right-1", "right-2"} & names(hosts[0])

            heal(hosts)
            everything = {"before", *edits}
            wait(lambda: all(names(h) == everything for h in hosts))
            digests = {admin(h, "GET", "/v1/policy/status")["here"]["digest"] for h in hosts}
            assert len(digests) == 1
    finally:
        lab.down()
