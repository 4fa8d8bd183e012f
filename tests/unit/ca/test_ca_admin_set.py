"""The signer's admin-set check, and a real FROST endorsement the policy walk accepts."""

from __future__ import annotations

import dataclasses

import pytest

from certs import frost
from certs.x509 import TbsRefused
from peermesh.ca.admin_set import expected_statement, requester_refusal
from peermesh.ca.signer import Signer
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.policy.anchor import AdminEndorsement, KeyAnchor, admin_set_statement
from peermesh.policy.authority import walk
from tests.unit.policy.test_policy_authorship import ROOT, mesh_config, record_for

TD = "mesh.test"
ADMIN = f"spiffe://{TD}/svc/admin"
OPS = f"spiffe://{TD}/svc/ops"
SHARES, PUBLIC = frost.trusted_dealer_keygen(3, 2)
MEMBERS = tuple(
    CommitteeMember(f"node-{i}", i, bytes(32), f"svc-{i}", ("127.0.0.1", 1)) for i in sorted(SHARES)
)
COMMITTEE = Committee(1, TD, PUBLIC, MEMBERS, None)
H = "cd" * 32  # a MeshConfig version's content hash


def refusal(peer: str | None, node: str | None, admins: frozenset[str]) -> str | None:
    return requester_refusal(peer, node, admins=admins, committee=COMMITTEE, trust_domain=TD)


def test_only_a_current_admin_or_with_none_a_committee_members_node_may_ask() -> None:
    assert refusal(ADMIN, "anywhere", frozenset({ADMIN})) is None
    assert "not in this signer's current admin set" in str(
        refusal(OPS, "node-1", frozenset({ADMIN}))
    )
    assert refusal(f"spiffe://{TD}/svc/svc-1", "node-1", frozenset()) is None
    # Another service on a member's node, or a member's service on another node.
    assert "not a committee member's node" in str(refusal(OPS, "node-1", frozenset()))
    assert "not a committee member's node" in str(
        refusal(f"spiffe://{TD}/svc/svc-1", "node-9", frozenset())
    )
    assert "unauthenticated" in str(refusal(None, None, frozenset()))


def test_the_signer_rebuilds_the_statement_from_its_own_view() -> None:
    view = {"trust_domain": TD, "admins": frozenset({ADMIN}), "epoch": 4}
    good = admin_set_statement(TD, 5, [ADMIN], [OPS], version=H)
    assert expected_statement(good, **view) == good  # type: ignore[arg-type]
    # What the admin writes besides the admins is its own choice: any version is signed.
    other = admin_set_statement(TD, 5, [ADMIN], [OPS], version="00" * 32)
    assert expected_statement(other, **view) == other  # type: ignore[arg-type]
    for message, why in [
        (admin_set_statement(TD, 4, [ADMIN], [OPS], version=H), "epoch 4, but .* at epoch 4"),
        (admin_set_statement(TD, 6, [ADMIN], [OPS], version=H), "epoch 6"),
        (admin_set_statement(TD, 5, [OPS], [OPS], version=H), "another previous admin set"),
        (
            admin_set_statement("other.test", 5, [ADMIN], [OPS], version=H),
            "trust domain 'other.test'",
        ),
        (b"0\x82\x01\x00 a TBS certificate", "not an admin-set statement"),
        (None, "no message"),
    ]:
        with pytest.raises(TbsRefused, match=why):
            expected_statement(message, **view)  # type: ignore[arg-type]


def test_t_signers_produce_an_endorsement_the_walk_accepts_and_t_minus_one_cannot() -> None:
    record = record_for(mesh_config(ADMIN), node="node-1")
    statement = admin_set_statement(TD, 1, [], [ADMIN], version=record.hash)
    signers = {i: Signer(SHARES[i], PUBLIC, frost.MemoryNonceStore()) for i in SHARES}
    commitments = {i: s.commit() for i, s in signers.items()}
    package = frost.SigningPackage(statement, (commitments[1], commitments[3]))
    shares = [signers[i].sign_statement(package.to_wire(), statement) for i in (1, 3)]
    signature = frost.aggregate(package, shares, PUBLIC)
    anchor = KeyAnchor(TD, PUBLIC.group_public_key.to_bytes())
    assert anchor.verify(statement, signature)
    signed = (
        ROOT.leaf("svc-1")
        .signer()
        .sign(dataclasses.replace(record, endorsement=AdminEndorsement(1, signature)))
    )
    assert walk([signed], anchor).admins == {ADMIN}
    # t-1 signers: a signer refuses a package with fewer than t commitments, and one
    # share of a t-package aggregates to nothing.
    alone = frost.SigningPackage(statement, (signers[2].commit(),))
    with pytest.raises(TbsRefused, match="fewer than the threshold"):
        signers[2].sign_statement(alone.to_wire(), statement)
    with pytest.raises(frost.FrostError, match="missing signature share"):
        frost.aggregate(package, shares[:1], PUBLIC)
    # A signer asked to sign anything but the bytes it rebuilt refuses.
    other = frost.SigningPackage(b"something else", (signers[2].commit(), commitments[3]))
    with pytest.raises(TbsRefused):
        signers[2].sign_statement(other.to_wire(), statement)
