"""Judging a complaint from its evidence alone: the accused is at fault, or the complainer is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs.dkg.codec import Pairs
from certs.dkg.errors import DkgError, DkgMessageRejected, Verdict
from certs.dkg.messages import (
    KIND_BAD_SHARE,
    KIND_EQUIVOCATION,
    KIND_INVALID,
    Complaint,
    DkgMessage,
    DkgRound1,
    DkgRound2,
    RepairCommit,
    RepairDeltas,
    RepairRequest,
    RepairSigma,
)
from certs.dkg.primitives import open_scalar
from certs.dkg.roster import Roster
from certs.dkg.rules import (
    dealer_commitment,
    message_problem,
    repair_commit_problem,
    repair_deltas_problem,
    repair_sigma_problem,
    round1_problem,
    round2_problem,
)
from certs.ed25519_group import GroupError, Point
from certs.frost import FrostError, vss_verify

__all__ = ["verify_complaint"]


def verify_complaint(complaint: Complaint, roster: Roster) -> Verdict:
    """Judge a complaint from its evidence alone: who is at fault, the accused or the complainer.

    Raises :class:`DkgMessageRejected` if the complaint itself is not authentic (then
    nobody can be blamed for it).
    """
    if not roster.authentic(complaint):
        raise DkgMessageRejected("complaint is not authentic")
    complainer, accused = complaint.sender, complaint.accused
    if accused == complainer or accused not in roster.identity_keys:
        return Verdict(complainer, "complaint names no other participant of this run")
    try:
        reason = _judge(complaint, roster)
    except (DkgError, FrostError, GroupError, ValueError, KeyError) as exc:
        return Verdict(complainer, f"complaint evidence is malformed: {exc}")
    if reason is None:
        return Verdict(complainer, f"unfounded {complaint.kind} complaint against {accused}")
    return Verdict(accused, reason)


def _authentic_all(roster: Roster, evidence: Sequence[DkgMessage], sender: int) -> bool:
    return all(roster.authentic(m, sender) for m in evidence)


def _judge(c: Complaint, roster: Roster) -> str | None:
    """Reason the accused is at fault, or None if the complaint is unfounded."""
    ev = c.evidence
    if c.kind == KIND_INVALID:
        if len(ev) != 1 or not roster.authentic(ev[0], c.accused):
            return None
        return message_problem(roster, ev[0])
    if c.kind == KIND_EQUIVOCATION:
        if len(ev) != 2 or not _authentic_all(roster, ev, c.accused):
            return None
        if type(ev[0]) is type(ev[1]) and ev[0] != ev[1]:
            return f"signed two different {ev[0].TYPE} messages"
        return None
    if c.kind == KIND_BAD_SHARE:
        if roster.purpose == "repair":
            if ev and isinstance(ev[0], RepairSigma):
                return _judge_bad_sigma(c, roster)
            return _judge_bad_delta(c, roster)
        return _judge_bad_dkg_share(c, roster)
    return None


def _revealed_matches(c: Complaint, published: Pairs) -> bool:
    keys = dict(published)
    if len(c.revealed_key) != 32 or c.accused not in keys:
        return False
    derived = X25519PrivateKey.from_private_bytes(c.revealed_key).public_key().public_bytes_raw()
    return derived == keys[c.accused]


_Committed = TypeVar("_Committed", DkgRound1, RepairCommit)
_Sealed = TypeVar("_Sealed", DkgRound2, RepairDeltas)


def _sealed_evidence(
    c: Complaint, roster: Roster, committed: type[_Committed], sealed: type[_Sealed]
) -> tuple[_Committed, _Sealed] | None:
    """The accused's commitments and sealed values from a bad-share complaint's evidence, or
    None unless the evidence is those two signed by the accused plus the complainer's own
    commitments, whose published key the revealed secret matches."""
    if len(c.evidence) != 3:
        return None
    first, second, own = c.evidence
    if not (
        isinstance(first, committed)
        and isinstance(second, sealed)
        and isinstance(own, committed)
        and _authentic_all(roster, (first, second), c.accused)
        and roster.authentic(own, c.sender)
        and _revealed_matches(c, own.enc_keys)
    ):
        return None
    return first, second


def _judge_bad_dkg_share(c: Complaint, roster: Roster) -> str | None:
    evidence = _sealed_evidence(c, roster, DkgRound1, DkgRound2)
    if evidence is None:
        return None
    r1, r2 = evidence
    problem = round1_problem(roster, r1) or round2_problem(roster, r2)
    if problem:
        return problem
    sealed = dict(r2.shares)[c.sender]
    share = open_scalar(
        roster.purpose, roster.session_id, c.accused, c.sender, c.revealed_key, sealed
    )
    if isinstance(share, str):
        return share
    commitment = dealer_commitment(roster, r1)
    assert not isinstance(commitment, str)
    if not vss_verify(c.sender, share, commitment):
        return f"share for {c.sender} does not match the dealer's commitments"
    return None


def _judge_bad_delta(c: Complaint, roster: Roster) -> str | None:
    evidence = _sealed_evidence(c, roster, RepairCommit, RepairDeltas)
    if evidence is None:
        return None
    commit, deltas = evidence
    problem = repair_commit_problem(roster, commit) or repair_deltas_problem(roster, deltas)
    if problem:
        return problem
    delta = open_scalar(
        "repair",
        roster.session_id,
        c.accused,
        c.sender,
        c.revealed_key,
        dict(deltas.deltas)[c.sender],
    )
    if isinstance(delta, str):
        return delta
    expected = Point.from_bytes(dict(commit.delta_commitments)[c.sender])
    if Point.base_mul(delta) != expected:
        return f"summand for {c.sender} does not match its commitment"
    return None


def _judge_bad_sigma(c: Complaint, roster: Roster) -> str | None:
    sigma_msg, request, *commits = c.evidence
    if not (
        isinstance(sigma_msg, RepairSigma)
        and isinstance(request, RepairRequest)
        and roster.authentic(sigma_msg, c.accused)
        and roster.authentic(request, c.sender)
        and c.sender == roster.target
        and _revealed_matches(c, request.enc_keys)
        and sorted(m.sender for m in commits) == list(roster.members)
        and all(isinstance(m, RepairCommit) and roster.authentic(m) for m in commits)
    ):
        return None
    expected = Point.identity()
    for m in commits:
        assert isinstance(m, RepairCommit)
        if repair_commit_problem(roster, m):
            return None  # a bad commitment is its author's fault, not the accused's
        expected = expected + Point.from_bytes(dict(m.delta_commitments)[c.accused])
    if repair_sigma_problem(roster, sigma_msg):
        return repair_sigma_problem(roster, sigma_msg)
    sigma = open_scalar(
        "repair", roster.session_id, c.accused, c.sender, c.revealed_key, sigma_msg.sigma
    )
    if isinstance(sigma, str):
        return sigma
    if Point.base_mul(sigma) != expected:
        return "sum sent to the target does not match the committed summands"
    return None
