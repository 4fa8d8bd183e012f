"""The admin set anchored in the root key: the sans-IO walk, statements and records.

The committee's key here is one Ed25519 key: a FROST(Ed25519) aggregate is a plain
Ed25519 signature, so the walk cannot tell them apart (the agent tests use the real
committee). Records are really signed by leaf certificates of a dev root.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.policy.anchor import (
    DOMAIN,
    AdminEndorsement,
    KeyAnchor,
    Statement,
    StatementError,
    admin_set_statement,
)
from peermesh.policy.authority import walk
from peermesh.policy.errors import EndorsementRequired, UpdateRefused
from peermesh.policy.persistence import DiskPersistence
from peermesh.policy.records import VersionRecord, decode_record
from peermesh.policy.store import PolicyStore
from tests.unit.policy.test_policy_authorship import (
    LONG_AGO,
    NOW,
    ROOT,
    TD,
    Identity,
    crdt_update,
    mesh_config,
    record_for,
    route,
    svc,
)

COMMITTEE = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
ANCHOR = KeyAnchor(TD, COMMITTEE.public_key().public_bytes_raw())
ADMIN, OPS, WEB = ROOT.leaf("admin"), ROOT.leaf("ops"), ROOT.leaf("web")


#: An endorsement still to be made for the content hash of the version that carries it.
Endorse = Callable[[str], AdminEndorsement]


def endorse(
    previous: Collection[str],
    admins: Collection[str],
    epoch: int,
    *,
    key: Ed25519PrivateKey = COMMITTEE,
    trust_domain: str = TD,
    version: str | None = None,
) -> Endorse:
    def make(content: str) -> AdminEndorsement:
        statement = admin_set_statement(
            trust_domain, epoch, previous, admins, version=version or content
        )
        return AdminEndorsement(epoch, key.sign(statement))

    return make


def hash_of(doc: dict[str, Any]) -> str:
    return record_for(doc).hash


def version(
    author: Identity,
    admins: Collection[str],
    lamport: int,
    endorsement: Endorse | AdminEndorsement | None = None,
    *,
    node: str = "node-1",
    policy: str = "ALLOW_AUTHENTICATED",
) -> VersionRecord:
    record = record_for(mesh_config(*admins, policy=policy), node=node, lamport=lamport)
    if callable(endorsement):
        endorsement = endorsement(record.hash)
    return author.signer().sign(dataclasses.replace(record, endorsement=endorsement))


def anchored(node: str, ident: Identity | None = None) -> PolicyStore:
    signer = ident.signer() if ident is not None else None
    return PolicyStore(node=node, signer=signer, verifier=ROOT.verifier(), anchor=ANCHOR)


def replica_with(*records: VersionRecord) -> PolicyStore:
    replica = anchored("node-r")
    replica.apply_update(crdt_update(*records), source="node-x")
    return replica


A, OP, W = svc("admin"), svc("ops"), svc("web")
FIRST = version(ADMIN, [A], 1, endorse([], [A], 1))


# ---------------------------------------------------------------------------- the walk


def test_an_endorsed_change_counts_and_moves_the_epoch() -> None:
    second = version(ADMIN, [A, OP], 2, endorse([A], [A, OP], 2))
    replica = replica_with(FIRST, second)
    assert replica.admins == {A, OP} and replica.admin_epoch == 2
    assert replica.winner("MeshConfig", "default") == second
    assert replica.unendorsed_admin_changes == 0


def test_the_same_admin_set_needs_no_endorsement_from_an_admin_but_does_from_others() -> None:
    same = version(ADMIN, [A], 2, policy="DENY")
    by_other = version(WEB, [A], 3, node="node-9")
    replica = replica_with(FIRST, same, by_other)
    assert replica.admins == {A} and replica.admin_epoch == 1
    assert replica.winner("MeshConfig", "default") == same


@pytest.mark.parametrize(
    "endorsement",
    [
        None,
        endorse([A], [W], 3),  # wrong epoch
        endorse([OP], [W], 2),  # wrong previous set
        endorse([A], [W, OP], 2),  # another new set
        endorse([A], [W], 2, trust_domain="other.test"),
        endorse([A], [W], 2, key=OTHER_KEY),
        endorse([A], [W], 2, version=hash_of(mesh_config(W, policy="DENY"))),
    ],
    ids=["none", "epoch", "previous", "new-set", "trust-domain", "other-key", "other-version"],
)
def test_a_change_without_the_right_endorsement_does_not_count(
    endorsement: Endorse | None,
) -> None:
    change = version(ADMIN, [W], 2, endorsement)
    replica = replica_with(FIRST, change)
    assert replica.admins == {A} and replica.admin_epoch == 1
    assert replica.winner("MeshConfig", "default") == FIRST
    assert replica.unendorsed_admin_changes == 1
    assert not replica.authorized(change)


def test_a_backdated_record_changes_nothing_whatever_its_certificate() -> None:
    # The certificate overlaps the admin's (the gap the date ordering left) and the
    # counter is below the record that set the admins.
    attacker = ROOT.leaf("web", now=LONG_AGO + dt.timedelta(minutes=30))
    later = version(ADMIN, [A], 50, endorse([], [A], 1))
    backdated = version(attacker, [W], 2, node="node-9", policy="DENY")
    replica = replica_with(later, backdated)
    assert replica.admins == {A}
    assert replica.winner("MeshConfig", "default") == later


@pytest.mark.parametrize("first", [True, False], ids=["first-set", "handover"])
def test_a_copied_endorsement_in_a_backdated_record_with_other_settings_does_not_count(
    first: bool,
) -> None:
    # The endorsed version names admins without its own author; a member copies the
    # endorsement into a version of its own with a lower counter and other settings
    # (a join token, an open inbound policy), hoping to be walked first and win.
    if first:
        before, real = [], version(ADMIN, [OP], 10, endorse([], [OP], 1))
    else:
        before, real = [FIRST], version(ADMIN, [OP], 10, endorse([A], [OP], 2))
    for author in (WEB, ADMIN):
        copied = version(author, [OP], 5, real.endorsement, node="node-9", policy="DENY")
        replica = replica_with(*before, real, copied)
        assert replica.admins == {OP} and replica.winner("MeshConfig", "default") == real
        assert replica.unendorsed_admin_changes == 1


def test_of_two_endorsed_successors_of_one_epoch_the_lower_rank_wins() -> None:
    to_ops = version(ADMIN, [OP], 5, endorse([A], [OP], 2))
    to_web = version(ADMIN, [W], 6, endorse([A], [W], 2))
    for records in ([FIRST, to_ops, to_web], [to_web, FIRST, to_ops]):
        replica = replica_with(*records)
        assert replica.admins == {OP} and replica.admin_epoch == 2


def test_a_replayed_old_endorsement_is_worthless() -> None:
    a_to_b = version(ADMIN, [OP], 2, endorse([A], [OP], 2))
    b_to_a = version(OPS, [A], 3, endorse([OP], [A], 3))
    replay = version(ADMIN, [OP], 4, a_to_b.endorsement, policy="DENY")
    replica = replica_with(FIRST, a_to_b, b_to_a, replay)
    assert replica.admins == {A} and replica.admin_epoch == 3
    assert replica.winner("MeshConfig", "default") == b_to_a


def test_without_an_anchor_the_walk_is_the_author_chain() -> None:
    unendorsed = version(ADMIN, [W], 2)
    result = walk([FIRST, unendorsed], None)
    assert result.admins == {W} and result.epoch == 0


_POOL = [
    FIRST,
    version(ADMIN, [A, OP], 2, endorse([A], [A, OP], 2)),
    version(OPS, [OP], 3, endorse([A, OP], [OP], 3)),
    version(WEB, [W], 2, node="node-9"),
    version(ADMIN, [W], 4, endorse([A], [W], 2)),
    version(OPS, [OP], 7, policy="DENY"),
    version(WEB, [OP], 1, endorse([A, OP], [OP], 3), node="node-9"),
]


@settings(max_examples=60, deadline=None)
@given(st.permutations(_POOL), st.integers(min_value=1, max_value=len(_POOL)))
def test_the_walk_is_the_same_for_any_delivery_order(order: list[VersionRecord], cut: int) -> None:
    expected = walk(_POOL, ANCHOR)
    replica = anchored("node-r")
    replica.apply_update(crdt_update(*order[:cut]), source="node-x")
    replica.apply_update(crdt_update(*order[cut:]), source="node-y")
    assert (replica.admins, replica.admin_epoch) == (expected.admins, expected.epoch)
    assert replica.winner("MeshConfig", "default") == expected.winners["MeshConfig/default"]
    assert expected.admins == {OP} and expected.epoch == 3


# ---------------------------------------------------------------------------- local edits


def test_a_local_admin_change_needs_a_valid_endorsement() -> None:
    store = anchored("node-1", ADMIN)
    with pytest.raises(EndorsementRequired, match="needs the signer committee") as refused:
        store.apply([mesh_config(A)], now=NOW)
    assert refused.value.status == 503 and store.get("MeshConfig", "default") is None
    h = hash_of(mesh_config(A))
    with pytest.raises(EndorsementRequired, match="changed meanwhile"):
        store.apply([mesh_config(A)], now=NOW, endorsement=endorse([], [A], 2)(h))
    with pytest.raises(EndorsementRequired, match="changed meanwhile"):  # another version
        store.apply([mesh_config(A, policy="DENY")], now=NOW, endorsement=endorse([], [A], 1)(h))
    store.apply([mesh_config(A)], now=NOW, endorsement=endorse([], [A], 1)(h))
    assert store.admins == {A} and store.admin_epoch == 1
    store.apply([mesh_config(A, policy="DENY"), route("r")], now=NOW)  # same set: no endorsement
    with pytest.raises(EndorsementRequired, match="deleting the MeshConfig"):
        store.delete(["MeshConfig/default"], now=NOW)
    peer = anchored("node-2", OPS)
    peer.apply_update(store.full_update(), source="node-1")
    assert peer.admins == {A} and peer.admin_epoch == 1


# ---------------------------------------------------------------------------- records


def test_an_endorsement_travels_in_the_record_and_is_covered_by_its_signature() -> None:
    raw = FIRST.encode()
    assert json.loads(raw)["endorsement"] == FIRST.endorsement.to_wire()  # type: ignore[union-attr]
    assert decode_record(FIRST.map_key, raw)[0] == FIRST
    ROOT.verifier().verify(FIRST)
    swapped = dataclasses.replace(FIRST, endorsement=endorse([], [A], 1, key=OTHER_KEY)(FIRST.hash))
    with pytest.raises(UpdateRefused, match="does not verify"):
        replica_with(swapped)


def test_records_without_an_endorsement_decode_and_verify_as_before() -> None:
    old = ADMIN.signer().sign(record_for(mesh_config(A), lamport=3))
    assert "endorsement" not in json.loads(old.encode())
    assert decode_record(old.map_key, old.encode())[0] == old
    ROOT.verifier().verify(old)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(endorsement={"epoch": 1}),
        lambda d: d.update(endorsement={"epoch": 0, "sig": "00" * 64}),
        lambda d: d.update(endorsement={"epoch": True, "sig": "00" * 64}),
        lambda d: d.update(endorsement={"epoch": 1, "sig": "AB" * 64}),
        lambda d: d.update(endorsement={"epoch": 1, "sig": "00" * 63}),
        lambda d: d.update(endorsement=[1]),
    ],
)
def test_a_malformed_endorsement_is_refused(mutate: Any) -> None:
    data = json.loads(FIRST.encode())
    mutate(data)
    with pytest.raises(ValueError, match="endorsement"):
        decode_record(FIRST.map_key, json.dumps(data))


def test_only_a_signed_meshconfig_record_carries_an_endorsement() -> None:
    r = ADMIN.signer().sign(record_for(route("r")))
    data = json.loads(r.encode())
    data["endorsement"] = FIRST.endorsement.to_wire()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="only a MeshConfig"):
        decode_record(r.map_key, json.dumps(data))
    unsigned = json.loads(record_for(mesh_config(A)).encode())
    unsigned["endorsement"] = FIRST.endorsement.to_wire()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="fields of a version record"):
        decode_record(record_for(mesh_config(A)).map_key, json.dumps(unsigned))


# ---------------------------------------------------------------------------- statements


H = "ab" * 32


def test_a_statement_reads_back_and_is_canonical() -> None:
    message = admin_set_statement(TD, 7, [OP, A], [W, A], version=H)
    parsed = Statement.parse(message)
    assert (parsed.trust_domain, parsed.epoch, parsed.admins) == (TD, 7, {A, W})
    assert parsed.version == H
    assert message == admin_set_statement(TD, 7, [A, OP], [A, W], version=H)
    assert Statement.parse(admin_set_statement(TD, 1, [], [], version=H)).admins == frozenset()


_HEAD = DOMAIN + b"mesh.test\0"
_EPOCH_1 = b"\0" * 7 + b"\1"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"peermesh admin-set v2\0" + b"x" * 80,
        DOMAIN + b"mesh.test",
        _HEAD + b"\0" * 71,
        _HEAD + b"\0" * 8 + b"\0" * 64,  # epoch 0
        _HEAD + _EPOCH_1 + b"\0" * 64 + b"b\na",  # unsorted
        _HEAD + _EPOCH_1 + b"\0" * 64 + b"a\n\na",
        _HEAD + _EPOCH_1 + b"\0" * 64 + b"\xff",
    ],
)
def test_anything_else_is_not_a_statement(message: bytes) -> None:
    with pytest.raises(StatementError):
        Statement.parse(message)


def test_a_journal_written_before_endorsements_loads_in_an_anchored_store(tmp_path: Path) -> None:
    # A dev-CA era (unanchored) store writes admins and a route to disk.
    path = tmp_path / "policy.bin"
    with PolicyStore(
        DiskPersistence(path), node="node-1", signer=ADMIN.signer(), verifier=ROOT.verifier()
    ) as old:
        old.apply([mesh_config(A)], now=NOW)
        old.apply([route("r")], now=NOW)
        assert old.admins == {A}
    # Anchored, the same journal loads; the unendorsed change no longer sets admins.
    with PolicyStore(
        DiskPersistence(path), node="node-1", verifier=ROOT.verifier(), anchor=ANCHOR
    ) as anchored_store:
        assert anchored_store.admins == frozenset() and anchored_store.admin_epoch == 0
        assert anchored_store.unendorsed_admin_changes == 1
        assert anchored_store.get("Route", "r") is not None
    with PolicyStore(DiskPersistence(path), node="node-1", verifier=ROOT.verifier()) as again:
        assert again.admins == {A}
