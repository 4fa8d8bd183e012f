"""The coordinator of one threshold signature: gather t signers, sign, catch cheaters.

Transport-agnostic: ``call(member, method, body)`` reaches a signer over mTLS, over
the bootstrap channel, or in-process for ourselves. The coordinator is never trusted
by signers (they check the TBS themselves); here we only need liveness and to name
a signer whose share does not verify, exclude it and try another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from certs import frost
from peermesh.ca.errors import QuorumError, SignerRefused, SignerUnavailable
from peermesh.ca.messages import CommitReply, SignReply
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.core.wire import WireError

log = logging.getLogger(__name__)

__all__ = [
    "IssuanceResult",
    "QuorumError",
    "SignerCall",
    "SignerRefused",
    "SignerUnavailable",
    "quorum_message",
    "threshold_sign",
]

SignerCall = Callable[[CommitteeMember, str, Any], Awaitable[Any]]
_R = TypeVar("_R")


@dataclass
class IssuanceResult:
    """The aggregated signature and who made it (for logs, metrics and tests)."""

    signature: bytes
    signers: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    attempts: int = 1


def quorum_message(
    threshold: int,
    reachable: Sequence[str],
    unreachable: Sequence[str],
    why: dict[str, str],
    refused: dict[str, str] | None = None,
) -> str:
    """The refusal: '2 of 3 required signers reachable: a, b; unreachable: c, d, e'.

    When reachable signers refused (token, policy), their reasons lead instead: the
    fix is then the request, not the network.
    """
    if refused:
        reasons = sorted(set(refused.values()))
        text = f"refused by {len(refused)} signer(s) ({', '.join(sorted(refused))}): " + " | ".join(
            reasons
        )
        if unreachable:
            text += f"; unreachable: {', '.join(sorted(unreachable))}"
        return text
    names = ", ".join(sorted(reachable)) or "-"
    missing = ", ".join(sorted(unreachable)) or "-"
    text = (
        f"{len(reachable)} of {threshold} required signers reachable: {names};"
        f" unreachable: {missing}"
    )
    details = "; ".join(f"{n}: {why[n]}" for n in sorted(why))
    if details:
        text += f" ({details})"
    return text + ". Start stopped signers or wait for the network to heal, then retry."


async def threshold_sign(
    message: bytes,
    committee: Committee,
    call: SignerCall,
    auth: dict[str, Any],
    *,
    prefer: Sequence[str] = (),
    rng: random.Random | None = None,
) -> IssuanceResult:
    """FROST-sign ``message`` with t members of ``committee``; raise QuorumError if impossible."""
    rng = rng or random.Random()
    t = committee.threshold
    others = [m for m in committee.members if m.node not in prefer]
    rng.shuffle(others)
    pool: list[CommitteeMember] = [m for n in prefer if (m := committee.member(n))] + others
    reachable: list[str] = []  # answered round one at least once
    unreachable: dict[str, str] = {}
    excluded: dict[str, str] = {}
    refused: dict[str, str] = {}
    good: list[CommitteeMember] = []  # answered and not caught cheating, in order
    attempts = 0
    while True:
        attempts += 1
        chosen: dict[str, frost.SigningCommitments] = {}
        candidates = [m for m in good if m.node not in excluded]
        candidates += [
            m
            for m in pool
            if m.node not in unreachable and m.node not in excluded and m not in candidates
        ]
        queue = list(candidates)
        while len(chosen) < t and queue:
            batch, queue = queue[: t - len(chosen)], queue[t - len(chosen) :]
            got = await _round_one(batch, call)
            for member in batch:
                result = got[member.node]
                if isinstance(result, SignerRefused | str):
                    unreachable[member.node] = str(result)
                    continue
                chosen[member.node] = result
                if member.node not in reachable:
                    reachable.append(member.node)
        if len(chosen) < t:
            raise QuorumError(
                quorum_message(
                    t,
                    [n for n in reachable if n not in excluded],
                    [n for n in committee.names() if n not in reachable],
                    {**unreachable, **excluded},
                    refused,
                )
            )
        package = frost.SigningPackage(message, tuple(chosen.values()))
        members = [m for m in candidates if m.node in chosen]
        shares = await _round_two(members, package, auth, call)
        bad = False
        valid: list[frost.SignatureShare] = []
        for member in members:
            share = shares[member.node]
            if isinstance(share, SignerRefused):
                excluded[member.node] = refused[member.node] = str(share)
                bad = True
                continue
            if isinstance(share, str):
                excluded[member.node] = share
                bad = True
                continue
            if share.identifier != member.identifier or not frost.verify_signature_share(
                share, package, committee.public
            ):
                excluded[member.node] = "returned an invalid signature share"
                log.warning(
                    "signer %s returned an invalid signature share; excluding it and retrying",
                    member.node,
                )
                bad = True
                continue
            valid.append(share)
        good = [m for m in members if m.node not in excluded] + [
            m for m in good if m not in members and m.node not in excluded
        ]
        if bad:
            continue
        try:
            signature = frost.aggregate(package, valid, committee.public)
        except frost.InvalidSignatureShares as exc:  # pragma: no cover - shares verified above
            for culprit in exc.culprits:
                member_ = committee.by_id(culprit)
                excluded[member_.node if member_ else str(culprit)] = "invalid signature share"
            continue
        return IssuanceResult(
            signature=signature,
            signers=sorted(chosen),
            excluded=excluded,
            unreachable=unreachable,
            attempts=attempts,
        )


async def _round_one(
    batch: Sequence[CommitteeMember], call: SignerCall
) -> dict[str, frost.SigningCommitments | SignerRefused | str]:
    async def commit(member: CommitteeMember) -> frost.SigningCommitments:
        commitments = CommitReply.from_wire(await call(member, "commit", {})).commitments
        if commitments.identifier != member.identifier:
            raise SignerUnavailable(f"answered for participant {commitments.identifier}")
        return commitments

    return await _ask_each(batch, commit, "commitments")


async def _round_two(
    members: Sequence[CommitteeMember],
    package: frost.SigningPackage,
    auth: dict[str, Any],
    call: SignerCall,
) -> dict[str, frost.SignatureShare | SignerRefused | str]:
    body = {"package": package.to_wire(), "auth": auth}

    async def sign(member: CommitteeMember) -> frost.SignatureShare:
        return SignReply.from_wire(await call(member, "sign", body)).share

    return await _ask_each(members, sign, "signature share")


async def _ask_each(
    members: Sequence[CommitteeMember],
    ask: Callable[[CommitteeMember], Awaitable[_R]],
    what: str,
) -> dict[str, _R | SignerRefused | str]:
    """Ask every member at once: its answer, its refusal, or why it gave neither."""
    out: dict[str, _R | SignerRefused | str] = {}

    async def one(member: CommitteeMember) -> None:
        try:
            out[member.node] = await ask(member)
        except SignerRefused as exc:
            out[member.node] = exc
        except SignerUnavailable as exc:
            out[member.node] = str(exc)
        except WireError as exc:
            out[member.node] = f"malformed {what}: {exc}"

    async with trio.open_nursery() as nursery:
        for member in members:
            nursery.start_soon(one, member)
    return out
