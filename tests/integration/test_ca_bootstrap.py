"""Five agents bootstrap a threshold root with --bootstrap-expect 5 and carry mTLS traffic.

Also proves the root secret (reconstructed here, test-only, from t shares) is in no
file of any data dir and in no message any transport sent.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import trio

from certs.ed25519_group import Point, Scalar
from examples.service import ExampleService, ServiceConfig
from peermesh.ca import channel
from peermesh.ca.state import CaState
from peermesh.net.http.h2session import H2Stream
from peermesh.net.identity_files import BUNDLE_FILE, CERT_FILE
from tests.support.ca import bootstrap_mesh, reconstruct_root_secret
from tests.support.meshkit import eventually

NODES = {
    "node-1": "frontend",
    "node-2": "orders",
    "node-3": "payments",
    "node-4": "inventory",
    "node-5": "search",
}


def _needles(secret: bytes) -> list[bytes]:
    """The secret in every encoding a leak could plausibly take."""
    forms = [secret, secret[::-1]]
    out: list[bytes] = []
    for raw in forms:
        out += [
            raw,
            raw.hex().encode(),
            raw.hex().upper().encode(),
            base64.b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode(raw).rstrip(b"="),
        ]
    return out


async def test_five_agents_bootstrap_issue_and_serve(tmp_path: Path, monkeypatch) -> None:
    wire: list[bytes] = []
    original_send = H2Stream.send_data

    async def recording_send(self: H2Stream, data: bytes, *, end_stream: bool = False) -> None:
        wire.append(bytes(data))
        await original_send(self, data, end_stream=end_stream)

    monkeypatch.setattr(H2Stream, "send_data", recording_send)
    monkeypatch.setattr(channel, "WIRE_TAPS", [wire.append])

    async with trio.open_nursery() as apps:
        app = ExampleService(ServiceConfig(name="orders", port=0, version="node-2"))
        app_port = await apps.start(app.run)
        async with bootstrap_mesh(tmp_path, NODES, app_ports={"node-2": app_port}) as mesh:
            agents = mesh.agents
            # One committee, one group key, one root everywhere; threshold ⌊5/2⌋+1 = 3.
            committees = {n: a.ca.committee for n, a in agents.items()}
            assert all(c is not None and c.threshold == 3 for c in committees.values())
            roots = {c.root_der for c in committees.values() if c is not None}
            assert len(roots) == 1
            # Every certificate passes strict OpenSSL verification against the bundle.
            for node in NODES:
                d = tmp_path / node
                result = subprocess.run(  # noqa: ASYNC221 - a short openssl check
                    ["openssl", "verify", "-x509_strict", "-CAfile", str(d / BUNDLE_FILE),
                     str(d / CERT_FILE)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                assert result.returncode == 0, result.stdout + result.stderr
                assert agents[node].tls.identity.service == NODES[node]
                assert (d / "ca" / "share.msgpack").stat().st_mode & 0o777 == 0o600
                assert (d / "key.pem").stat().st_mode & 0o777 == 0o600
            # Gossip switched to mTLS and sees everyone; traffic flows through two agents.
            frontend = agents["node-1"]
            await eventually(
                lambda: (frontend.endpoints.endpoints("orders") or []) != [], timeout=30
            )
            host, port = frontend.addresses["outbound"]
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://{host}:{port}/", headers={"host": "orders"})
            assert r.status_code == 200, r.text
            assert r.json()["version"] == "node-2"

            # The root secret: reconstructed here from t = 3 shares only.
            secret = reconstruct_root_secret([tmp_path / n for n in ("node-1", "node-3", "node-5")])
            committee = committees["node-1"]
            assert committee is not None
            assert Point.base_mul(Scalar.from_bytes(secret)) == committee.public.group_public_key
            # Any other 3 shares give the same secret; 2 do not.
            assert secret == reconstruct_root_secret(
                [tmp_path / n for n in ("node-2", "node-4", "node-5")]
            )
            assert secret != reconstruct_root_secret([tmp_path / n for n in ("node-2", "node-4")])
            needles = _needles(secret)
            files = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240
            assert len(files) > 5 * 6
            for path in files:
                blob = path.read_bytes()
                for needle in needles:
                    assert needle not in blob, f"root secret found in {path}"
            assert len(wire) > 100  # both transports were recorded
            captured = b"".join(wire)
            for needle in needles:
                assert needle not in captured, "root secret crossed the wire"
            # Shares never cross the wire either.
            for node in NODES:
                loaded = CaState(tmp_path / node).load_share()
                assert loaded is not None
                assert loaded[1].secret.to_bytes() not in captured
        apps.cancel_scope.cancel()
