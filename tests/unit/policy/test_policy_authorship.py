"""Signed policy records and MeshConfig admin authority.

Unit tests use in-memory certificates from a dev root (real Ed25519 / ECDSA P-256 keys,
real X.509); the agent tests use real agents over mTLS on loopback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pycrdt import Doc, Map

from certs.devca import build_leaf, build_root
from certs.spiffe import SpiffeId
from peermesh.agent import Agent
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc import RpcError
from peermesh.policy.authority import authority_order
from peermesh.policy.authorship import RecordSigner, RecordVerifier
from peermesh.policy.crdt import VERSIONS_ROOT
from peermesh.policy.errors import (
    AuthorshipError,
    NoIdentity,
    NotAdmin,
    PolicyStoreCorrupt,
    UpdateRefused,
)
from peermesh.policy.journal import Journal
from peermesh.policy.messages import EDIT, PUSH, EditRequest, PushRequest
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.records import VersionRecord, content_hash, decode_record
from peermesh.policy.recovery import check, recover
from peermesh.policy.storage import JournalRecordInvalid
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import PolicyError, canonical_json, parse_object
from tests.support.meshkit import agent_config, eventually, two_agents
from tests.support.pki import TRUST_DOMAIN

NOW = 1_700_000_000.0
TD = TRUST_DOMAIN
LONG_AGO = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def svc(name: str) -> str:
    return f"spiffe://{TD}/svc/{name}"


# ---------------------------------------------------------------------------- identities


@dataclass
class Identity:
    key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def spiffe(self) -> str:
        return str(SpiffeId.parse(self.cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)[0]))  # fmt: skip

    def signer(self) -> RecordSigner:
        return RecordSigner(lambda: (self.key, self.cert))


class Root:
    def __init__(self, trust_domain: str = TD) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.cert = build_root(self.key, trust_domain, now=LONG_AGO)
        self.trust_domain = trust_domain
        self.bundle = [self.cert]

    def leaf(
        self,
        service: str,
        *,
        ecdsa: bool = False,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = dt.timedelta(hours=24),
    ) -> Identity:
        key: Any = (
            ec.generate_private_key(ec.SECP256R1()) if ecdsa else Ed25519PrivateKey.generate()
        )
        cert = build_leaf(
            issuer=self.cert,
            issuer_key=self.key,
            leaf_key=key,
            spiffe_id=SpiffeId.for_service(self.trust_domain, service),
            node=f"{service}-1",
            now=now,
            lifetime=lifetime,
        )
        return Identity(key, cert)

    def verifier(self) -> RecordVerifier:
        return RecordVerifier(lambda: self.bundle)


ROOT = Root()
FOREIGN = Root()
ADMIN, OPS, WEB = ROOT.leaf("admin"), ROOT.leaf("ops"), ROOT.leaf("web")


def store(
    node: str, ident: Identity | None, *, root: Root = ROOT, path: Path | None = None, **kw: Any
) -> PolicyStore:
    signer = ident.signer() if ident is not None else None
    disk = DiskPersistence(path) if path is not None else None
    return PolicyStore(disk, node=node, signer=signer, verifier=root.verifier(), **kw)


def route(name: str, timeout: str = "1s", host: str = "svc") -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "host": host,
            "http": [{"route": [{"destination": {"host": host}}], "timeout": timeout}],
        },
    }


def mesh_config(*admins: str, policy: str = "ALLOW_AUTHENTICATED") -> dict[str, Any]:
    return {
        "kind": "MeshConfig",
        "name": "default",
        "spec": {"admins": list(admins), "defaultInboundPolicy": policy},
    }


def record_for(doc: dict[str, Any], *, node: str = "node-x", lamport: int = 1) -> VersionRecord:
    obj = parse_object(doc)
    body = canonical_json(obj)
    return VersionRecord(obj.kind, obj.name, node, lamport, NOW, content_hash(body), False, body)


def crdt_update(*records: VersionRecord, raw: dict[str, str] | None = None) -> bytes:
    """An update a (malicious) peer could send: records written straight into a Doc."""
    doc = Doc()
    versions = doc.get(VERSIONS_ROOT, type=Map)
    for r in records:
        versions[r.map_key] = r.encode()
    for key, value in (raw or {}).items():
        versions[key] = value
    return doc.get_update()


def sync(*stores: PolicyStore) -> None:
    for _ in range(2):
        for a in stores:
            for b in stores:
                if a is not b:
                    b.apply_update(a.diff_since(b.state_vector()), source=a.node)


# ---------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("ecdsa", [False, True], ids=["ed25519", "ecdsa-p256"])
def test_sign_verify_round_trip_through_the_crdt(ecdsa: bool) -> None:
    ident = ROOT.leaf("web", ecdsa=ecdsa)
    signed = ident.signer().sign(record_for(route("r")))
    assert signed.author == svc("web") and signed.cert and signed.sig
    ROOT.verifier().verify(signed)
    # The JSON form carries the signature and decodes to the same record.
    again, _ = decode_record(signed.map_key, signed.encode())
    assert again == signed
    a, b = store("node-a", ident), store("node-b", None)
    report = a.apply([route("r")], now=NOW)
    b.apply_update(report.update, source="node-a")
    winner = b.winner("Route", "r")
    assert winner is not None and winner.author == svc("web") and winner.signed
    assert b.history("Route", "r")[0].to_dict()["author"] == svc("web")


def _tampered(kind: str) -> VersionRecord:
    signed = WEB.signer().sign(record_for(route("r")))
    if kind == "body":
        other = record_for(route("r", timeout="9s"))
        return dataclasses.replace(signed, body=other.body, hash=other.hash)
    if kind == "author":
        return dataclasses.replace(signed, author=svc("admin"))
    if kind == "cert-of-another-identity":
        return dataclasses.replace(signed, cert=_der(ADMIN))
    if kind == "cert-same-identity-other-key":
        return dataclasses.replace(signed, cert=_der(ROOT.leaf("web")))
    if kind == "lamport":
        return dataclasses.replace(signed, lamport=99)
    if kind == "time":
        return dataclasses.replace(signed, time=NOW + 1)
    if kind == "signature":
        assert signed.sig is not None
        return dataclasses.replace(signed, sig=bytes([signed.sig[0] ^ 1]) + signed.sig[1:])
    if kind == "unsigned":
        return dataclasses.replace(signed, author=None, cert=None, sig=None)
    raise AssertionError(kind)


def _der(ident: Identity) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return ident.cert.public_bytes(serialization.Encoding.DER)


TAMPERINGS = [
    "body",
    "author",
    "cert-of-another-identity",
    "cert-same-identity-other-key",
    "lamport",
    "time",
    "signature",
    "unsigned",
]


@pytest.mark.parametrize("kind", TAMPERINGS)
def test_altered_record_is_refused_and_the_store_keeps_what_it_had(kind: str) -> None:
    forged = _tampered(kind)
    with pytest.raises(AuthorshipError):
        ROOT.verifier().verify(forged)
    target = store("node-b", OPS)
    target.apply([route("keep")], now=NOW)
    before, records = target.digest(), target.records()
    with pytest.raises(UpdateRefused) as refused:
        target.apply_update(crdt_update(forged), source="node-evil")
    assert "node-evil" in str(refused.value) and "Route/r" in refused.value.reason
    assert target.digest() == before and target.records() == records
    assert target.refused_updates == 1 and target.winner("Route", "r") is None
    # A store without a verifier (tests, simulations) still takes anything valid.
    PolicyStore(node="plain").apply_update(crdt_update(forged), source="x")


def test_record_signed_by_a_foreign_ca_is_refused() -> None:
    outsider = FOREIGN.leaf("admin")  # same SPIFFE ID as our admin, another root
    forged = outsider.signer().sign(record_for(mesh_config(svc("admin"))))
    with pytest.raises(AuthorshipError, match="not signed by any root of our trust bundle"):
        ROOT.verifier().verify(forged)
    target = store("node-b", OPS)
    with pytest.raises(UpdateRefused, match="trust bundle"):
        target.apply_update(crdt_update(forged), source="node-evil")
    assert target.admins == frozenset()


def test_a_ca_certificate_cannot_author_records() -> None:
    root_ident = Identity(ROOT.key, ROOT.cert)  # chains to itself, but it is CA:TRUE
    forged = root_ident.signer().sign(record_for(mesh_config(svc("admin"))))
    with pytest.raises(AuthorshipError, match="CA certificate"):
        ROOT.verifier().verify(forged)


def test_expired_author_certificate_still_verifies() -> None:
    old = ROOT.leaf("web", now=LONG_AGO, lifetime=dt.timedelta(hours=1))
    assert old.cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    signed = old.signer().sign(record_for(route("r")))
    ROOT.verifier().verify(signed)
    writer, reader = store("node-a", old), store("node-b", OPS)
    reader.apply_update(writer.apply([route("r")], now=NOW).update, source="node-a")
    assert reader.get("Route", "r") is not None


def test_signer_follows_certificate_renewal() -> None:
    current = [ROOT.leaf("web")]
    signer = RecordSigner(lambda: (current[0].key, current[0].cert))
    first = signer.sign(record_for(route("r")))
    current[0] = ROOT.leaf("web")  # renewal: new key, new certificate
    second = signer.sign(record_for(route("r")))
    assert first.cert != second.cert
    verifier = ROOT.verifier()
    verifier.verify(first)
    verifier.verify(second)


def test_verification_is_cached_per_record_and_dropped_when_the_bundle_changes() -> None:
    bundle = [ROOT.cert]
    verifier = RecordVerifier(lambda: bundle)
    signed = WEB.signer().sign(record_for(route("r")))
    for _ in range(5):
        verifier.verify(signed)
    assert verifier.verified == 1
    a, b, c = store("a", WEB), PolicyStore(node="b", verifier=verifier), None
    update = a.apply([route(f"r{i}") for i in range(20)], now=NOW).update
    b.apply_update(update, source="a")
    assert verifier.verified == 21
    c = PolicyStore(node="c", verifier=verifier)  # a second replica: nothing re-verified
    c.apply_update(update, source="a")
    assert verifier.verified == 21
    bundle = [FOREIGN.cert]  # a new bundle object: the cache is gone, and so is trust
    with pytest.raises(AuthorshipError):
        verifier.verify(signed)


def test_no_identity_yet() -> None:
    waiting = PolicyStore(node="new", signer=RecordSigner(lambda: None), verifier=ROOT.verifier())
    with pytest.raises(NoIdentity, match="no identity yet"):
        waiting.apply([route("r")], now=NOW)
    assert waiting.records() == {}
    # Without a trust bundle, incoming records are refused cleanly (the peer resends).
    blind = PolicyStore(node="new", verifier=RecordVerifier(lambda: []))
    update = store("a", WEB).apply([route("r")], now=NOW).update
    with pytest.raises(UpdateRefused, match="no trust bundle yet"):
        blind.apply_update(update, source="a")
    assert blind.records() == {}


def test_signed_records_survive_restart(tmp_path) -> None:
    path = tmp_path / "policy.bin"
    with store("node-a", WEB, path=path) as first:
        first.apply([route("r"), mesh_config(svc("web"))], now=NOW)
        first.compact()
        first.apply([route("s")], now=NOW + 1)  # in the log, not the snapshot
    with store("node-a", WEB, path=path) as again:
        assert again.get("Route", "s") is not None and again.get("Route", "r") is not None
        assert again.admins == {svc("web")}


@pytest.mark.parametrize("compacted", [False, True], ids=["log", "snapshot"])
def test_policy_written_before_signing_refuses_to_load_with_a_clear_message(
    tmp_path, compacted: bool
) -> None:
    path = tmp_path / "policy.bin"
    # An agent of the previous version, which did not sign records:
    with PolicyStore(DiskPersistence(path), node="node-a") as legacy:
        legacy.apply([route("r")], now=NOW)
        if compacted:
            legacy.compact()
    with pytest.raises(PolicyStoreCorrupt, match="not signed") as refused:
        store("node-a", WEB, path=path)
    assert "aside" in str(refused.value)


def test_an_intact_log_record_whose_policy_is_refused_stops_the_load(tmp_path) -> None:
    path = tmp_path / "policy.bin"
    with store("node-a", WEB, path=path) as first:
        first.apply([route("r")], now=NOW)
    log = Journal(path.with_name("policy.bin.log"))
    at = log.replay()[1].good_bytes
    # Signed under another mesh's root: the record decodes but its signature is refused.
    log.append(store("x", FOREIGN.leaf("web"), root=FOREIGN).apply([route("s")], now=NOW).update)
    log.close()
    with pytest.raises(JournalRecordInvalid) as refused:
        store("node-a", WEB, path=path)
    message = str(refused.value)
    assert f"{log.path} holds an intact record 1 at byte {at}" in message
    assert "peermesh policy recover" in message and "refusing to start" in message


def test_recover_validates_the_snapshot_then_the_log_over_what_a_start_keeps(tmp_path) -> None:
    path = tmp_path / "policy.bin"
    # A snapshot signed under another mesh's root, then a log record signed by the mesh.
    with store("x", FOREIGN.leaf("web"), root=FOREIGN, path=path) as foreign:
        foreign.apply([route("planted")], now=NOW)
        foreign.compact()
    log = Journal(path.with_name("policy.bin.log"))
    log.append(store("node-a", WEB).apply([route("r")], now=NOW).update)
    log.close()
    found = check(DiskPersistence(path), ROOT.verifier())
    # The snapshot is refused; the log is fine over nothing, where the next start begins.
    assert [(d.path, d.record) for d in found] == [(path, None)]
    assert "holds invalid policy" in found[0].reason
    moved = recover(DiskPersistence(path), now=dt.datetime(2026, 12, 3, tzinfo=dt.UTC),
                    verifier=ROOT.verifier()).moved  # fmt: skip
    assert [src for src, _ in moved] == [path]
    with store("node-a", WEB, path=path) as again:
        assert {o.name for o in again.objects("Route")} == {"r"}
    assert check(DiskPersistence(path), ROOT.verifier()) == []
    # Without the trust bundle only objects are checked, and these are valid objects.
    assert check(DiskPersistence(path)) == []


# ---------------------------------------------------------------------------- authority


def test_admin_chain_open_then_closed_then_non_admin_edits_never_win() -> None:
    admin, ops, web = store("node-1", ADMIN), store("node-2", OPS), store("node-3", WEB)
    everyone = (admin, ops, web)
    # Open mesh: anyone's edit is in effect.
    web.apply([route("r", "1s")], now=NOW)
    sync(*everyone)
    assert all(s.get("Route", "r") is not None for s in everyone)
    # The admin closes the mesh; web, partitioned, has not heard and edits on.
    admin.apply([mesh_config(svc("admin"), svc("ops"))], now=NOW)
    late = web.apply([route("r", "7s"), route("new")], now=NOW + 1)
    assert late.changed  # in effect on web until it hears of the MeshConfig
    sync(*everyone)
    for s in everyone:
        assert s.admins == {svc("admin"), svc("ops")}
        # Every version by web is kept but out of effect, including the open-era one.
        assert s.get("Route", "r") is None and s.get("Route", "new") is None
        history = s.history("Route", "r")
        assert {h.author for h in history} == {svc("web")}
        assert not any(h.authorized or h.won for h in history)
    # web is now refused up front; ops (an admin) edits and it is in effect everywhere.
    with pytest.raises(NotAdmin, match=rf"{svc('web')} is not a MeshConfig admin"):
        web.apply([route("r", "3s")], now=NOW + 2)
    ops.apply([route("r", "5s")], now=NOW + 2)
    sync(*everyone)
    assert {s.get("Route", "r").spec.http[0].timeout for s in everyone} == {5.0}  # type: ignore[union-attr]
    assert len({s.digest() for s in everyone}) == 1


def test_non_admin_meshconfig_does_not_count_even_with_a_higher_counter() -> None:
    admin, web = store("node-1", ADMIN), store("node-3", WEB)
    admin.apply([mesh_config(svc("admin"))], now=NOW)
    # web never saw it and bumps its counter high, then claims the mesh for itself.
    for i in range(5):
        web.apply([route(f"r{i}")], now=NOW)
    web.apply([mesh_config(svc("web"), policy="DENY")], now=NOW)
    sync(admin, web)
    for s in (admin, web):
        assert s.admins == {svc("admin")}
        assert s.get("MeshConfig", "default").spec.default_inbound_policy == "ALLOW_AUTHENTICATED"  # type: ignore[union-attr]
        assert [h.authorized for h in s.history("MeshConfig", "default")] == [False, True]


def test_admin_hands_over_and_removes_themself() -> None:
    admin, ops = store("node-1", ADMIN), store("node-2", OPS)
    admin.apply([mesh_config(svc("admin"))], now=NOW)
    admin.apply([mesh_config(svc("ops"))], now=NOW + 1)  # allowed: admin is in the set
    sync(admin, ops)
    for s in (admin, ops):
        assert s.admins == {svc("ops")}
    with pytest.raises(NotAdmin):
        admin.apply([route("r")], now=NOW + 2)
    ops.apply([route("r")], now=NOW + 2)
    # ops deletes MeshConfig: the mesh is open again, everyone may edit.
    ops.delete(["MeshConfig/default"], now=NOW + 3)
    sync(admin, ops)
    assert admin.admins == frozenset() and admin.get("Route", "r") is not None
    admin.apply([route("s")], now=NOW + 4)


def test_a_change_that_locks_its_own_other_objects_out_is_refused() -> None:
    web = store("node-3", WEB)
    with pytest.raises(PolicyError, match="would never be in effect") as refused:
        web.apply([mesh_config(svc("admin")), route("r")], now=NOW)
    assert "add this agent's identity to admins" in str(refused.value.to_dict())
    assert web.records() == {}
    # Separately it is allowed, and then web's Route is out of effect like any edit by a
    # non-admin (which is why the combined change is refused: it could never work).
    web.apply([route("r")], now=NOW)
    web.apply([mesh_config(svc("admin"))], now=NOW)
    assert web.admins == {svc("admin")} and web.get("Route", "r") is None


def test_meshconfig_history_is_never_pruned_and_peer_deletes_of_it_are_refused() -> None:
    admin = store("node-1", ADMIN, history_limit=2)
    for i in range(5):
        admin.apply(
            [mesh_config(svc("admin"), policy=("DENY", "ALLOW_AUTHENTICATED")[i % 2])], now=NOW
        )
        admin.apply([route("r", f"{i + 1}s")], now=NOW)
    assert len(admin.history("MeshConfig", "default")) == 5
    assert len(admin.history("Route", "r")) == 2  # other kinds are still bounded
    # A peer holding the same document deletes the first MeshConfig version (a rollback).
    evil = Doc()
    evil.apply_update(admin.full_update())
    versions = evil.get(VERSIONS_ROOT, type=Map)
    first = min(
        (k for k in versions if k.startswith("MeshConfig/")),
        key=lambda k: int(k.split("|")[1].split(":")[0]),
    )
    replica = store("node-2", OPS)
    replica.apply_update(admin.full_update(), source="node-1")
    before = evil.get_state()
    del versions[first]
    with pytest.raises(UpdateRefused, match="never pruned"):
        replica.apply_update(evil.get_update(before), source="node-evil")
    assert replica.records() == admin.records()


def test_a_peer_cannot_roll_an_object_back_by_deleting_its_newest_versions() -> None:
    admin = store("node-1", ADMIN, history_limit=2)
    for i in range(4):
        admin.apply([route("r", f"{i + 1}s")], now=NOW)
    replica = store("node-2", OPS, history_limit=2)
    replica.apply_update(admin.full_update(), source="node-1")
    evil = Doc()
    evil.apply_update(admin.full_update())
    versions = evil.get(VERSIONS_ROOT, type=Map)
    newest = max(
        (k for k in versions if k.startswith("Route/r|")),
        key=lambda k: int(k.split("|")[1].split(":")[0]),
    )
    before = evil.get_state()
    del versions[newest]
    with pytest.raises(UpdateRefused, match="only older history may be pruned"):
        replica.apply_update(evil.get_update(before), source="node-evil")
    assert replica.get("Route", "r").spec.http[0].timeout == 4.0  # type: ignore[union-attr]
    # Honest pruning (older than the author's two newest) is accepted.
    report = admin.apply([route("r", "5s")], now=NOW)
    replica.apply_update(report.update, source="node-1")
    assert replica.records() == admin.records()


def test_a_flood_of_non_admin_versions_cannot_prune_the_admins_winner() -> None:
    admin, web = store("node-1", ADMIN, history_limit=2), store("node-3", WEB, history_limit=2)
    admin.apply([mesh_config(svc("admin")), route("r", "1s")], now=NOW)
    sync(admin, web)
    # web cannot edit through the API, but a compromised web can still sign records:
    # craft five higher-ranked versions of Route/r signed by web.
    forged = [
        WEB.signer().sign(record_for(route("r", f"{i + 2}s"), node="node-3", lamport=10 + i))
        for i in range(5)
    ]
    admin.apply_update(crdt_update(*forged), source="node-3")
    admin.apply([route("other")], now=NOW)
    assert admin.get("Route", "r").spec.http[0].timeout == 1.0  # type: ignore[union-attr]
    admin.apply([mesh_config(svc("admin"), policy="DENY")], now=NOW)
    assert admin.get("Route", "r") is not None


def _takeover_attempt(attacker_issued: dt.datetime) -> PolicyStore:
    """The admin closes the mesh; then web signs a MeshConfig naming itself with a lower
    counter (backdating), using a certificate issued at ``attacker_issued``."""
    admin_ident = ROOT.leaf("admin", now=LONG_AGO, lifetime=dt.timedelta(hours=1))
    admin = store("node-1", admin_ident)
    for i in range(3):
        admin.apply([route(f"r{i}")], now=NOW)  # counters 1..3
    admin.apply([mesh_config(svc("admin"))], now=NOW)  # counter 4 closes the mesh
    attacker = ROOT.leaf("web", now=attacker_issued)
    backdated = attacker.signer().sign(
        record_for(mesh_config(svc("web"), policy="DENY"), node="node-9", lamport=2)
    )
    replica = store("node-2", OPS)
    replica.apply_update(admin.full_update(), source="node-1")
    replica.apply_update(crdt_update(backdated), source="node-9")  # validly signed: kept
    return replica


def test_backdated_meshconfig_signed_after_the_admins_certificate_expired_does_not_count():
    replica = _takeover_attempt(LONG_AGO + dt.timedelta(hours=3))
    assert replica.admins == {svc("admin")}
    history = replica.history("MeshConfig", "default")
    assert [(h.author, h.authorized, h.won) for h in history] == [
        (svc("admin"), True, True),
        (svc("web"), False, False),  # ranked lower (counter 2), but walked after
    ]


def test_backdating_with_an_overlapping_certificate_is_the_documented_gap():
    # A certificate that was valid at the same time as the admin's cannot be ordered
    # after it: rank order decides, the backdated version is walked first and takes over.
    replica = _takeover_attempt(LONG_AGO + dt.timedelta(minutes=30))
    assert replica.admins == {svc("web")}


def test_authority_order_is_rank_order_unless_certificates_say_otherwise():
    early = ROOT.leaf("admin", now=LONG_AGO, lifetime=dt.timedelta(hours=1))
    late = ROOT.leaf("web", now=LONG_AGO + dt.timedelta(hours=2))
    overlapping = ROOT.leaf("ops", now=LONG_AGO + dt.timedelta(minutes=10))
    a = early.signer().sign(record_for(mesh_config(), lamport=5))
    b = late.signer().sign(record_for(mesh_config(), lamport=1))
    c = overlapping.signer().sign(record_for(mesh_config(), lamport=3))
    assert [r.lamport for r in authority_order([a, b, c])] == [3, 5, 1]
    assert [r.lamport for r in authority_order([a, c])] == [3, 5]


# ---------------------------------------------------------------------------- convergence

IDENTS = {"A": ADMIN, "O": OPS, "W": WEB}
ADMIN_SETS = [(), ("A",), ("O",), ("A", "O"), ("W",), ("A", "W")]
DOCS: list[dict[str, Any]] = [
    route("r1", "1s"),
    route("r1", "2s"),
    route("r2", "3s"),
    *[mesh_config(*(svc(IDENTS[x].spiffe.rsplit("/", 1)[1]) for x in s)) for s in ADMIN_SETS],
]
KEYS = ["MeshConfig/default", "Route/r1", "Route/r2"]


def reference_winners(records: dict[str, str]) -> tuple[frozenset[str], dict[str, str | None]]:
    """Authority and winners from the record set alone, written independently of the store."""
    decoded = [decode_record(k, v)[0] for k, v in records.items()]
    admins: frozenset[str] = frozenset()
    counted: set[str] = set()
    for r in sorted((r for r in decoded if r.kind == "MeshConfig"), key=lambda r: r.rank):
        if not admins or r.author in admins:
            counted.add(r.map_key)
            admins = (
                frozenset(json.loads(r.body)["spec"].get("admins", [])) if r.body else frozenset()
            )
    winners: dict[str, str | None] = {}
    for key in KEYS:
        ok = [
            r for r in decoded if r.key == key and (
                r.map_key in counted if r.kind == "MeshConfig" else not admins or r.author in admins
            )
        ]  # fmt: skip
        winners[key] = max(ok, key=lambda r: r.rank).edit_id if ok else None
    return admins, winners


class AuthorityReplication(RuleBasedStateMachine):
    """Three replicas, each signing as its own identity; random delivery, loss, duplication."""

    def __init__(self) -> None:
        super().__init__()
        self.stores = [
            store(f"node-{i}", ident, history_limit=2, client_id=i + 1)
            for i, ident in enumerate(IDENTS.values())
        ]
        self.inflight: list[tuple[int, bytes]] = []
        self.clock = 0.0

    @rule(replica=st.integers(0, 2), doc=st.sampled_from(DOCS))
    def edit(self, replica: int, doc: dict[str, Any]) -> None:
        self.clock += 1
        try:
            report = self.stores[replica].apply([doc], now=NOW + self.clock)
        except (PolicyError, NotAdmin):
            return
        self.inflight += [(o, report.update) for o in range(3) if o != replica and report.update]

    @rule(replica=st.integers(0, 2), key=st.sampled_from(KEYS))
    def delete(self, replica: int, key: str) -> None:
        self.clock += 1
        try:
            report = self.stores[replica].delete([key], now=NOW + self.clock)
        except (PolicyError, NotAdmin):
            return
        self.inflight += [(o, report.update) for o in range(3) if o != replica and report.update]

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        index = data.draw(st.integers(0, len(self.inflight) - 1), label="message")
        destination, update = self.inflight[index]
        if not duplicate:
            del self.inflight[index]
        try:
            self.stores[destination].apply_update(update, source="peer")
        except UpdateRefused as exc:
            # Only a push whose prunes arrive before the versions justifying them; the
            # edit comes again with anti-entropy (which is never refused, see below).
            assert "only older history may be pruned" in exc.reason, exc.reason
            event("push refused until anti-entropy")

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        del self.inflight[data.draw(st.integers(0, len(self.inflight) - 1), label="message")]

    @rule(a=st.integers(0, 2), b=st.integers(0, 2))
    def anti_entropy(self, a: int, b: int) -> None:
        if a != b:
            src, dst = self.stores[a], self.stores[b]
            dst.apply_update(src.diff_since(dst.state_vector()), source=src.node)  # never refused

    @invariant()
    def no_unauthorized_winner(self) -> None:
        for s in self.stores:
            for key in KEYS:
                winner = s.winner(*key.split("/"))
                if winner is not None:
                    assert s.authorized(winner)
                    if key != "MeshConfig/default" and s.admins:
                        assert winner.author in s.admins

    @rule()
    def sync_and_compare(self) -> None:
        self.inflight.clear()
        sync(*self.stores)
        first = self.stores[0]
        admins, winners = reference_winners(first.records())
        for s in self.stores:
            assert s.records() == first.records()
            assert s.admins == admins
            assert s.digest() == first.digest()
            assert s.objects() == first.objects()
            for key in KEYS:
                winner = s.winner(*key.split("/"))
                assert (winner.edit_id if winner else None) == winners[key], key

    def teardown(self) -> None:
        self.sync_and_compare()
        for s in self.stores:
            s.close()


AuthorityReplication.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAuthorityReplication = AuthorityReplication.TestCase


# ---------------------------------------------------------------------------- real agents


def admin_url(agent: Agent) -> str:
    host, port = agent.addresses["admin"]
    return f"http://{host}:{port}"


async def test_forged_push_over_mtls_is_refused_and_the_agent_keeps_serving(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        a, b = mesh.client, mesh.server  # node-a: frontend, node-b: orders
        good = await client.put(
            admin_url(a) + "/v1/policy",
            json={"objects": [route("keep", host="orders")]},
            headers=ADMIN_HEADERS,
        )
        assert good.status_code == 200, good.text
        await eventually(lambda: b.policy.get("Route", "keep") is not None)
        before, records = b.policy.digest(), b.policy.records()
        # node-a's real key and certificate, but a record claiming to be by orders (node-b)
        # and a MeshConfig that would make frontend the only admin.
        key = serialization.load_pem_private_key(
            (mesh.dirs["node-a"] / "key.pem").read_bytes(), None
        )
        cert = x509.load_pem_x509_certificate((mesh.dirs["node-a"] / "cert.pem").read_bytes())
        signed = RecordSigner(lambda: (key, cert)).sign(  # type: ignore[arg-type]
            record_for(mesh_config(svc("frontend")), node="node-b", lamport=50)
        )
        claim = dataclasses.replace(signed, author=svc("orders"))
        # ... and one signed by a certificate from a root nobody in the mesh trusts.
        foreign = FOREIGN.leaf("orders").signer().sign(record_for(route("evil", host="orders")))
        target = Endpoint(
            service="", host=b.addresses["inbound"][0], port=b.addresses["inbound"][1]
        )
        for forged, why in ((claim, "claims author"), (foreign, "trust bundle")):
            with pytest.raises(RpcError, match="policy update refused") as refused:
                await a.control_client.call(
                    target, PUSH, PushRequest(crdt_update(forged), sender="node-a")
                )
            assert why in str(refused.value)
        assert b.policy.digest() == before and b.policy.records() == records
        assert b.replicator is not None and b.replicator.refused == 2
        # The agent keeps serving: app traffic through the mesh and later good edits.
        r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert r.status_code == 200
        again = await client.put(
            admin_url(a) + "/v1/policy",
            json={"objects": [route("after", host="orders")]},
            headers=ADMIN_HEADERS,
        )
        assert again.status_code == 200
        await eventually(lambda: b.policy.get("Route", "after") is not None)
        history = (await client.get(admin_url(b) + "/v1/policy/Route/after/history")).json()[
            "history"
        ]
        assert history[0]["author"] == svc("frontend") and history[0]["authorized"]


async def test_non_admin_local_apply_gets_403_and_admin_edits_apply(tmp_path) -> None:
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        a, b = mesh.client, mesh.server
        closed = await client.put(
            admin_url(a) + "/v1/policy",
            json={"objects": [mesh_config(svc("frontend"))]},
            headers=ADMIN_HEADERS,
        )
        assert closed.status_code == 200, closed.text
        await eventually(lambda: b.policy.admins == {svc("frontend")})
        refused = await client.put(
            admin_url(b) + "/v1/policy",
            json={"objects": [route("r", host="orders")]},
            headers=ADMIN_HEADERS,
        )
        assert refused.status_code == 403
        assert refused.json()["error"].startswith(
            f"{svc('orders')} is not a MeshConfig admin; edit from one of: {svc('frontend')}"
        )
        deleted = await client.delete(
            admin_url(b) + "/v1/policy/MeshConfig/default", headers=ADMIN_HEADERS
        )
        assert deleted.status_code == 403
        status = (await client.get(admin_url(b) + "/v1/policy/status")).json()
        assert status["here"]["admins"] == [svc("frontend")]
        # An admin asking the non-admin agent to edit (policy/edit): the caller may, but
        # what orders would sign could never be in effect.
        host, port = b.addresses["inbound"]
        with pytest.raises(RpcError, match=r"\(403\): this agent cannot write"):
            await a.control_client.call(
                Endpoint(service="", host=host, port=port),
                EDIT,
                EditRequest((route("r", host="orders"),)),
            )
        assert b.policy.get("Route", "r") is None
        ok = await client.put(
            admin_url(a) + "/v1/policy",
            json={"objects": [route("r", host="orders")]},
            headers=ADMIN_HEADERS,
        )
        assert ok.status_code == 200
        await eventually(lambda: b.policy.get("Route", "r") is not None)


async def test_agent_without_a_certificate_answers_503_no_identity(tmp_path) -> None:
    data_dir = tmp_path / "fresh"
    data_dir.mkdir()
    agent = Agent(agent_config("node-z", "web", data_dir))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        await nursery.start(agent.run)
        r = await client.put(
            admin_url(agent) + "/v1/policy", json={"objects": [route("r")]}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 503 and "no identity yet" in r.json()["error"]
        assert agent.policy.records() == {}
        nursery.cancel_scope.cancel()
