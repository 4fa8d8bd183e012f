"""Real agents on real, failing and damaged disks: a full tmpfs data dir, and policy logs
damaged at several offsets. Each ends in an agent that serves every acknowledged edit, or
refuses to start with a message naming the file, the offset and what to do."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peermesh.agent import Agent
from peermesh.cli.policy import policy as policy_group
from peermesh.config import AgentConfig
from peermesh.net.identity_files import CERT_FILE, KEY_FILE
from peermesh.policy.authorship import RecordSigner, RecordVerifier, trust_bundle_file
from peermesh.policy.journal import HEADER, Journal, JournalCorrupt
from peermesh.policy.storage import JournalRecordInvalid
from peermesh.policy.store import PolicyStore
from tests.support.disk import fill, small_tmpfs
from tests.support.meshkit import agent_config, eventually, python
from tests.support.pki import make_foreign_root_dir, make_mesh_pki

#: What the CLI sends; a browser cannot send it cross-origin without a preflight.
HEADERS = {"x-peermesh-request": "1"}


def route(name: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": "orders", "http": [{"route": [{"destination": {"host": "orders"}}]}]},
    }


def admin_url(agent: Agent) -> str:
    host, port = agent.addresses["admin"]
    return f"http://{host}:{port}"


async def put(client: httpx.AsyncClient, agent: Agent, name: str) -> httpx.Response:
    return await client.put(
        admin_url(agent) + "/v1/policy", json={"objects": [route(name)]}, headers=HEADERS
    )


async def served(client: httpx.AsyncClient, agent: Agent) -> set[str]:
    response = await client.get(admin_url(agent) + "/v1/policy?kind=Route")
    assert response.status_code == 200, response.text
    return {o["name"] for o in response.json()["objects"]}


@asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[Agent]:
    """One agent, stopped gracefully (its store closed) when the block ends."""
    async with trio.open_nursery() as nursery:
        agent = Agent(config)
        await nursery.start(agent.run)
        try:
            yield agent
        finally:
            agent.request_shutdown()


async def test_a_full_disk_answers_507_and_loses_no_acknowledged_edit(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "node-1", "2m") as data_dir:
        make_mesh_pki(tmp_path, nodes={"node-1": "web"})
        config = agent_config("node-1", "web", data_dir)
        filler = data_dir / "filler"
        acked: list[str] = []
        refused: list[httpx.Response] = []
        async with httpx.AsyncClient() as client:
            async with running(config) as agent:
                assert (await put(client, agent, "before")).status_code == 200
                fill(filler, leave=12000)
                for i in range(60):
                    response = await put(client, agent, f"e{i}")
                    if response.status_code == 200:
                        acked.append(f"e{i}")
                    else:
                        refused.append(response)
                assert acked, "some edits still fitted"
                assert refused, "the disk filled up"
                for response in refused:
                    assert response.status_code == 507, response.text
                    body = response.json()
                    assert body["code"] == "insufficient-storage"
                    assert "No space left on device" in body["error"]
                    assert "free space" in body["hint"]
                # Memory equals disk: what was refused is nowhere, what was acked is served.
                assert await served(client, agent) == {"before", *acked}
                # Space returns: the next edit succeeds at once.
                filler.unlink()
                assert (await put(client, agent, "after")).status_code == 200
            # Every acknowledged edit survives the restart; no refused one appears.
            async with running(config) as again:
                assert await served(client, again) == {"before", *acked, "after"}
                assert again.policy.journal_report is not None
                assert again.policy.journal_report.corrupt_tail is None


def damage(log: Path, how: str) -> int:
    """Damage ``log`` and return the offset of the damage."""
    data = bytearray(log.read_bytes())
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER.size + HEADER.unpack_from(data, offset)[0]
    assert len(offsets) >= 4
    if how == "middle-checksum":
        at = offsets[1]
        data[at + HEADER.size + 3] ^= 0x40
    elif how == "impossible-length":
        at = offsets[2]
        struct.pack_into(">I", data, at, 0x7FFFFFFF)
    else:  # a crash part-way through an append that was never acknowledged
        at = len(data)
        data += HEADER.pack(4096, 0) + b"partial"
    log.write_bytes(bytes(data))
    return at


def append_foreign_record(tmp_path: Path, log: Path) -> int:
    """Append an intact record signed by an identity under another root (same trust
    domain): its checksum holds, its signature is refused. Returns where it starts."""
    foreign = make_foreign_root_dir(tmp_path)
    key = serialization.load_pem_private_key((foreign / KEY_FILE).read_bytes(), None)
    cert = x509.load_pem_x509_certificate((foreign / CERT_FILE).read_bytes())
    assert isinstance(key, Ed25519PrivateKey)
    with PolicyStore(
        node="foreign",
        signer=RecordSigner(lambda: (key, cert)),
        verifier=RecordVerifier(trust_bundle_file(foreign / "bundle.pem")),
    ) as intruder:
        update = intruder.apply([route("planted")], now=time.time()).update
    journal = Journal(log)
    at = journal.replay()[1].good_bytes
    journal.append(update)
    journal.close()
    return at


async def refuses_to_start(config: AgentConfig, data_dir: Path, *fragments: str) -> None:
    """The real command refuses to start and says each of ``fragments`` on stderr."""
    with trio.fail_after(60):
        done = await trio.run_process(
            python("-m", "peermesh", "agent", "--name", config.name, "--service", "orders=9",
                   "--data-dir", str(data_dir), "--gossip", "off",
                   "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0",
                   "--admin", "127.0.0.1:0"),
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


@pytest.mark.parametrize(
    "how", ["middle-checksum", "impossible-length", "torn-tail", "refused-record"]
)
async def test_a_damaged_log_serves_every_acknowledged_edit_or_refuses_to_start(
    tmp_path: Path, how: str
) -> None:
    dirs = make_mesh_pki(tmp_path, nodes={"node-a": "web", "node-b": "orders"})
    names = {f"r{i}" for i in range(5)}
    async with (
        httpx.AsyncClient() as client,
        running(agent_config("node-a", "web", dirs["node-a"])) as a,
    ):
        host, port = a.addresses["inbound"]
        b_config = agent_config("node-b", "orders", dirs["node-b"], peers=(f"web={host}:{port}",))
        async with running(b_config) as b:
            for name in sorted(names):
                assert (await put(client, b, name)).status_code == 200
            await eventually(lambda: {o.name for o in a.policy.objects("Route")} == names)
        log = dirs["node-b"] / "policy.bin.log"
        if how == "refused-record":
            at = append_foreign_record(tmp_path, log)
            with pytest.raises(JournalRecordInvalid) as invalid:
                Agent(b_config)
            message = str(invalid.value)
            assert f"{log} holds an intact record {len(names)} at byte {at}" in message
            assert (
                "refusing to start" in message and "peermesh policy recover --data-dir" in message
            )
            assert "--all" not in message
            await refuses_to_start(b_config, dirs["node-b"], f"record {len(names)} at byte {at}",
                                   "policy recover --data-dir")  # fmt: skip
            # Its checksums hold, yet plain recover validates each record as the start
            # does, names the refused one and moves the log holding it aside.
            recovered = CliRunner().invoke(
                policy_group, ["recover", "--data-dir", str(dirs["node-b"])]
            )
            assert recovered.exit_code == 0, recovered.output
            assert (
                f"damaged: {log}: record {len(names)} at byte {at} is refused" in recovered.output
            )
            assert invalid.value.reason in recovered.output
            assert not log.exists() and list(dirs["node-b"].glob("policy.bin.log.damaged-*"))
            # What is left is what a start accepts: a second run finds nothing.
            again = CliRunner().invoke(policy_group, ["recover", "--data-dir", str(dirs["node-b"])])
            assert again.exit_code == 0 and "nothing was moved" in again.output, again.output
            async with running(b_config) as b:
                await eventually(lambda: {o.name for o in b.policy.objects("Route")} == names)
                assert await served(client, b) == names
            return
        at = damage(log, how)
        if how == "torn-tail":
            async with running(b_config) as b:
                assert await served(client, b) == names
            return
        with pytest.raises(JournalCorrupt) as refused:
            Agent(b_config)
        message = str(refused.value)
        assert f"{log} is damaged at byte {at}" in message
        assert "peermesh policy recover" in message
        # The real command refuses the same way, and says so on stderr.
        await refuses_to_start(b_config, dirs["node-b"], f"is damaged at byte {at}",
                               "policy recover")  # fmt: skip
        # The way out: move the damaged files aside, restart, resync from the peer.
        recovered = CliRunner().invoke(policy_group, ["recover", "--data-dir", str(dirs["node-b"])])
        assert recovered.exit_code == 0, recovered.output
        assert list(dirs["node-b"].glob("policy.bin.log.damaged-*"))
        async with running(b_config) as b:
            await eventually(lambda: {o.name for o in b.policy.objects("Route")} == names)
            assert await served(client, b) == names
            assert b.replicator is not None and b.replicator.refused == 0
