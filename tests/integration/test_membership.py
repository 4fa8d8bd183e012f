"""Gossip membership with real agents on loopback: join, endpoints, failure, rejoin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import httpx
import trio

from examples.service import ExampleService, ServiceConfig
from gossip.codec import generate_gossip_key, save_keyring
from peermesh.agent import Agent
from peermesh.core.wire import WireError
from peermesh.membership.messages import PUSH_PULL, PushPullReply, PushPullRequest
from tests.support.meshkit import agent_config, eventually, free_port, process, python, wait_http_ok
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki

NODES = {
    "node-1": "frontend",
    "node-2": "orders",
    "node-3": "orders",
    "node-4": "payments",
    "node-5": "inventory",
}


def _live(agent: Agent) -> set[str]:
    assert agent.membership is not None
    return {m["name"] for m in agent.membership.status()["members"] if m["state"] == "alive"}


async def test_five_agents_one_seed_each_converge_and_route(tmp_path):
    dirs = make_mesh_pki(tmp_path, nodes=NODES)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        for i, (node, service) in enumerate(NODES.items()):
            app = ExampleService(ServiceConfig(name=service, port=0, version=node))
            app_port = await nursery.start(app.run)
            seed: tuple[str, ...] = ()
            if agents:  # each agent knows only the one started before it
                host, port = agents[-1].addresses["inbound"]
                seed = (f"{host}:{port}",)
            config = agent_config(
                node, service, dirs[node], app_port=app_port,
                gossip="127.0.0.1:0", join=seed, gossip_key_file=key,
                gossip_profile="local", mdns=False, advertise="127.0.0.1",
            )  # fmt: skip
            agent = Agent(config)
            await nursery.start(agent.run)
            agents.append(agent)
            assert i == 0 or seed
        everyone = set(NODES)
        await eventually(lambda: all(_live(a) == everyone for a in agents), timeout=30)
        digests = {a.membership.status()["digest"] for a in agents if a.membership}
        assert len(digests) == 1
        # The endpoint table comes from gossip: two nodes front orders.
        table = agents[0].endpoints.endpoints("orders")
        assert table is not None and {e.node for e in table} == {"node-2", "node-3"}
        host, port = agents[0].addresses["outbound"]
        seen: set[str] = set()
        round_robin = {
            "kind": "TrafficPolicy",
            "name": "orders",
            "spec": {"host": "orders", "loadBalancer": {"simple": "ROUND_ROBIN"}},
        }
        agents[0].policy.apply([round_robin], now=0.0)
        async with httpx.AsyncClient() as client:
            for _ in range(10):
                r = await client.get(f"http://{host}:{port}/", headers={"host": "orders"})
                assert r.status_code == 200
                seen.add(r.json()["version"])
        assert seen == {"node-2", "node-3"}
        # No datagram was dropped for bad authentication between members sharing a key.
        for agent in agents:
            assert agent.membership is not None
            drops = agent.membership.status()["drops"]
            assert "auth" not in " ".join(drops), drops
        # A graceful stop is seen as "left", not failed.
        agents[4].request_shutdown()
        await eventually(
            lambda: all(
                a.membership is not None
                and a.membership.swim.member("node-5") is not None
                and a.membership.swim.member("node-5").state.name == "LEFT"
                for a in agents[:4]
            ),
            timeout=30,
        )
        nursery.cancel_scope.cancel()


def _members(admin_port: int) -> dict[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/v1/members", timeout=5) as r:
        return {m["name"]: m for m in json.loads(r.read())["members"]}


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def test_kill_9_is_seen_dead_everywhere_and_restart_rejoins_higher(tmp_path):
    dirs = make_mesh_pki(tmp_path, nodes=NODES)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    ports = {n: {k: free_port() for k in ("app", "out", "in", "admin", "gossip")} for n in NODES}
    names = list(NODES)

    def agent_cmd(node: str) -> list[str]:
        p = ports[node]
        seed = names[names.index(node) - 1] if node != names[0] else names[1]
        return python(
            "-m", "peermesh", "agent", "--name", node,
            "--service", f"{NODES[node]}={p['app']}", "--data-dir", str(dirs[node]),
            "--trust-domain", TRUST_DOMAIN,
            "--outbound", f"127.0.0.1:{p['out']}", "--inbound", f"127.0.0.1:{p['in']}",
            "--admin", f"127.0.0.1:{p['admin']}", "--gossip", f"127.0.0.1:{p['gossip']}",
            "--join", f"127.0.0.1:{ports[seed]['in']}", "--gossip-key-file", str(key),
            "--gossip-profile", "local", "--no-mdns", "--advertise", "127.0.0.1",
            "--log-level", "warning",
        )  # fmt: skip

    with ExitStack() as stack:
        procs = {}
        for node in names:
            stack.enter_context(
                process(
                    python(
                        "-m", "examples.service", "--name", NODES[node],
                        "--port", str(ports[node]["app"]), "--version", node,
                    )
                )
            )  # fmt: skip
            procs[node] = stack.enter_context(process(agent_cmd(node)))
        for node in names:
            wait_http_ok(f"http://127.0.0.1:{ports[node]['admin']}/readyz")
        everyone = set(names)

        def converged() -> bool:
            return all(
                {n for n, m in _members(ports[node]["admin"]).items() if m["state"] == "alive"}
                == everyone
                for node in names
            )

        _wait(converged)
        before = _members(ports["node-1"]["admin"])["node-3"]["incarnation"]
        os.kill(procs["node-3"].pid, signal.SIGKILL)
        procs["node-3"].wait()
        others = [n for n in names if n != "node-3"]
        _wait(lambda: all(_members(ports[n]["admin"])["node-3"]["state"] == "dead" for n in others))
        # 'peermesh check' keeps naming the dead member (with when), not "all passed".
        with urllib.request.urlopen(
            f"http://127.0.0.1:{ports['node-1']['admin']}/v1/mesh/check", timeout=15
        ) as r:
            checks = {c["name"]: c for c in json.loads(r.read())["checks"]}
        departures = checks["recent departures"]
        assert not departures["ok"] and "node-3 dead" in departures["detail"], departures
        assert "UTC" in departures["detail"]
        # Its endpoint left every table: all requests for orders reach node-2.
        out = ports["node-1"]["out"]
        for _ in range(20):
            with urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{out}/", headers={"Host": "orders"}),
                timeout=10,
            ) as r:
                assert json.loads(r.read())["version"] == "node-2"
        # Restart with the same data dir: it rejoins with a higher incarnation.
        procs["node-3"] = stack.enter_context(process(agent_cmd("node-3")))
        _wait(converged)
        after = _members(ports["node-1"]["admin"])["node-3"]["incarnation"]
        assert after > before


def test_keygen_gossip_writes_a_private_key_file(tmp_path):
    out = tmp_path / "k"
    result = subprocess.run(
        python("-m", "peermesh", "keygen", "gossip", "--out", str(out)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (out.stat().st_mode & 0o777) == 0o600
    again = subprocess.run(
        python("-m", "peermesh", "keygen", "gossip", "--out", str(out)),
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "exists" in again.stderr


def test_agent_refuses_to_start_without_gossip_key(tmp_path):
    result = subprocess.run(
        python(
            "-m", "peermesh", "agent", "--name", "a", "--service", "s=1",
            "--data-dir", str(tmp_path),
        ),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "gossip needs the mesh gossip key" in result.stderr
    assert Path(tmp_path).exists()


async def test_mdns_alone_forms_one_mesh_on_loopback(tmp_path):
    """No --join anywhere: agents find each other by real mDNS multicast on 127.0.0.1."""
    nodes = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}
    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        for node, service in nodes.items():
            config = agent_config(
                node, service, dirs[node], gossip="127.0.0.1:0", gossip_key_file=key,
                gossip_profile="local", mdns=True, advertise="127.0.0.1",
            )  # fmt: skip
            agent = Agent(config)
            await nursery.start(agent.run)
            agents.append(agent)
        await eventually(lambda: all(_live(a) == set(nodes) for a in agents), timeout=30)
        # Nobody was given a seed: every join started from an mDNS discovery (an agent
        # that others found first may not have needed to discover anyone itself).
        assert any(agent.mdns is not None and agent.mdns.discovered for agent in agents)
        nursery.cancel_scope.cancel()


async def test_gossip_key_rotates_without_restart(tmp_path, monkeypatch):
    """New key added then made primary then the old one retired, all while running."""
    nodes = {"node-1": "frontend", "node-2": "orders"}
    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    old, new = generate_gossip_key(), generate_gossip_key()
    files = {node: tmp_path / f"{node}.key" for node in nodes}
    for path in files.values():
        save_keyring(path, [old])
    import peermesh.membership.gossip as gossip_shell

    monkeypatch.setattr(gossip_shell, "KEY_CHECK_INTERVAL", 0.05)
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        for node, service in nodes.items():
            seed = ()
            if agents:
                host, port = agents[-1].addresses["inbound"]
                seed = (f"{host}:{port}",)
            agent = Agent(
                agent_config(
                    node, service, dirs[node], gossip="127.0.0.1:0", join=seed,
                    gossip_key_file=files[node], gossip_profile="local", mdns=False,
                    advertise="127.0.0.1",
                )
            )  # fmt: skip
            agent_settings = agent.config
            assert agent_settings.gossip.key_file == files[node]
            await nursery.start(agent.run)
            agents.append(agent)
        await eventually(lambda: all(_live(a) == set(nodes) for a in agents), timeout=20)
        keyrings = [a._keyring for a in agents]
        # Step 1 and 2 on every node: new key first (old still accepted).
        for path in files.values():
            save_keyring(path, [new, old])
        await eventually(lambda: all(k is not None and k.primary == new for k in keyrings))
        # Step 3 only on node-1: node-2 seals with the new key too, so nothing is dropped.
        save_keyring(files["node-1"], [new])
        await eventually(lambda: keyrings[0] is not None and keyrings[0].keys == (new,))
        # node-2 goes back to the retired key: node-1 drops its datagrams, counted.
        save_keyring(files["node-2"], [old])
        await eventually(
            lambda: (
                agents[0].membership is not None
                and agents[0].membership.status()["drops"].get("retired_key", 0) > 0
            ),
            timeout=20,
        )
        nursery.cancel_scope.cancel()


def test_a_restart_with_the_clock_behind_still_starts_above_its_last_life(tmp_path):
    """Peers drop datagrams from an older epoch as replays: a node restarted with its
    clock behind (found by the chaos clock-skew scenario) would be muted for as long as
    it runs. The start number is kept in the data dir and only ever grows."""
    from gossip.codec import Codec, Keyring
    from peermesh.membership.gossip import EPOCH_STEP, next_epoch

    path = tmp_path / "data" / "gossip.epoch"
    first = next_epoch(path, wall_ms=1_000_000_000)
    assert first == 1_000_000_000 and path.read_text().strip() == str(first)
    behind = next_epoch(path, wall_ms=first - 30_000)  # restarted 30 s in the past
    assert behind == first + EPOCH_STEP
    assert next_epoch(path, wall_ms=behind + 5) == behind + 5  # the clock caught up
    path.write_text("garbage")
    assert next_epoch(path, wall_ms=7) == 7  # unreadable: the wall clock, rewritten
    assert next_epoch(None, wall_ms=9) == 9

    # What the epoch is for: after the old life, a peer drops datagrams numbered by the
    # lagging wall clock as replays, and accepts the ones numbered by next_epoch.
    from gossip.codec import DropReason

    key = Keyring([generate_gossip_key()])
    receiver = Codec("peer", keyring=key)
    assert not isinstance(
        receiver.decode(Codec("n1", keyring=key, epoch=first).encode([])), DropReason
    )
    by_clock = Codec("n1", keyring=key, epoch=first - 30_000).encode([])
    assert receiver.decode(by_clock) is DropReason.REPLAYED
    ours = Codec("n1", keyring=key, epoch=behind).encode([])
    assert not isinstance(receiver.decode(ours), DropReason)


def test_push_pull_messages_round_trip_and_refuse_anything_but_state_bytes() -> None:
    assert PUSH_PULL.name == "gossip/pushpull"
    request = PushPullRequest(b"\x01state")
    assert PUSH_PULL.request.from_wire(request.to_wire()) == request
    assert PUSH_PULL.response.from_wire(bytearray(b"\x01state")) == PushPullReply(b"\x01state")
    for bad in (None, "text", {"state": b"x"}, [b"x"]):
        try:
            PushPullRequest.from_wire(bad)
        except WireError as exc:
            assert exc.status == 400 and "push-pull body" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
