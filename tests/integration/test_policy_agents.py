"""Replicated policy between real agents: edits anywhere, conflicts, durability, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import httpx
import trio

from peermesh.agent import Agent
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc import ControlRequest, RpcError
from peermesh.policy.crdt import VersionsDoc
from peermesh.policy.messages import EDIT, PUSH, EditRequest, PushRequest
from peermesh.policy.records import VersionRecord, content_hash
from peermesh.policy.replicator import Peer
from tests.support.meshkit import (
    eventually,
    gossip_mesh,
    lone_agent,
    peermesh_cli,
    process,
    wait_http_ok,
)
from tests.support.pki import TRUST_DOMAIN

# Exponential under a backtracking engine, and no linear-time engine can run its backreference.
BACKTRACKING = r"^(a+)+\1$"

NODES = {f"node-{i}": svc for i, svc in enumerate(["web", "orders", "orders", "pay", "inv"], 1)}


def route(name: str, timeout: str = "1s") -> dict:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "host": "orders",
            "http": [{"route": [{"destination": {"host": "orders"}}], "timeout": timeout}],
        },
    }


def admin_url(agent: Agent) -> str:
    host, port = agent.addresses["admin"]
    return f"http://{host}:{port}"


async def put(client: httpx.AsyncClient, agent: Agent, *objects: dict) -> httpx.Response:
    return await client.put(
        admin_url(agent) + "/v1/policy", json={"objects": list(objects)}, headers=ADMIN_HEADERS
    )


def digests(agents: list[Agent]) -> set[str]:
    return {a.policy.digest() for a in agents}


async def test_edit_anywhere_is_seen_everywhere_and_conflicts_converge(tmp_path):
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        agents = await gossip_mesh(tmp_path, nursery, NODES)
        # Every agent takes an edit; every edit reaches every agent.
        for i, agent in enumerate(agents):
            r = await put(client, agent, route(f"r{i}"))
            assert r.status_code == 200, r.text
        names = {f"r{i}" for i in range(len(agents))}
        await eventually(
            lambda: all({o.name for o in a.policy.objects("Route")} == names for a in agents)
        )
        # Two nodes edit the same object at the same moment: one winner everywhere.
        first, second = await put(client, agents[1], route("shared", "2s")), None
        second = await put(client, agents[3], route("shared", "3s"))
        assert first.status_code == second.status_code == 200
        await eventually(lambda: len(digests(agents)) == 1)
        winners = {a.policy.winner("Route", "shared").edit_id for a in agents}  # type: ignore[union-attr]
        assert len(winners) == 1
        history = agents[0].policy.history("Route", "shared")
        assert len(history) == 2
        assert sorted(e.won for e in history) == [False, True]
        assert {e.node for e in history} == {"node-2", "node-4"}
        # The CLI's status view says every peer has the same digest.
        status = (await client.get(admin_url(agents[2]) + "/v1/policy/status")).json()
        assert status["converged_with_reachable_peers"]
        assert len(status["peers"]) == 4
        nursery.cancel_scope.cancel()


async def test_bad_input_is_refused_and_nothing_is_lost(tmp_path):
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        agents = await gossip_mesh(tmp_path, nursery, dict(list(NODES.items())[:2]))
        a, b = agents
        assert (await put(client, a, route("keep"))).status_code == 200
        await eventually(lambda: b.policy.get("Route", "keep") is not None)
        before = b.policy.digest()
        # Wrong kind, invalid field, a 10 MB object: structured 400s.
        wrong = await put(client, a, {"kind": "Gateway", "name": "g", "spec": {}})
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_policy"
        assert "Gateway" in wrong.json()["reason"]
        huge = route("huge")
        huge["spec"]["http"][0]["headers"] = {"request": {"set": {"x-big": "a" * (10 << 20)}}}
        big = await put(client, a, huge)
        assert big.status_code == 400
        assert "bytes" in big.text
        # Random bytes pushed by an authenticated peer: refused with a reason.
        host, port = b.addresses["inbound"]

        try:
            await a.control_client.call(
                Endpoint(service="", host=host, port=port), PUSH, PushRequest(os.urandom(4096))
            )
            raise AssertionError("random bytes were accepted")
        except RpcError as exc:
            assert "policy update refused" in str(exc)
        assert b.policy.digest() == before
        assert b.replicator is not None and b.replicator.refused == 1
        # ...and the agent keeps serving: a good edit still replicates.
        assert (await put(client, a, route("after"))).status_code == 200
        await eventually(lambda: b.policy.get("Route", "after") is not None)
        nursery.cancel_scope.cancel()


async def test_only_meshconfig_admins_may_edit_over_mtls(tmp_path):
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        agents = await gossip_mesh(tmp_path, nursery, dict(list(NODES.items())[:2]))
        a, b = agents
        assert b.replicator is not None
        host, port = b.addresses["inbound"]
        target = Endpoint(service="", host=host, port=port)

        try:
            await a.control_client.call(target, EDIT, EditRequest((route("x"),)))
            raise AssertionError("a non-admin peer edited policy")
        except RpcError as exc:
            assert "(403)" in str(exc) and "MeshConfig" in str(exc)
        # The receiving agent (orders) signs the records it writes, so it must be an admin
        # too for them to be in effect (docs/policy.md, "Authorship and signatures").
        mesh_config = {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {
                "admins": [
                    f"spiffe://{TRUST_DOMAIN}/svc/web",
                    f"spiffe://{TRUST_DOMAIN}/svc/orders",
                ]
            },
        }
        assert (await put(client, b, mesh_config)).status_code == 200
        result = await a.control_client.call(target, EDIT, EditRequest((route("x"),)))
        assert result.changed == ("Route/x",)
        assert b.policy.get("Route", "x") is not None
        assert Peer  # imported for the type
        nursery.cancel_scope.cancel()


def test_edit_survives_kill_9_right_after_acknowledgement(tmp_path):
    cmd, agent_url = lone_agent(tmp_path)
    with process(cmd) as proc:
        wait_http_ok(agent_url + "/readyz")
        body = json.dumps({"objects": [route("durable")]}).encode()
        request = urllib.request.Request(
            agent_url + "/v1/policy", data=body, method="PUT",
            headers={"content-type": "application/json", **ADMIN_HEADERS},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200  # acknowledged...
        os.kill(proc.pid, signal.SIGKILL)  # ...and killed at once
        proc.wait()
    with process(cmd):
        wait_http_ok(agent_url + "/readyz")
        with urllib.request.urlopen(agent_url + "/v1/policy/Route/durable") as r:
            assert json.loads(r.read())["name"] == "durable"


def test_cli_apply_get_diff_history_delete(tmp_path):
    cmd, agent_url = lone_agent(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return peermesh_cli("policy", *args, "--agent", agent_url)

    examples = Path(__file__).resolve().parents[2] / "examples" / "policy"
    with process(cmd):
        wait_http_ok(agent_url + "/readyz")
        applied = cli("apply", "-f", str(examples))
        assert applied.returncode == 0, applied.stderr
        assert "Route/reviews configured" in applied.stdout
        again = cli("apply", "-f", str(examples))
        assert "Route/reviews unchanged" in again.stdout
        got = cli("get", "Route", "reviews", "-o", "json")
        assert json.loads(got.stdout)["name"] == "reviews"
        changed = tmp_path / "changed.yaml"
        changed.write_text(
            (examples / "canary.yaml").read_text().replace("90", "50").replace("10\n", "50\n")
        )
        diff = cli("diff", "-f", str(changed))
        assert "update    Route/reviews" in diff.stdout
        assert "weight: 50" in diff.stdout
        cli("apply", "-f", str(changed))
        history = cli("history", "Route/reviews")
        assert history.returncode == 0 and history.stdout.count("node-1") == 2
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: Route\nname: x\nspec: {host: [unclosed\n")
        refused = cli("apply", "-f", str(bad))
        assert refused.returncode != 0 and "bad.yaml" in refused.stderr
        deleted = cli("delete", "Route/reviews")
        assert deleted.returncode == 0
        missing = cli("get", "Route", "reviews")
        assert missing.returncode != 0 and "does not exist" in missing.stderr


async def test_a_forwarded_push_never_goes_back_to_its_sender():
    from certs.spiffe import SpiffeId
    from peermesh.net.rpc.router import ControlRouter
    from peermesh.policy.replicator import PolicyReplicator
    from peermesh.policy.store import PolicyStore

    origin = PolicyStore(node="node-a")
    update = origin.apply([route("fresh")], now=0.0).update
    peers = [
        Peer("node-a", "127.0.0.1", 1),
        Peer("node-b", "127.0.0.1", 2),
        Peer("node-c", "127.0.0.1", 3),
    ]
    replicator = PolicyReplicator(
        PolicyStore(node="node-x"),
        None,
        ControlRouter(),
        lambda: peers,  # type: ignore[arg-type]
    )
    started: list[str] = []

    class Recorder:
        def start_soon(self, fn, peer, body):
            started.append(peer.node)

    replicator._nursery = Recorder()  # type: ignore[assignment]
    caller = SpiffeId.for_service("mesh.test", "web")
    await replicator._on_push(
        ControlRequest("policy/push", caller, PushRequest(update, sender="node-a"))
    )
    assert sorted(started) == ["node-b", "node-c"]
    assert replicator.store.get("Route", "fresh") is not None


def _policy_files(agent: Agent) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(agent.config.data_dir.glob("policy*")) if p.is_file()
    }


def _refused_metric(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("peermesh_policy_updates_refused_total "):
            return float(line.split()[1])
    raise AssertionError("peermesh_policy_updates_refused_total is not exported")


async def test_a_backtracking_regex_never_enters_any_replica(tmp_path):
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        a, b = await gossip_mesh(tmp_path, nursery, dict(list(NODES.items())[:2]))
        assert (await put(client, a, route("keep"))).status_code == 200
        await eventually(lambda: b.policy.get("Route", "keep") is not None)
        evil = route("evil")
        evil["spec"]["http"][0]["match"] = [{"uri": {"regex": BACKTRACKING}}]
        # Through the admin API: refused at apply time, naming the field.
        refused = await put(client, a, evil)
        assert refused.status_code == 400, refused.text
        (problem,) = refused.json()["errors"]
        assert problem["path"] == "spec.http[0].match[0].uri.regex"
        assert "RE2" in problem["hint"]
        assert a.policy.get("Route", "evil") is None
        # A peer that bypasses its own validation: a correctly signed record, pushed raw.
        body = json.dumps(evil, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert a.policy.signer is not None
        record = a.policy.signer.sign(
            VersionRecord(
                "Route", "evil", a.config.name, 50, 1.0e9, content_hash(body), False, body
            )
        )
        update = VersionsDoc().write([(record.map_key, record.encode())], [])
        before, files = b.policy.digest(), _policy_files(b)
        metrics_url = admin_url(b) + "/metrics"
        counted = _refused_metric((await client.get(metrics_url)).text)
        host, port = b.addresses["inbound"]
        try:
            await a.control_client.call(
                Endpoint(service="", host=host, port=port), PUSH, PushRequest(update, a.config.name)
            )
            raise AssertionError("an invalid signed record was accepted")
        except RpcError as exc:
            assert "policy update refused" in str(exc) and "regular expression" in str(exc)
        assert b.policy.digest() == before and _policy_files(b) == files
        assert b.policy.get("Route", "evil") is None
        assert _refused_metric((await client.get(metrics_url)).text) == counted + 1
        assert b.policy.last_refusal is not None
        assert a.config.name in b.policy.last_refusal.source
        # The sync path refuses it the same way, and both agents keep serving.
        assert (await put(client, a, route("after"))).status_code == 200
        await eventually(lambda: b.policy.get("Route", "after") is not None)
        nursery.cancel_scope.cancel()
