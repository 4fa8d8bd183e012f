"""Which committee may replace ours: the checks before a signer adopts, replaces or drops its share.

I/O-free. A signer's share is the root's only existence, so it is replaced only by a
share that verifies against new commitments for the same group key, and dropped only
when the committee that leaves it out proves (by its own threshold signature) that t
holders of the new shares exist. A committee pushed by an admin, or by anyone else who
can call ``ca/committee/update``, without that proof is refused.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs import frost
from certs.ed25519_group import Point
from peermesh.ca.errors import CaForbidden
from peermesh.ca.state import Committee


def check_shares_consistent(public: frost.PublicKeyPackage) -> None:
    """Refuse verification shares that are not one sharing of the group key.

    Every share must lie on the degree t-1 polynomial (in the exponent) that t of them
    define, and that polynomial's value at 0 must be the group key.
    """
    ids = public.identifiers
    basis = ids[: public.threshold]
    if len(basis) < public.threshold:
        raise CaForbidden("committee has fewer verification shares than its threshold")
    at_zero = Point.identity()
    for j in basis:
        at_zero = at_zero + public.verification_shares[j] * frost.lagrange_coefficient(basis, j, 0)
    if at_zero != public.group_public_key:
        raise CaForbidden("committee's verification shares do not combine to its group key")
    for i in ids[public.threshold :]:
        expected = Point.identity()
        for j in basis:
            expected = expected + public.verification_shares[j] * frost.lagrange_coefficient(
                basis, j, i
            )
        if expected != public.verification_shares[i]:
            raise CaForbidden(f"verification share {i} is not on the committee's polynomial")


def check_own_share(share: frost.SigningKeyShare, public: frost.PublicKeyPackage) -> None:
    """Refuse a new share that does not verify against the new group commitments."""
    if share.group_public_key != public.group_public_key:
        raise CaForbidden("our new share is for another group key")
    if public.verification_shares.get(share.identifier) != share.public_key:
        raise CaForbidden("our new share does not verify against the new verification shares")


def endorsement_valid(committee: Committee) -> bool:
    """Whether ``committee`` carries its own threshold signature under its group key."""
    if committee.endorsement is None:
        return False
    key = Ed25519PublicKey.from_public_bytes(committee.public.group_public_key.to_bytes())
    try:
        key.verify(committee.endorsement, committee.statement())
    except InvalidSignature:
        return False
    return True


def _extends(old: Committee, new: Committee) -> bool:
    """``new`` only adds members to ``old`` (an enrolment): nobody's share changes."""
    if new.threshold != old.threshold:
        return False
    for member in old.members:
        kept = new.member(member.node)
        if (
            kept is None
            or kept.identifier != member.identifier
            or kept.identity_key != member.identity_key
            or kept.service != member.service
            or new.public.verification_shares.get(member.identifier)
            != old.public.verification_shares[member.identifier]
        ):
            return False
    return True


def check_committee_update(old: Committee, new: Committee) -> None:
    """Refuse (CaForbidden) a committee we were sent unless it provably succeeds ``old``.

    Same root and group key, verification shares that are one sharing of that key, and
    either only new members (checkable here: their shares are interpolated from the old
    ones) or the new committee's endorsement (t holders of the *new* shares signed it,
    which they do only after their own refresh verified).
    """
    if new.public.group_public_key != old.public.group_public_key or new.root_der != old.root_der:
        raise CaForbidden("committee update has another group key or root")
    check_shares_consistent(new.public)
    if _extends(old, new):
        return
    if not endorsement_valid(new):
        raise CaForbidden(
            f"committee epoch {new.epoch} removes or re-shares members without the new"
            " committee's threshold signature (no proof the refresh completed)"
        )
