"""A committee member's side of issuance: round-one commitments and the decision to sign.

Releasing a signature share is a pure decision (:func:`leaf_decision`,
:func:`root_decision`) on (TBS, the requester's authenticated identity, policy, now):
the coordinator is never trusted. A signer signs only bytes it built itself: the
coordinator's TBS contributes the subject key, its issuance minute and the lifetime;
everything else (identity, node name, subject, serial, extensions) comes from the
signer's own :func:`leaf_template`, and the two must be byte-identical (as SPIFFE's
server and istiod build the certificate from a CSR's key, never from its contents).
Nonces live in a :class:`peermesh.ca.nonces.FileNonceStore` and are durably marked used
before the share is computed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, Unpack

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs import frost
from certs.spiffe import validate_node_name
from certs.x509 import (
    TbsRefused,
    X509Error,
    _parse_tbs,
    build_leaf_tbs,
    check_leaf_tbs,
    leaf_serial,
    root_common_name,
)

#: The longest leaf a signer ever signs, whatever the coordinator asks for.
DEFAULT_MAX_LEAF_LIFETIME = dt.timedelta(hours=24)
#: Root validity a signer accepts at bootstrap.
MAX_ROOT_LIFETIME = dt.timedelta(days=3660)
#: notBefore is this far before the issuance minute (verifiers whose clock is behind
#: still accept the leaf), and a signer refuses a coordinator whose clock is further off.
SKEW_ALLOWANCE = dt.timedelta(minutes=1)
#: Issuance times are rounded down to this, so signers agree on the bytes.
TIME_STEP = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class SigningPolicy:
    """The limits every signer applies."""

    trust_domain: str
    max_leaf_lifetime: dt.timedelta = DEFAULT_MAX_LEAF_LIFETIME


class LeafRequest(TypedDict):
    """Who asks for a leaf and under which rules: what :func:`leaf_decision` judges by."""

    identity: str
    root: x509.Certificate
    policy: SigningPolicy
    now: dt.datetime
    node_name: NotRequired[str | None]


def issue_minute(now: dt.datetime) -> dt.datetime:
    """``now`` rounded down to :data:`TIME_STEP` (the time a leaf is issued at)."""
    step = int(TIME_STEP.total_seconds())
    return dt.datetime.fromtimestamp(int(now.timestamp()) // step * step, dt.UTC)


def leaf_template(
    subject_key: Ed25519PublicKey,
    *,
    identity: str,
    node_name: str,
    root: x509.Certificate,
    issued_at: dt.datetime,
    lifetime: dt.timedelta,
) -> bytes:
    """The one TBS a signer signs for these inputs (deterministic: same inputs, same bytes).

    notBefore = the issuance minute minus :data:`SKEW_ALLOWANCE`, notAfter = notBefore +
    lifetime; the node name is the one DNS SAN; the serial is derived from the rest.
    """
    issued = issue_minute(issued_at)
    not_before = issued - SKEW_ALLOWANCE
    not_after = not_before + dt.timedelta(seconds=int(lifetime.total_seconds()))
    serial = leaf_serial(subject_key.public_bytes_raw(), identity, node_name, not_before, not_after)
    return build_leaf_tbs(
        subject_key, identity, node_name, root, not_before, not_after, serial=serial
    )


def _first_difference(offered: x509.Certificate, built: x509.Certificate) -> str:
    """Which field of the coordinator's TBS is not the template's (for the refusal)."""
    if offered.subject != built.subject:
        return f"subject {offered.subject.rfc4514_string()!r}"
    if offered.serial_number != built.serial_number:
        return "serial number (not derived from the certificate's contents)"
    mine = {e.oid.dotted_string: e for e in built.extensions}
    theirs = {e.oid.dotted_string: e for e in offered.extensions}
    for oid in sorted(set(mine) | set(theirs)):
        if oid not in mine:
            return f"extra extension {oid}"
        if oid not in theirs:
            return f"missing extension {oid}"
        if mine[oid] != theirs[oid]:
            return f"extension {theirs[oid].oid._name} ({oid})"
    return "encoding"


def leaf_decision(
    tbs: bytes,
    *,
    identity: str,
    root: x509.Certificate,
    policy: SigningPolicy,
    now: dt.datetime,
    node_name: str | None = None,
) -> None:
    """Raise TbsRefused unless ``tbs`` is the template's leaf for ``identity`` on ``node_name``.

    ``node_name`` is the node the requester authenticated as (its certificate's DNS SAN);
    None only for a join, where the token allows the service and the joiner names its node.
    """
    check_leaf_tbs(
        tbs,
        root=root,
        expected_spiffe_id=identity,
        max_lifetime=policy.max_leaf_lifetime,
        now=now,
    )
    offered = _parse_tbs(tbs)
    issued = offered.not_valid_before_utc + SKEW_ALLOWANCE
    if abs(now - issued) > SKEW_ALLOWANCE + TIME_STEP:
        raise TbsRefused(
            f"clock skew: this signer's clock says {now.isoformat(timespec='seconds')}, the"
            f" coordinator's {issued.isoformat(timespec='seconds')} (more than"
            f" {SKEW_ALLOWANCE} apart); sync the clocks (NTP) and retry"
        )
    if node_name is None:
        dns = offered.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
        if len(dns) != 1:
            raise TbsRefused(f"expected exactly one DNS SAN (the node name), found {len(dns)}")
        try:
            node_name = validate_node_name(dns[0])
        except ValueError as exc:
            raise TbsRefused(f"DNS SAN is not a node name: {exc}") from None
    key = offered.public_key()
    assert isinstance(key, Ed25519PublicKey)  # check_leaf_tbs refused anything else
    lifetime = offered.not_valid_after_utc - offered.not_valid_before_utc
    try:
        built = leaf_template(
            key,
            identity=identity,
            node_name=node_name,
            root=root,
            issued_at=issued,
            lifetime=lifetime,
        )
    except X509Error as exc:
        raise TbsRefused(f"cannot build the leaf: {exc}") from None
    if built != tbs:
        raise TbsRefused(
            "the TBS differs from the leaf this signer builds for"
            f" {identity} on node {node_name!r}: {_first_difference(offered, _parse_tbs(built))}"
        )


def root_decision(
    tbs: bytes, *, group_public_key: bytes, policy: SigningPolicy, now: dt.datetime
) -> None:
    """Raise TbsRefused unless ``tbs`` is the self-issued root for our group key."""
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

    def check_leaf(self, package_wire: Any, **leaf: Unpack[LeafRequest]) -> frost.SigningPackage:
        """Would :meth:`sign_leaf` sign this? Raises TbsRefused if not; consumes nothing."""
        package = self._package(package_wire)
        try:
            leaf_decision(package.message, **leaf)
        except TbsRefused:
            self.refusals += 1
            raise
        return package

    def sign_leaf(self, package_wire: Any, **leaf: Unpack[LeafRequest]) -> frost.SignatureShare:
        """Round two for a leaf: check first, then consume the nonce and sign."""
        return self.sign_checked(self.check_leaf(package_wire, **leaf))

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

    def sign_statement(self, package_wire: Any, statement: bytes) -> frost.SignatureShare:
        """Round two for exactly ``statement`` (bytes this signer built), nothing else."""
        package = self._package(package_wire)
        if package.message != statement:
            self.refusals += 1
            raise TbsRefused("the message is not the statement of the committee this signer holds")
        return self.sign_checked(package)

    def sign_checked(self, package: frost.SigningPackage) -> frost.SignatureShare:
        """Round two for a package :meth:`check_leaf` (or the root check) accepted."""
        try:
            share = frost.sign(self.share, package, self.store)
        except frost.FrostError as exc:
            raise TbsRefused(f"cannot sign: {exc}") from None
        self.shares_released += 1
        return share
