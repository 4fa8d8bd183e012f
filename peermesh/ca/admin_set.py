"""Whether a signer endorses an admin-set change: the sans-IO check before its share.

A coordinator asks the committee to sign an admin-set statement
(:func:`peermesh.policy.anchor.admin_set_statement`) naming the epoch and the new set it
wants. Each signer decides alone, from what it holds: the requester is the identity the
mTLS handshake authenticated (never a field of the request), and must be in the signer's
own replica's current admin set, or, while that set is empty, be a committee member's
node running as that member's service; the signer then rebuilds the statement from its
own trust domain, admin set and epoch and the requested new set and MeshConfig version
(its content hash: what the admin writes besides the admins is the admin's choice), and
signs only those bytes. A signer whose replica is behind or ahead answers no; the
coordinator needs t that agree with it.
"""

from __future__ import annotations

from collections.abc import Collection

from certs.spiffe import SpiffeId
from certs.x509 import TbsRefused
from peermesh.ca.state import Committee
from peermesh.policy.anchor import Statement, StatementError, admin_set_statement


def requester_refusal(
    peer: SpiffeId | str | None,
    node: str | None,
    *,
    admins: Collection[str],
    committee: Committee,
    trust_domain: str,
) -> str | None:
    """Why ``peer`` on ``node`` may not ask for an admin-set change, or None if it may."""
    if peer is None:
        return "an unauthenticated caller may not change the admin set"
    principal = str(peer)
    if admins:
        if principal in admins:
            return None
        return (
            f"{principal} is not in this signer's current admin set ({', '.join(sorted(admins))})"
        )
    member = committee.member(node) if node else None
    if member is not None and principal == str(SpiffeId.for_service(trust_domain, member.service)):
        return None
    return (
        f"{principal} on node {node or '?'} is not a committee member's node, and only one"
        " may set the first admins"
    )


def expected_statement(
    message: object,
    *,
    trust_domain: str,
    admins: Collection[str],
    epoch: int,
) -> bytes:
    """The statement this signer would sign for the request's message; raises
    :class:`TbsRefused` naming the difference when the message is anything else."""
    if not isinstance(message, bytes):
        raise TbsRefused("the signing package has no message")
    try:
        asked = Statement.parse(message)
    except StatementError as exc:
        raise TbsRefused(str(exc)) from None
    if asked.trust_domain != trust_domain:
        raise TbsRefused(
            f"the statement is for trust domain {asked.trust_domain!r}, not {trust_domain!r}"
        )
    if asked.epoch != epoch + 1:
        raise TbsRefused(
            f"the statement asks for admin-set epoch {asked.epoch}, but this signer's admin"
            f" set is at epoch {epoch} (its policy is behind or ahead of the requester's)"
        )
    expected = admin_set_statement(
        trust_domain, epoch + 1, admins, asked.admins, version=asked.version
    )
    if expected != message:
        raise TbsRefused(
            "the statement names another previous admin set than this signer's"
            f" ({', '.join(sorted(admins)) or 'none'})"
        )
    return expected
