"""DKG with proofs of knowledge, proactive refresh and share repair: properties and cheaters."""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable, Mapping, Sequence

import msgpack
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import frost
from certs.dkg import (
    Complaint,
    DkgAborted,
    DkgError,
    DkgMessage,
    DkgMessageRejected,
    DkgParticipant,
    DkgRound1,
    DkgRound2,
    RepairCommit,
    RepairDeltas,
    RepairHelper,
    RepairSigma,
    RepairTarget,
    Roster,
    message_from_wire,
    verify_complaint,
)
from certs.ed25519_group import Point, Scalar
from certs.frost import MemoryNonceStore, PublicKeyPackage, SigningKeyShare, SigningPackage

Machine = DkgParticipant | RepairHelper | RepairTarget
Tamper = Callable[[DkgMessage, int], DkgMessage]


def _identities(ids: Sequence[int]) -> tuple[dict[int, Ed25519PrivateKey], dict[int, bytes]]:
    keys = {i: Ed25519PrivateKey.generate() for i in ids}
    return keys, {i: k.public_key().public_bytes_raw() for i, k in keys.items()}


def _pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _run(
    machines: Mapping[int, Machine],
    tamper: Tamper | None = None,
    after_start: Callable[[], None] | None = None,
    order: random.Random | None = None,
) -> list[DkgMessage]:
    """An in-memory broadcast network: every message goes to every other machine.

    With ``order``, pending messages are delivered in a random order (reordering).
    """
    queue: list[DkgMessage] = []
    for machine in machines.values():
        queue.extend(machine.start())
    if after_start:
        after_start()
    log: list[DkgMessage] = []
    while queue:
        message = queue.pop(order.randrange(len(queue)) if order else 0)
        log.append(message)
        for i, machine in machines.items():
            if i != message.sender:
                delivered = tamper(message, i) if tamper else message
                queue.extend(machine.receive(delivered))
    return log


def _dkg(
    n: int, t: int, tamper: Tamper | None = None, order: random.Random | None = None
) -> tuple[Roster, dict[int, Ed25519PrivateKey], dict[int, DkgParticipant], list[DkgMessage]]:
    idk, pubs = _identities(range(1, n + 1))
    roster = Roster.for_dkg(secrets.token_bytes(32), t, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    log = _run(machines, tamper, order=order)
    return roster, idk, machines, log


def _sign(keys: Mapping[int, SigningKeyShare], signers: Sequence[int], message: bytes) -> bytes:
    """FROST signature by ``signers`` with no verification (so invalid results are visible)."""
    store = MemoryNonceStore()
    package = SigningPackage(message, tuple(frost.commit(keys[i], store) for i in signers))
    shares = [frost.sign(keys[i], package, store) for i in signers]
    return frost.aggregate_unverified(package, shares, keys[signers[0]].group_public_key)


def _valid(group_key: Point, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(group_key.to_bytes()).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _interpolate(points: Mapping[int, Scalar], x: int) -> Scalar:
    """Test-only reconstruction f(x) from t shares (never done by the library)."""
    ids = list(points)
    total = Scalar.ZERO
    for i in ids:
        total = total + points[i] * frost.lagrange_coefficient(ids, i, x)
    return total


def _resign(
    message: DkgMessage, purpose: str, key: Ed25519PrivateKey, **changes: object
) -> DkgMessage:
    changed: DkgMessage = dataclasses.replace(message, **changes)  # type: ignore[arg-type]
    signed: DkgMessage = changed.signed(purpose, key)
    return signed


def _flip(sealed: bytes) -> bytes:
    return sealed[:-1] + bytes([sealed[-1] ^ 1])


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@st.composite
def _n_t(draw: st.DrawFn, max_n: int = 7) -> tuple[int, int]:
    n = draw(st.integers(2, max_n))
    return n, draw(st.integers(2, n))


@settings(max_examples=8, deadline=None)
@given(_n_t(), st.randoms(use_true_random=False))
def test_dkg_gives_every_participant_the_same_group_key_in_any_delivery_order(
    case: tuple[int, int], rnd: random.Random
) -> None:
    n, t = case
    _, _, machines, _ = _dkg(n, t, order=rnd)
    outputs = {i: m.result() for i, m in machines.items()}
    publics = {o.public.to_wire()["group_public_key"] for o in outputs.values()}
    assert len(publics) == 1
    assert len({o.transcript_hash for o in outputs.values()}) == 1
    first = outputs[1].public
    assert all(o.public == first for o in outputs.values())
    for i, o in outputs.items():
        assert o.key_share.public_key == first.verification_share(i)
    keys = {i: o.key_share for i, o in outputs.items()}
    signers = sorted(rnd.sample(range(1, n + 1), t))
    assert _valid(first.group_public_key, b"msg", _sign(keys, signers, b"msg"))
    assert not _valid(first.group_public_key, b"msg", _sign(keys, signers[:-1], b"msg"))


@settings(max_examples=6, deadline=None)
@given(_n_t(max_n=6), st.randoms(use_true_random=False))
def test_refresh_keeps_the_group_key_and_old_shares_stop_combining(
    case: tuple[int, int], rnd: random.Random
) -> None:
    n, t = case
    _, idk, machines, _ = _dkg(n, t)
    old = {i: m.result().key_share for i, m in machines.items()}
    public = machines[1].result().public

    # Refresh among a random subset of at least t members (the others are removed).
    members = sorted(rnd.sample(range(1, n + 1), rnd.randint(t, n)))
    roster = Roster.for_refresh(secrets.token_bytes(32), public, {i: _pub(idk[i]) for i in members})
    refreshed = {i: DkgParticipant(roster, i, idk[i], key_share=old[i]) for i in members}
    _run(refreshed)
    new = {i: m.result().key_share for i, m in refreshed.items()}
    new_public = refreshed[members[0]].result().public
    assert new_public.group_public_key == public.group_public_key
    assert set(new_public.identifiers) == set(members)
    assert all(new[i].secret != old[i].secret for i in members)

    signers = sorted(rnd.sample(members, t))
    assert _valid(public.group_public_key, b"m", _sign(new, signers, b"m"))
    mixed = dict(new)
    mixed[signers[0]] = old[signers[0]]
    assert not _valid(public.group_public_key, b"m", _sign(mixed, signers, b"m"))
    with pytest.raises(frost.InvalidSignatureShares) as err:
        store = MemoryNonceStore()
        package = SigningPackage(b"m", tuple(frost.commit(mixed[i], store) for i in signers))
        frost.aggregate(
            package, [frost.sign(mixed[i], package, store) for i in signers], new_public
        )
    assert err.value.culprits == (signers[0],)


def _repair(
    public: PublicKeyPackage,
    keys: Mapping[int, SigningKeyShare],
    idk: Mapping[int, Ed25519PrivateKey],
    helpers: Sequence[int],
    target: int,
    target_key: Ed25519PrivateKey,
    tamper: Tamper | None = None,
    order: random.Random | None = None,
) -> tuple[Roster, dict[int, Machine], list[DkgMessage]]:
    pubs = {i: _pub(idk[i]) for i in helpers}
    pubs[target] = _pub(target_key)
    roster = Roster.for_repair(secrets.token_bytes(32), public, target, pubs)
    machines: dict[int, Machine] = {i: RepairHelper(roster, keys[i], idk[i]) for i in helpers}
    machines[target] = RepairTarget(roster, target_key)
    return roster, machines, _run(machines, tamper, order=order)


@settings(max_examples=6, deadline=None)
@given(_n_t(max_n=6), st.randoms(use_true_random=False))
def test_repair_gives_exactly_the_old_share_and_enrols_new_members(
    case: tuple[int, int], rnd: random.Random
) -> None:
    n, t = case
    if t == n:
        n += 1  # repair needs t helpers besides the target
    _, idk, machines, _ = _dkg(n, t)
    keys = {i: m.result().key_share for i, m in machines.items()}
    public = machines[1].result().public

    # Recovery: participant `lost` forgot its share; t helpers (not including it) rebuild it.
    lost = rnd.randint(1, n)
    helpers = sorted(rnd.sample([i for i in range(1, n + 1) if i != lost], t))
    _, repaired, log = _repair(public, keys, idk, helpers, lost, idk[lost], order=rnd)
    target = repaired[lost]
    assert isinstance(target, RepairTarget)
    out = target.result()
    assert out.key_share.secret == keys[lost].secret
    assert out.public == public
    assert not any(isinstance(m, Complaint) for m in log)
    assert all(h.done for i, h in repaired.items() if i != lost)

    # Enrolment: a brand-new participant n+1 gets f(n+1) and can sign with t-1 others.
    newcomer = Ed25519PrivateKey.generate()
    _, enrolled, _ = _repair(public, keys, idk, helpers, n + 1, newcomer)
    new_target = enrolled[n + 1]
    assert isinstance(new_target, RepairTarget)
    new_out = new_target.result()
    expected = _interpolate({i: keys[i].secret for i in helpers}, n + 1)
    assert new_out.key_share.secret == expected
    all_keys = {**keys, n + 1: new_out.key_share}
    signers = [n + 1, *helpers[: t - 1]]
    assert _valid(public.group_public_key, b"x", _sign(all_keys, sorted(signers), b"x"))


# --------------------------------------------------------------------------------------
# Cheaters are named, with evidence anyone can check
# --------------------------------------------------------------------------------------


def _complaints(log: Sequence[DkgMessage]) -> list[Complaint]:
    return [m for m in log if isinstance(m, Complaint)]


def _assert_everyone_names(
    machines: Mapping[int, Machine], honest: Sequence[int], culprit: int
) -> None:
    for i in honest:
        with pytest.raises(DkgAborted) as err:
            machines[i].result()
        assert err.value.culprits == (culprit,)


def test_bad_proof_of_knowledge_is_named() -> None:
    idk: dict[int, Ed25519PrivateKey] = {}

    def tamper(m: DkgMessage, _to: int) -> DkgMessage:
        if isinstance(m, DkgRound1) and m.sender == 3:
            forged_mu = Scalar.from_bytes(m.proof[32:]) + Scalar.ONE
            return _resign(m, "dkg", idk[3], proof=m.proof[:32] + forged_mu.to_bytes())
        return m

    ids, pubs = _identities(range(1, 6))
    idk.update(ids)
    roster = Roster.for_dkg(secrets.token_bytes(32), 3, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    log = _run(machines, tamper)
    complaints = _complaints(log)
    assert complaints
    for c in complaints:
        wire = msgpack.unpackb(msgpack.packb(c.to_wire()))
        again = message_from_wire(wire)
        assert isinstance(again, Complaint)
        verdict = verify_complaint(again, roster)
        assert verdict.culprit == 3
        assert verdict.reason == "proof of knowledge does not verify"
    _assert_everyone_names(machines, [1, 2, 4, 5], 3)
    with pytest.raises(DkgAborted, match="participant 3 is at fault: proof of knowledge"):
        machines[1].result()


def test_corrupted_encrypted_share_is_named() -> None:
    idk: dict[int, Ed25519PrivateKey] = {}

    def tamper(m: DkgMessage, _to: int) -> DkgMessage:
        if isinstance(m, DkgRound2) and m.sender == 2:
            shares = tuple((j, _flip(s) if j == 4 else s) for j, s in m.shares)
            return _resign(m, "dkg", idk[2], shares=shares)
        return m

    ids, pubs = _identities(range(1, 6))
    idk.update(ids)
    roster = Roster.for_dkg(secrets.token_bytes(32), 3, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    log = _run(machines, tamper)
    (complaint,) = _complaints(log)
    assert complaint.sender == 4 and complaint.accused == 2 and complaint.kind == "bad-share"
    verdict = verify_complaint(complaint, roster)
    assert (verdict.culprit, verdict.reason) == (2, "value sealed for 4 does not decrypt")
    _assert_everyone_names(machines, [1, 3, 4, 5], 2)


def test_share_inconsistent_with_commitments_is_named() -> None:
    idk, pubs = _identities(range(1, 5))
    roster = Roster.for_dkg(secrets.token_bytes(32), 2, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    queue = [m for mach in machines.values() for m in mach.start()]
    # Dealer 2 deals shares from a different polynomial than it committed to.
    machines[2]._coefficients[1] = machines[2]._coefficients[1] + Scalar.ONE
    while queue:
        message = queue.pop(0)
        for i, mach in machines.items():
            if i == message.sender:
                continue
            try:
                queue.extend(mach.receive(message))
            except DkgError as exc:  # only the cheater trips over its own inconsistency
                assert i == 2 and "internal error" in str(exc)
    for i in (1, 3, 4):
        with pytest.raises(DkgAborted) as err:
            machines[i].result()
        assert err.value.culprits == (2,)
        assert "does not match the dealer's commitments" in str(err.value)


def test_false_complaint_names_the_complainer() -> None:
    idk, pubs = _identities(range(1, 5))
    roster = Roster.for_dkg(secrets.token_bytes(32), 3, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    captured: dict[int, bytes] = {}
    log = _run(machines, after_start=lambda: captured.update(machines[1]._enc_secrets))
    assert machines[1].done and machines[1]._enc_secrets == {}  # forgotten once finished
    r1 = {m.sender: m for m in log if isinstance(m, DkgRound1)}
    r2 = {m.sender: m for m in log if isinstance(m, DkgRound2)}
    honest_key = captured[2]

    def complaint(kind: str, evidence: Sequence[DkgMessage], key: bytes = b"") -> Complaint:
        c = Complaint(roster.session_id, 1, 2, kind, tuple(evidence), key)
        return c.signed("dkg", idk[1])

    v = verify_complaint(complaint("bad-share", [r1[2], r2[2], r1[1]], honest_key), roster)
    assert (v.culprit, v.reason) == (1, "unfounded bad-share complaint against 2")
    v = verify_complaint(complaint("bad-share", [r1[2], r2[2], r1[1]], bytes(32)), roster)
    assert v.culprit == 1
    v = verify_complaint(complaint("invalid-message", [r1[2]]), roster)
    assert (v.culprit, v.reason) == (1, "unfounded invalid-message complaint against 2")
    # Evidence not signed by the accused proves nothing against it.
    forged = _resign(r1[2], "dkg", idk[1], proof=b"")
    assert verify_complaint(complaint("invalid-message", [forged]), roster).culprit == 1
    # A complaint that is itself not authentic blames nobody.
    unsigned = Complaint(
        roster.session_id, 1, 2, "invalid-message", (r1[2],), b"", signature=bytes(64)
    )
    with pytest.raises(DkgMessageRejected, match="not authentic"):
        verify_complaint(unsigned, roster)


def test_equivocating_dealer_is_named() -> None:
    idk, pubs = _identities(range(1, 6))
    roster = Roster.for_dkg(secrets.token_bytes(32), 3, pubs)
    machines = {i: DkgParticipant(roster, i, idk[i]) for i in pubs}
    # Participant 5 shows participants 3 and 4 a different (validly signed) round one.
    (alternative,) = DkgParticipant(roster, 5, idk[5]).start()

    def tamper(m: DkgMessage, to: int) -> DkgMessage:
        if isinstance(m, DkgRound1) and m.sender == 5 and to in (3, 4):
            return alternative
        return m

    log = _run(machines, tamper)
    verdicts = {verify_complaint(c, roster) for c in _complaints(log)}
    assert {v.culprit for v in verdicts} == {5}
    assert any(v.reason == "signed two different dkg-round1 messages" for v in verdicts)
    _assert_everyone_names(machines, [1, 2, 3, 4], 5)


def test_unauthenticated_message_is_rejected_and_blames_nobody() -> None:
    idk, pubs = _identities(range(1, 4))
    roster = Roster.for_dkg(secrets.token_bytes(32), 2, pubs)
    a = DkgParticipant(roster, 1, idk[1])
    b = DkgParticipant(roster, 2, idk[2])
    a.start()
    (round1,) = b.start()
    forged = round1.signed("dkg", idk[3])  # claims to come from 2, signed by 3
    with pytest.raises(DkgMessageRejected, match="not authentic"):
        a.receive(forged)
    other_session = Roster.for_dkg(secrets.token_bytes(32), 2, pubs)
    with pytest.raises(DkgMessageRejected):
        DkgParticipant(other_session, 1, idk[1]).receive(round1)
    assert not a.aborted
    assert a.receive(round1) == []  # still waiting for participant 3


def test_every_message_round_trips_through_msgpack() -> None:
    roster, _, machines, log = _dkg(3, 2)
    assert all(m.done for m in machines.values())
    for message in log:
        packed = msgpack.packb(message.to_wire())
        again = message_from_wire(msgpack.unpackb(packed))
        assert again == message
        assert type(message).from_wire(msgpack.unpackb(packed)) == message
        assert roster.authentic(again)
    with pytest.raises(DkgMessageRejected, match="expected a dkg-round2 message"):
        DkgRound2.from_wire(log[0].to_wire())
    with pytest.raises(DkgMessageRejected, match="unknown message type"):
        message_from_wire({"type": "nope"})
    with pytest.raises(DkgMessageRejected, match="expected bytes"):
        message_from_wire({**log[0].to_wire(), "proof": "text"})


def test_roster_validation() -> None:
    _, pubs = _identities(range(1, 4))
    with pytest.raises(DkgError, match=r"need 2 <= t <= n"):
        Roster.for_dkg(secrets.token_bytes(32), 1, pubs)
    with pytest.raises(DkgError, match=r"need 2 <= t <= n"):
        Roster.for_dkg(secrets.token_bytes(32), 4, pubs)
    with pytest.raises(DkgError, match="session id"):
        Roster.for_dkg(b"short", 2, pubs)
    _, public = frost.trusted_dealer_keygen(2, 2)
    with pytest.raises(DkgError, match=r"participants \[3\] hold no share"):
        Roster.for_refresh(secrets.token_bytes(32), public, pubs)


# --------------------------------------------------------------------------------------
# Repair cheaters
# --------------------------------------------------------------------------------------


def _group(
    n: int, t: int
) -> tuple[PublicKeyPackage, dict[int, SigningKeyShare], dict[int, Ed25519PrivateKey]]:
    _, idk, machines, _ = _dkg(n, t)
    return (
        machines[1].result().public,
        {i: m.result().key_share for i, m in machines.items()},
        idk,
    )


def test_repair_corrupted_summand_is_named() -> None:
    public, keys, idk = _group(4, 3)

    def tamper(m: DkgMessage, _to: int) -> DkgMessage:
        if isinstance(m, RepairDeltas) and m.sender == 1:
            deltas = tuple((k, _flip(d) if k == 3 else d) for k, d in m.deltas)
            return _resign(m, "repair", idk[1], deltas=deltas)
        return m

    roster, machines, log = _repair(public, keys, idk, [1, 2, 3], 4, idk[4], tamper)
    (complaint,) = _complaints(log)
    verdict = verify_complaint(complaint, roster)
    assert (verdict.culprit, verdict.reason) == (1, "value sealed for 3 does not decrypt")
    _assert_everyone_names(machines, [2, 3, 4], 1)


def test_repair_wrong_sum_to_target_is_named() -> None:
    public, keys, idk = _group(4, 3)
    pubs = {i: _pub(idk[i]) for i in (1, 2, 3, 4)}
    roster = Roster.for_repair(secrets.token_bytes(32), public, 4, pubs)
    machines: dict[int, Machine] = {i: RepairHelper(roster, keys[i], idk[i]) for i in (1, 2, 3)}
    machines[4] = RepairTarget(roster, idk[4])
    queue = [m for mach in machines.values() for m in mach.start()]
    cheat = machines[2]
    assert isinstance(cheat, RepairHelper)
    cheat._received[2] = cheat._received[2] + Scalar.ONE  # forwards a wrong sum
    while queue:
        message = queue.pop(0)
        for i, mach in machines.items():
            if i != message.sender:
                for reply in mach.receive(message):
                    queue.append(reply)
                    if isinstance(reply, Complaint):
                        verdict = verify_complaint(reply, roster)
                        assert verdict.culprit == 2
                        assert verdict.reason == (
                            "sum sent to the target does not match the committed summands"
                        )
    with pytest.raises(DkgAborted) as err:
        machines[4].result()
    assert err.value.culprits == (2,)


def test_repair_commitments_that_do_not_add_up_are_named() -> None:
    public, keys, idk = _group(4, 2)
    stray = Point.base_mul(Scalar.from_int(99)).to_bytes()

    def tamper(m: DkgMessage, _to: int) -> DkgMessage:
        if isinstance(m, RepairCommit) and m.sender == 3:
            commitments = ((m.delta_commitments[0][0], stray), *m.delta_commitments[1:])
            return _resign(m, "repair", idk[3], delta_commitments=commitments)
        return m

    roster, machines, log = _repair(public, keys, idk, [1, 3], 2, idk[2], tamper)
    verdicts = {verify_complaint(c, roster) for c in _complaints(log)}
    assert {v.culprit for v in verdicts} == {3}
    assert {v.reason for v in verdicts} == {
        "delta commitments do not add up to lambda * verification share"
    }
    _assert_everyone_names(machines, [1, 2], 3)
    assert not any(isinstance(m, RepairSigma) for m in log)
