"""The rules a message must follow in a run: pure checks shared by the machines and the judge.

Each returns the first rule broken, as a reason string, or None.
"""

from __future__ import annotations

from collections.abc import Mapping

from certs.dkg import messages
from certs.dkg.codec import Pairs, pair_map
from certs.dkg.primitives import (
    SEALED_SCALAR_LEN,
    decode_points,
    pok_problem,
    x25519_public_problem,
)
from certs.dkg.roster import Roster
from certs.ed25519_group import Point
from certs.frost import lagrange_coefficient

__all__ = [
    "dealer_commitment",
    "enc_keys_problem",
    "message_problem",
    "repair_commit_problem",
    "repair_deltas_problem",
    "repair_request_problem",
    "repair_sigma_problem",
    "round1_problem",
    "round2_problem",
]


def enc_keys_problem(enc_keys: Pairs, expected: set[int]) -> str | None:
    """Whether ``enc_keys`` holds one valid X25519 public key for each of ``expected``."""
    keys = pair_map(enc_keys, expected, "enc_keys")
    if isinstance(keys, str):
        return keys
    for i, raw in keys.items():
        problem = x25519_public_problem(raw)
        if problem:
            return f"{problem} (for {i})"
    return None


def dealer_commitment(roster: Roster, m: messages.DkgRound1) -> list[Point] | str:
    """The dealer's full commitment vector (refresh: identity constant term prepended)."""
    expected = roster.threshold if roster.purpose == "dkg" else roster.threshold - 1
    if len(m.commitments) != expected:
        return f"{len(m.commitments)} commitments, expected {expected}"
    points = decode_points(m.commitments, "commitment")
    if isinstance(points, str):
        return points
    return points if roster.purpose == "dkg" else [Point.identity(), *points]


def round1_problem(roster: Roster, m: messages.DkgRound1) -> str | None:
    commitment = dealer_commitment(roster, m)
    if isinstance(commitment, str):
        return commitment
    if roster.purpose == "dkg":
        problem = pok_problem(roster.session_id, m.sender, commitment[0], m.proof)
        if problem:
            return problem
    elif m.proof:
        return "a refresh round-one message carries no proof"
    return enc_keys_problem(m.enc_keys, set(roster.members) - {m.sender})


def round2_problem(
    roster: Roster, m: messages.DkgRound2, known: Mapping[int, messages.DkgRound1] | None = None
) -> str | None:
    shares = pair_map(m.shares, set(roster.members) - {m.sender}, "shares")
    if isinstance(shares, str):
        return shares
    if any(len(s) != SEALED_SCALAR_LEN for s in shares.values()):
        return "a sealed share has the wrong length"
    senders = [e.sender for e in m.echo]
    if senders != list(roster.members):
        return "echo does not hold exactly one round-one message per member, in order"
    for e in m.echo:
        if known is not None and known.get(e.sender) == e:
            continue
        if not roster.authentic(e, e.sender):
            return f"echoed round-one message of {e.sender} is not authentic"
    return None


def repair_commit_problem(roster: Roster, m: messages.RepairCommit) -> str | None:
    assert roster.public is not None and roster.target is not None
    if m.sender not in roster.members:
        return "repair commitments from a non-helper"
    helpers = set(roster.members)
    deltas = pair_map(m.delta_commitments, helpers, "delta_commitments")
    if isinstance(deltas, str):
        return deltas
    points = decode_points([deltas[k] for k in sorted(deltas)], "delta commitment")
    if isinstance(points, str):
        return points
    total = Point.identity()
    for p in points:
        total = total + p
    lam = lagrange_coefficient(roster.members, m.sender, roster.target)
    if total != roster.public.verification_share(m.sender) * lam:
        return "delta commitments do not add up to lambda * verification share"
    return enc_keys_problem(m.enc_keys, helpers - {m.sender})


def repair_request_problem(roster: Roster, m: messages.RepairRequest) -> str | None:
    if m.sender != roster.target:
        return "repair request from someone other than the target"
    return enc_keys_problem(m.enc_keys, set(roster.members))


def repair_deltas_problem(roster: Roster, m: messages.RepairDeltas) -> str | None:
    if m.sender not in roster.members:
        return "repair summands from a non-helper"
    deltas = pair_map(m.deltas, set(roster.members) - {m.sender}, "deltas")
    if isinstance(deltas, str):
        return deltas
    if any(len(d) != SEALED_SCALAR_LEN for d in deltas.values()):
        return "a sealed summand has the wrong length"
    return None


def repair_sigma_problem(roster: Roster, m: messages.RepairSigma) -> str | None:
    if m.sender not in roster.members:
        return "repair sum from a non-helper"
    if len(m.sigma) != SEALED_SCALAR_LEN:
        return "sealed sum has the wrong length"
    return None


def message_problem(roster: Roster, m: messages.DkgMessage) -> str | None:
    """The first rule ``m`` breaks for this run's purpose, or None."""
    ok_types: dict[str, tuple[type, ...]] = {
        "dkg": (messages.DkgRound1, messages.DkgRound2),
        "refresh": (messages.DkgRound1, messages.DkgRound2),
        "repair": (
            messages.RepairRequest,
            messages.RepairCommit,
            messages.RepairDeltas,
            messages.RepairSigma,
        ),
    }
    if not isinstance(m, ok_types[roster.purpose]):
        return f"{m.TYPE} message in a {roster.purpose} run"
    if isinstance(m, messages.RepairRequest):
        return repair_request_problem(roster, m)
    if m.sender not in roster.members:
        return f"{m.TYPE} from a non-member"
    if isinstance(m, messages.DkgRound1):
        return round1_problem(roster, m)
    if isinstance(m, messages.DkgRound2):
        return round2_problem(roster, m)
    if isinstance(m, messages.RepairCommit):
        return repair_commit_problem(roster, m)
    if isinstance(m, messages.RepairDeltas):
        return repair_deltas_problem(roster, m)
    if isinstance(m, messages.RepairSigma):
        return repair_sigma_problem(roster, m)
    return "complaints cannot be evidence"
