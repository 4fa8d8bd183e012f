"""A committee member's side of issuance: round-one commitments and the decision to sign.

Releasing a signature share is a pure decision (:func:`leaf_decision`,
:func:`root_decision`) on (TBS, the requester's authenticated identity, policy, now):
the coordinator is never trusted. Nonces live in a :class:`peermesh.ca.nonces.FileNonceStore`
and are durably marked used before the share is computed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs import frost
from certs.x509 import TbsRefused, check_leaf_tbs, root_common_name

#: The longest leaf a signer ever signs, whatever the coordinator asks for.
DEFAULT_MAX_LEAF_LIFETIME = dt.timedelta(hours=24)
#: Root validity a signer accepts at bootstrap.
MAX_ROOT_LIFETIME = dt.timedelta(days=3660)


@dataclass(frozen=True)
class SigningPolicy:
    """The limits every signer applies."""

    trust_domain: str
    max_leaf_lifetime: dt.timedelta = DEFAULT_MAX_LEAF_LIFETIME


def leaf_decision(
    tbs: bytes, *, identity: str, root: x509.Certificate, policy: SigningPolicy, now: dt.datetime
) -> None:
    """Raise TbsRefused unless ``tbs`` is a leaf for exactly ``identity`` within policy."""
    check_leaf_tbs(
        tbs,
        root=root,
        expected_spiffe_id=identity,
        max_lifetime=policy.max_leaf_lifetime,
        now=now,
    )


def root_decision(
    tbs: bytes, *, group_public_key: bytes, policy: SigningPolicy, now: dt.datetime
) -> None:
    """Raise TbsRefused unless ``tbs`` is the self-issued root for our group key."""
    from certs.x509 import _parse_tbs  # the same strict parser the leaf check uses

    cert = _parse_tbs(tbs)
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey) or key.public_bytes_raw() != group_public_key:
        raise TbsRefused("root subject key is not the committee's group key")
    if cert.issuer != cert.subject:
        raise TbsRefused("a root must be self-issued (issuer == subject)")
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if not cn or cn[0].value != root_common_name(policy.trust_domain):
        raise TbsRefused(f"root subject is not {root_common_name(policy.trust_domain)!r}")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise TbsRefused("root has no BasicConstraints") from None
    if not basic.ca or basic.path_length != 0:
        raise TbsRefused("root must be CA:TRUE with pathlen 0")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > MAX_ROOT_LIFETIME:
        raise TbsRefused(f"root lifetime {lifetime} exceeds {MAX_ROOT_LIFETIME}")
    if cert.not_valid_before_utc > now + dt.timedelta(minutes=5):
        raise TbsRefused("root not_before is in the future")


class Signer:
    """Holds one share and answers the two FROST rounds (sans-IO; the store does the I/O)."""

    def __init__(
        self, share: frost.SigningKeyShare, public: frost.PublicKeyPackage, store: frost.NonceStore
    ) -> None:
        self.share = share
        self.public = public
        self.store = store
        self.shares_released = 0
        self.refusals = 0

    @property
    def identifier(self) -> int:
        return self.share.identifier

    def commit(self) -> frost.SigningCommitments:
        """Round one: fresh nonces persisted, commitments out."""
        return frost.commit(self.share, self.store)

    def _package(self, wire: Any) -> frost.SigningPackage:
        if not isinstance(wire, dict):
            raise TbsRefused("signing package missing")
        try:
            package = frost.SigningPackage.from_wire(wire)
            package.commitment_for(self.identifier)
        except frost.FrostError as exc:
            raise TbsRefused(f"signing package refused: {exc}") from None
        if len(package.identifiers) < self.public.threshold:
            raise TbsRefused(
                f"signing package has {len(package.identifiers)} signers, fewer than the"
                f" threshold {self.public.threshold}"
            )
        return package

    def check_leaf(
        self,
        package_wire: Any,
        *,
        identity: str,
        root: x509.Certificate,
        policy: SigningPolicy,
        now: dt.datetime,
    ) -> frost.SigningPackage:
        """Would :meth:`sign_leaf` sign this? Raises TbsRefused if not; consumes nothing."""
        package = self._package(package_wire)
        try:
            leaf_decision(package.message, identity=identity, root=root, policy=policy, now=now)
        except TbsRefused:
            self.refusals += 1
            raise
        return package

    def sign_leaf(
        self,
        package_wire: Any,
        *,
        identity: str,
        root: x509.Certificate,
        policy: SigningPolicy,
        now: dt.datetime,
    ) -> frost.SignatureShare:
        """Round two for a leaf: check first, then consume the nonce and sign."""
        package = self.check_leaf(
            package_wire, identity=identity, root=root, policy=policy, now=now
        )
        return self.sign_checked(package)

    def sign_root(
        self, package_wire: Any, *, policy: SigningPolicy, now: dt.datetime
    ) -> frost.SignatureShare:
        package = self._package(package_wire)
        root_decision(
            package.message,
            group_public_key=self.public.group_public_key.to_bytes(),
            policy=policy,
            now=now,
        )
        return self.sign_checked(package)

    def sign_checked(self, package: frost.SigningPackage) -> frost.SignatureShare:
        """Round two for a package :meth:`check_leaf` (or the root check) accepted."""
        try:
            share = frost.sign(self.share, package, self.store)
        except frost.FrostError as exc:
            raise TbsRefused(f"cannot sign: {exc}") from None
        self.shares_released += 1
        return share
