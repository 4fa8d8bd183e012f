"""The signer's template and the succession checks, without agents (pure functions)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import frost
from certs.ed25519_group import Point
from certs.x509 import TbsRefused, assemble_certificate, build_root_tbs
from peermesh.ca.errors import CaForbidden
from peermesh.ca.signer import SigningPolicy, leaf_decision, leaf_template
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.ca.succession import (
    check_committee_update,
    check_own_share,
    check_shares_consistent,
    endorsement_valid,
)

TD = "mesh.test"
ID = f"spiffe://{TD}/svc/frontend"
NOW = dt.datetime(2030, 1, 1, 12, 0, 30, tzinfo=dt.UTC)
POLICY = SigningPolicy(TD)


def _root() -> tuple[Ed25519PrivateKey, object]:
    key = Ed25519PrivateKey.generate()
    tbs = build_root_tbs(
        key.public_key().public_bytes_raw(),
        TD,
        NOW - dt.timedelta(days=1),
        NOW + dt.timedelta(days=9),
    )
    return key, assemble_certificate(tbs, key.sign(tbs))


def test_signers_within_the_allowance_build_the_same_bytes() -> None:
    _, root = _root()
    subject = Ed25519PrivateKey.generate().public_key()
    tbs = leaf_template(
        subject, identity=ID, node_name="node-a", root=root, issued_at=NOW,  # type: ignore[arg-type]
        lifetime=dt.timedelta(hours=1),
    )  # fmt: skip
    again = leaf_template(
        subject, identity=ID, node_name="node-a", root=root,  # type: ignore[arg-type]
        issued_at=NOW + dt.timedelta(seconds=20), lifetime=dt.timedelta(hours=1),
    )  # fmt: skip
    assert tbs == again  # same minute: same bytes, serial included
    for skew in (-90, 0, 90):
        leaf_decision(
            tbs, identity=ID, node_name="node-a", root=root, policy=POLICY,  # type: ignore[arg-type]
            now=NOW + dt.timedelta(seconds=skew),
        )  # fmt: skip
    with pytest.raises(TbsRefused, match=r"clock skew.*2030-01-01T12:05:30.*2030-01-01T12:00:00"):
        leaf_decision(
            tbs, identity=ID, node_name="node-a", root=root, policy=POLICY,  # type: ignore[arg-type]
            now=NOW + dt.timedelta(minutes=5),
        )  # fmt: skip
    with pytest.raises(TbsRefused, match="on node 'node-b'"):
        leaf_decision(
            tbs, identity=ID, node_name="node-b", root=root, policy=POLICY, now=NOW,  # type: ignore[arg-type]
        )  # fmt: skip
    # A join names its node in the TBS; the rest must still be the template.
    leaf_decision(tbs, identity=ID, root=root, policy=POLICY, now=NOW)  # type: ignore[arg-type]


def _committee(
    shares: dict[int, frost.SigningKeyShare], public: frost.PublicKeyPackage
) -> Committee:
    members = tuple(
        CommitteeMember(f"node-{i}", i, bytes(32), "svc", ("127.0.0.1", 1)) for i in sorted(shares)
    )
    return Committee(1, TD, public, members, None)


def test_a_committee_update_needs_consistent_shares_and_for_removals_an_endorsement() -> None:
    shares, public = frost.trusted_dealer_keygen(3, 2)
    old = _committee(shares, public)
    check_shares_consistent(public)
    check_own_share(shares[1], public)
    swapped = dict(public.verification_shares)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(CaForbidden, match="does not verify"):
        check_own_share(shares[2], replace(public, verification_shares=swapped))
    # Shares that are not one sharing of the group key.
    bent = dict(public.verification_shares)
    bent[3] = bent[3] + Point.base_mul(frost.lagrange_coefficient([1, 2], 1))
    with pytest.raises(CaForbidden, match="not on the committee's polynomial"):
        check_shares_consistent(frost.PublicKeyPackage(2, public.group_public_key, bent))
    # An enrolment only adds a member: checkable without proof.
    grown = replace(
        old,
        epoch=2,
        public=public.with_participant(4),
        members=(*old.members, CommitteeMember("node-4", 4, bytes(32), "svc", ("127.0.0.1", 1))),
    )
    check_committee_update(old, grown)
    # Dropping members needs the new committee's threshold signature.
    dropped = replace(old, epoch=2, members=old.members[:2])
    with pytest.raises(CaForbidden, match="without the new committee's threshold signature"):
        check_committee_update(old, dropped)
    assert not endorsement_valid(replace(dropped, endorsement=bytes(64)))
    statement = dropped.statement()
    nonces = {i: frost.MemoryNonceStore() for i in (1, 2)}
    commitments = tuple(frost.commit(shares[i], nonces[i]) for i in (1, 2))
    package = frost.SigningPackage(statement, commitments)
    signed = [frost.sign(shares[i], package, nonces[i]) for i in (1, 2)]
    endorsed = replace(dropped, endorsement=frost.aggregate(package, signed, public))
    assert endorsement_valid(endorsed)
    check_committee_update(old, endorsed)
    # Another group key is refused whatever it carries.
    _, other = frost.trusted_dealer_keygen(3, 2)
    with pytest.raises(CaForbidden, match="another group key"):
        check_committee_update(old, replace(endorsed, public=other))
