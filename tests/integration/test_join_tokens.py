"""Join tokens live in the replicated policy; committee changes need an authorized identity.

Unit tests of the ``JoinToken`` kind and the signer's token decision, then one real
three-agent mesh bootstrapped through the DKG: a token created on any agent replicates
as a hash only and admits a new agent; a token declared in the MeshConfig (GitOps) works
without ``token create``; a deleted token is refused; with MeshConfig admins set,
non-admins can neither mint tokens nor coordinate committee changes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509

from peermesh.ca.dkgrelay import RunSpec
from peermesh.ca.node import root_fingerprint
from peermesh.ca.tokens import JoinToken as TokenString
from peermesh.ca.tokens import TokenError, check_token, token_sha256
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc import Opaque, RpcError
from peermesh.policy.compiled import JoinTokenGrant, compile_policy
from peermesh.policy.model import JoinToken, MeshConfig
from peermesh.policy.validate import check_object, parse_object
from tests.support.ca import bootstrap_mesh, raw_method
from tests.support.meshkit import eventually

ROOT = "ab" * 32
HASH = "0f" * 32


def _token_doc(name: str = "0123456789ab", **spec: Any) -> dict[str, Any]:
    return {"kind": "JoinToken", "name": name, "spec": {"tokenSha256": HASH, **spec}}


# ---------------------------------------------------------------------------- the kind


def test_join_token_object_round_trips() -> None:
    doc = _token_doc(service="orders", expiresAt="2030-01-31T12:00:00Z", maxUses=3)
    obj = parse_object(doc)
    assert isinstance(obj, JoinToken) and obj.key == "JoinToken/0123456789ab"
    assert obj.spec.service == "orders" and obj.spec.max_uses == 3
    assert parse_object(obj.to_dict()) == obj


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        (_token_doc("node.example"), "name", "a JoinToken's name is its token id"),
        (
            {"kind": "JoinToken", "name": "abc", "spec": {"tokenSha256": "pmjt1.secret"}},
            "spec.tokenSha256",
            "is not a valid SHA-256",
        ),
        (_token_doc(secret="x"), "spec.secret", "unknown field"),
        (_token_doc(maxUses=0), "spec.maxUses", "out of range"),
        (_token_doc(expiresAt="tomorrow"), "spec.expiresAt", "RFC 3339"),
        ({"kind": "JoinToken", "name": "abc", "spec": {}}, "spec.tokenSha256", "required"),
    ],
)
def test_bad_join_tokens_are_refused_with_the_field(doc: Any, path: str, reason: str) -> None:
    obj, errors = check_object(doc)
    assert obj is None
    assert any(e.path == path and reason in e.reason for e in errors), [
        (e.path, e.reason) for e in errors
    ]


def test_compiled_tokens_merge_mesh_config_and_objects() -> None:
    mesh = parse_object(
        {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {
                "joinTokens": [
                    {"id": "gitops", "tokenSha256": HASH, "service": "web"},
                    {"id": "0123456789ab", "tokenSha256": "11" * 32},
                ]
            },
        }
    )
    token = parse_object(_token_doc(expiresAt="2030-01-01T00:00:00Z"))
    assert isinstance(mesh, MeshConfig)
    compiled = compile_policy([mesh, token])
    grants = compiled.join_tokens
    assert grants["gitops"] == JoinTokenGrant(
        "gitops", HASH, "web", None, None, "MeshConfig/default"
    )
    # The object wins over a MeshConfig entry with the same id, with a warning.
    assert grants["0123456789ab"].source == "JoinToken/0123456789ab"
    assert grants["0123456789ab"].token_sha256 == HASH
    assert grants["0123456789ab"].expires == dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    assert any("same id" in w for w in compiled.warnings)


# ---------------------------------------------------------------------------- the decision


def _grant(token: TokenString, **kw: Any) -> JoinTokenGrant:
    fields: dict[str, Any] = {"service": None, "expires": None, "max_uses": 1, "source": "t"}
    fields.update(kw)
    return JoinTokenGrant(token.token_id, token_sha256(str(token)), **fields)


def test_signer_token_decision() -> None:
    token = TokenString.generate(ROOT)
    grant = _grant(token, service="web", expires=100.0)
    ok = {"token": token, "service": "web", "now": 50.0}
    assert check_token(grant, (), subject_key="k1", **ok) == ("k1",)
    # The same key again (a coordinator retrying) is not a second use.
    assert check_token(grant, ("k1",), subject_key="k1", **ok) == ("k1",)
    with pytest.raises(TokenError, match="used up"):
        check_token(grant, ("k1",), subject_key="k2", **ok)
    with pytest.raises(TokenError, match="not in this signer's policy"):
        check_token(None, (), subject_key="k1", **ok)
    with pytest.raises(TokenError, match="expired"):
        check_token(grant, (), subject_key="k1", token=token, service="web", now=100.0)
    with pytest.raises(TokenError, match="allows service 'web'"):
        check_token(grant, (), subject_key="k1", token=token, service="db", now=50.0)
    wrong_secret = TokenString(token.token_id, "0" * 32, ROOT)
    with pytest.raises(TokenError, match="wrong secret"):
        check_token(grant, (), subject_key="k1", token=wrong_secret, service="web", now=50.0)
    # A signer rebuilds the token with its own root: another mesh's token never matches.
    other_mesh = TokenString(token.token_id, token.secret, "cd" * 32)
    with pytest.raises(TokenError, match="another mesh"):
        check_token(grant, (), subject_key="k1", token=other_mesh, service="web", now=50.0)
    unlimited = _grant(token, max_uses=None)
    used = tuple(f"k{i}" for i in range(50))
    assert len(check_token(unlimited, used, subject_key="new", **ok)) == 51


def test_token_hash_is_the_sha256_of_the_printed_token() -> None:
    token = TokenString.generate(ROOT)
    assert token_sha256(str(token)) == hashlib.sha256(str(token).encode()).hexdigest()
    assert token_sha256(f"  {token}\n") == token_sha256(str(token))


# ---------------------------------------------------------------------------- real agents

NODES = {"node-1": "svc-1", "node-2": "svc-2", "node-3": "svc-3"}


async def _admin(agent: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    host, port = agent.addresses["admin"]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.request(
            method, f"http://{host}:{port}{path}", json=body, headers=ADMIN_HEADERS
        )
    return r.status_code, r.json()


async def test_tokens_replicate_in_policy_and_admins_gate_ca_changes(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        one, two, three = (mesh.agents[n] for n in NODES)
        assert one.ca.committee is not None and one.ca.committee.threshold == 2

        # 1. Created on node-3, the token is a JoinToken object everywhere, as a hash only.
        code, reply = await _admin(three, "POST", "/v1/ca/token", {"service": "newsvc"})
        assert code == 200, reply
        token = reply["token"]
        token_id = token.split(".")[1]
        path = f"/v1/policy/JoinToken/{token_id}"

        def replicated() -> bool:
            obj = one.policy.get("JoinToken", token_id)
            return isinstance(obj, JoinToken) and obj.spec.token_sha256 == token_sha256(token)

        await eventually(replicated, timeout=20)
        code, obj = await _admin(one, "GET", path)
        assert code == 200 and obj["spec"]["service"] == "newsvc"
        secret = token.split(".")[2]
        for agent in (one, two, three):
            _, everything = await _admin(agent, "GET", "/v1/policy")
            assert secret not in json.dumps(everything)
        for f in tmp_path.rglob("*"):  # noqa: ASYNC240
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f
        code, listed = await _admin(two, "GET", "/v1/ca/tokens")
        assert [t["id"] for t in listed["tokens"]] == [token_id]
        assert listed["tokens"][0]["service"] == "newsvc"
        assert listed["tokens"][0]["maxUses"] == 1

        joiner = await mesh.join("node-4", "newsvc", "node-1", token)
        with trio.fail_after(30):
            await joiner.ca.identity_ready.wait()
        assert str(joiner.tls.identity) == "spiffe://mesh.test/svc/newsvc"

        # 2. GitOps: a token declared in the MeshConfig, no 'token create' at all; the
        # MeshConfig's certificateLifetime caps what signers sign.
        committee = one.ca.committee
        assert committee.root_der is not None
        declared = TokenString(
            secrets.token_hex(6), secrets.token_hex(16), root_fingerprint(committee.root_der)
        )
        mesh_config = {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {
                "certificateLifetime": "12h",
                "joinTokens": [
                    {"id": declared.token_id, "tokenSha256": token_sha256(str(declared))}
                ],
            },
        }
        code, reply = await _admin(two, "PUT", "/v1/policy", {"objects": [mesh_config]})
        assert code == 200, reply

        def everyone_has(token_id: str) -> bool:
            return all(token_id in a.policy.compiled().join_tokens for a in (one, two, three))

        await eventually(lambda: everyone_has(declared.token_id), timeout=20)
        gitops = await mesh.join("node-5", "reports", "node-2", str(declared))
        with trio.fail_after(30):
            await gitops.ca.identity_ready.wait()
        leaf = x509.load_pem_x509_certificate((tmp_path / "node-5" / "cert.pem").read_bytes())
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime <= dt.timedelta(hours=12, minutes=1)

        # 3. A deleted token admits nobody, even unused.
        code, reply = await _admin(one, "POST", "/v1/ca/token", {"service": "gone"})
        assert code == 200, reply
        doomed = reply["token"]
        code, _ = await _admin(one, "DELETE", f"/v1/policy/JoinToken/{doomed.split('.')[1]}")
        assert code == 200

        def nobody_has(token_id: str) -> bool:
            return all(token_id not in a.policy.compiled().join_tokens for a in (one, two, three))

        await eventually(lambda: nobody_has(doomed.split(".")[1]), timeout=20)
        refused = await mesh.join("node-6", "gone", "node-1", doomed)
        await eventually(
            lambda: "not in this signer's policy" in (refused.ca.last_error or ""), timeout=30
        )
        assert not refused.tls.loaded
        await mesh.stop("node-6")

        # 4. MeshConfig admins: only svc-1 may mint tokens or coordinate committee changes.
        admin_id = "spiffe://mesh.test/svc/svc-1"
        locked = {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {"certificateLifetime": "12h", "admins": [admin_id]},
        }
        code, reply = await _admin(one, "PUT", "/v1/policy", {"objects": [locked]})
        assert code == 200, reply

        def locked_everywhere() -> bool:
            return all(a.policy.compiled().mesh.admins == (admin_id,) for a in (one, two, three))

        await eventually(locked_everywhere, timeout=20)
        code, reply = await _admin(two, "POST", "/v1/ca/token", {"service": "x"})
        assert code == 403 and "not a MeshConfig admin" in reply["error"], reply
        code, reply = await _admin(two, "POST", "/v1/ca/refresh", {})
        assert code == 403 and "not a MeshConfig admin" in reply["error"], reply
        # Signers themselves refuse a refresh coordinated by a non-admin over mTLS...
        spec = RunSpec(
            "refresh",
            secrets.token_bytes(32),
            committee.threshold,
            {m.node: (m.identifier, m.identity_key) for m in committee.members},
            epoch=committee.epoch,
        )
        host, port = mesh.configs["node-1"].proxy.inbound
        with pytest.raises(RpcError, match=r"403.*refuses the refresh run.*MeshConfig"):
            await two.control_client.call(
                Endpoint(service="", host=host, port=port),
                raw_method("ca/dkg/begin"),
                Opaque(spec.to_wire()),
            )
        # ...and a committee pushed by a non-admin (which could drop their shares).
        with pytest.raises(RpcError, match=r"403.*refuses the committee update"):
            await two.control_client.call(
                Endpoint(service="", host=host, port=port),
                raw_method("ca/committee/update"),
                Opaque(committee.to_wire()),
            )
        # The admin still can.
        code, reply = await _admin(one, "POST", "/v1/ca/token", {"service": "x", "uses": 2})
        assert code == 200, reply
        # Renewing on demand needs no admin: it is authorized by the current certificate.
        # The new certificate follows the MeshConfig's 12 h, not the agent's 24 h default.
        before = two.tls.certificate
        code, reply = await _admin(two, "POST", "/v1/ca/renew", {})
        assert code == 200, reply
        assert len(reply["signers"]) == 2 and reply["identity"].endswith("/svc/svc-2")
        after = two.tls.certificate
        assert after.serial_number != before.serial_number and two.ca.renewals == 1
        lifetime = after.not_valid_after_utc - after.not_valid_before_utc
        assert dt.timedelta(hours=11) < lifetime <= dt.timedelta(hours=12, minutes=1)
