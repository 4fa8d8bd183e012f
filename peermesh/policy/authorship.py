"""Who wrote a policy version: record signatures by the author's mesh identity, sans-IO.

Every version record an agent writes carries ``author`` (the SPIFFE ID of the agent's
current certificate), ``cert`` (that leaf certificate, DER) and ``sig``: a signature by the
certificate's private key over :func:`signed_bytes`, the canonical record without ``sig``.
The object itself is covered through its SHA-256 ``hash``, which the store re-checks
against the content of every record it accepts.

A record is *authentic* when (:meth:`RecordVerifier.verify`):

* ``cert`` is an X.509 leaf (CA:FALSE) directly signed by a root of the trust bundle;
* it has exactly one URI SAN, a SPIFFE ID equal to ``author``;
* ``sig`` verifies with the certificate's key (Ed25519, or ECDSA P-256 with SHA-256).

The certificate's validity period is deliberately **not** checked. Leaves live 24 h and
are renewed with fresh keys; a policy edit must stay valid long after its author's
certificate expired, on every replica, including one that receives it a week later. What
a signature proves is "the holder of a key certified for this identity wrote this"; the
CA's lifetime cap bounds how long a stolen key can *write new* records only if something
refuses records signed after expiry, which would need trusted time inside the record. We
have none (``time`` is the author's own clock), so a stolen key can sign records forever:
revoking an author is done by removing it from MeshConfig ``admins``, not by expiry.

Verification results are cached per record (records are immutable) and per certificate
(chain and identity), so merging a large update re-verifies nothing it has seen before.
The trust bundle comes from a getter; a changed bundle (another list object) clears the
caches.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from certs.spiffe import IdentityError, spiffe_id_from_certificate
from peermesh.policy.errors import AuthorshipError, NoIdentity, NotAdmin
from peermesh.policy.records import VersionRecord, b64

__all__ = [
    "AuthorshipError",
    "NoIdentity",
    "NotAdmin",
    "RecordSigner",
    "RecordVerifier",
    "SigningKey",
    "signed_bytes",
    "tls_credentials",
    "trust_bundle_file",
]

DOMAIN: Final = b"peermesh policy record v1\n"
_RECORD_CACHE: Final = 65536
_CERT_CACHE: Final = 4096

SigningKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def signed_bytes(record: VersionRecord) -> bytes:
    """What the author signs: every field but ``sig``, the object by its content hash, and
    the admin-set endorsement when the record carries one."""
    fields: dict[str, Any] = {
        "author": record.author,
        "cert": b64(record.cert) if record.cert is not None else None,
        "deleted": record.deleted,
        "hash": record.hash,
        "kind": record.kind,
        "lamport": record.lamport,
        "name": record.name,
        "node": record.node,
        "time": float(record.time),
    }
    if record.endorsement is not None:
        # Only when present, so records written before endorsements existed still verify.
        fields["endorsement"] = record.endorsement.to_wire()
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DOMAIN + text.encode()


# ---------------------------------------------------------------------------- signing


class RecordSigner:
    """Signs records with the agent's current TLS key and certificate.

    ``credentials()`` returns ``(private key, leaf certificate)`` or ``None`` before the
    agent has an identity; it is called for every edit, so renewal is followed at once.
    """

    def __init__(
        self, credentials: Callable[[], tuple[SigningKey, x509.Certificate] | None]
    ) -> None:
        self._credentials = credentials
        self._identity: tuple[x509.Certificate, str, bytes] | None = None

    def _current(self) -> tuple[SigningKey, str, bytes]:
        creds = self._credentials()
        if creds is None:
            raise NoIdentity(
                "no identity yet: this agent has no certificate, so it cannot sign policy "
                "edits; wait until it has joined the mesh (see `peermesh ca status`)"
            )
        key, cert = creds
        cached = self._identity
        if cached is None or cached[0] is not cert:
            try:
                author = str(spiffe_id_from_certificate(cert))
            except IdentityError as exc:
                raise NoIdentity(f"our certificate carries no usable identity: {exc}") from None
            cached = self._identity = (cert, author, cert.public_bytes(serialization.Encoding.DER))
        return key, cached[1], cached[2]

    def identity(self) -> str:
        """The SPIFFE ID records are signed as now (raises :class:`NoIdentity`)."""
        return self._current()[1]

    def sign(self, record: VersionRecord) -> VersionRecord:
        """The same record with ``author``, ``cert`` and ``sig`` filled in."""
        from dataclasses import replace

        key, author, der = self._current()
        unsigned = replace(record, time=float(record.time), author=author, cert=der, sig=None)
        data = signed_bytes(unsigned)
        if isinstance(key, Ed25519PrivateKey):
            sig = key.sign(data)
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            raise NoIdentity(
                f"cannot sign policy records with a {type(key).__name__}; "
                "use an Ed25519 or ECDSA P-256 certificate key"
            )
        return replace(unsigned, sig=sig)


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class _Author:
    identity: str
    key: Ed25519PublicKey | ec.EllipticCurvePublicKey


class RecordVerifier:
    """Checks that a record was signed by a mesh identity equal to its ``author``.

    ``trust_bundle()`` returns the root certificates (or raises/returns an empty list
    before the agent has any). Not thread-safe; one per store or shared on one thread.
    """

    def __init__(self, trust_bundle: Callable[[], Sequence[x509.Certificate]]) -> None:
        self._trust_bundle = trust_bundle
        self._bundle: Sequence[x509.Certificate] | None = None
        self._records: OrderedDict[VersionRecord, None] = OrderedDict()
        self._certs: OrderedDict[bytes, _Author] = OrderedDict()
        self.verified = 0  # signature checks actually computed (cache misses)
        self.refused = 0

    def _roots(self) -> Sequence[x509.Certificate]:
        try:
            bundle = self._trust_bundle()
        except (OSError, ValueError) as exc:
            raise NoIdentity(f"no trust bundle yet to check record signatures: {exc}") from None
        if not bundle:
            raise NoIdentity(
                "no trust bundle yet to check record signatures (this agent has not "
                "joined the mesh); the peer will resend"
            )
        if bundle is not self._bundle:
            self._bundle = bundle
            self._records.clear()
            self._certs.clear()
        return bundle

    def verify(self, record: VersionRecord) -> None:
        """Return if ``record`` is authentic, else raise :class:`AuthorshipError` saying why."""
        roots = self._roots()
        if record in self._records:
            self._records.move_to_end(record)
            return
        try:
            self._verify(record, roots)
        except AuthorshipError:
            self.refused += 1
            raise
        self._records[record] = None
        if len(self._records) > _RECORD_CACHE:
            self._records.popitem(last=False)

    def _verify(self, record: VersionRecord, roots: Sequence[x509.Certificate]) -> None:
        if record.author is None or record.cert is None or record.sig is None:
            raise AuthorshipError(
                "is not signed: every version must carry its author, the author's "
                "certificate and a signature (written by an agent without record signing?)"
            )
        author = self._author(record.cert, roots)
        if author.identity != record.author:
            raise AuthorshipError(
                f"claims author {record.author} but its certificate is for {author.identity}"
            )
        data = signed_bytes(record)
        self.verified += 1
        try:
            if isinstance(author.key, Ed25519PublicKey):
                author.key.verify(record.sig, data)
            else:
                author.key.verify(record.sig, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise AuthorshipError(
                f"signature by {record.author} does not verify: the record was altered "
                "after signing, or forged"
            ) from None

    def _author(self, der: bytes, roots: Sequence[x509.Certificate]) -> _Author:
        cached = self._certs.get(der)
        if cached is not None:
            self._certs.move_to_end(der)
            return cached
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise AuthorshipError(f"author certificate cannot be parsed: {exc}") from None
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if constraints.ca:
                raise AuthorshipError("author certificate is a CA certificate, not a leaf")
        except x509.ExtensionNotFound:
            pass
        except ValueError as exc:
            raise AuthorshipError(f"author certificate extensions are malformed: {exc}") from None
        if not any(_issued_by(cert, root) for root in roots):
            raise AuthorshipError(
                "author certificate is not signed by any root of our trust bundle "
                "(a foreign CA, or a self-made certificate)"
            )
        try:
            identity = str(spiffe_id_from_certificate(cert))
        except IdentityError as exc:
            raise AuthorshipError(f"author certificate refused: {exc}") from None
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise AuthorshipError(f"author key on curve {key.curve.name} is not supported")
        if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise AuthorshipError(
                f"author key type {type(key).__name__} is not supported (Ed25519, ECDSA P-256)"
            )
        author = self._certs[der] = _Author(identity, key)
        if len(self._certs) > _CERT_CACHE:
            self._certs.popitem(last=False)
        return author


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    """Signature and issuer name only: validity periods are not checked (module docstring)."""
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# ---------------------------------------------------------------------------- agent glue


class _TlsState(Protocol):
    """What :func:`tls_credentials` needs of :class:`peermesh.net.tls.MeshTls`."""

    @property
    def loaded(self) -> bool: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def key_path(self) -> Path: ...

    def maybe_reload(self, now: float | None = None) -> bool: ...

    def reload(self) -> None: ...


def tls_credentials(tls: _TlsState) -> Callable[[], tuple[SigningKey, x509.Certificate] | None]:
    """A credentials getter for :class:`RecordSigner` from the agent's TLS state.

    Follows renewal: the certificate is the one the TLS layer has loaded, and the key is
    re-read whenever that certificate changes (and must match it; mid-rotation, one
    reload is forced, else the agent is treated as having no identity for this edit).
    """
    cache: dict[str, Any] = {}

    def read_key() -> SigningKey | None:
        try:
            key = serialization.load_pem_private_key(tls.key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        if isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            return key
        return None

    def matches(key: SigningKey, cert: x509.Certificate) -> bool:
        return bool(key.public_key() == cert.public_key())

    def credentials() -> tuple[SigningKey, x509.Certificate] | None:
        tls.maybe_reload()
        if not tls.loaded:
            return None
        cert = tls.certificate
        if cache.get("cert") is cert:
            return cache["key"], cert
        key = read_key()
        if key is None or not matches(key, cert):
            try:
                tls.reload()
            except Exception:  # any failure: no identity for now
                return None
            cert = tls.certificate
            key = read_key()
            if key is None or not matches(key, cert):
                return None
        cache["cert"], cache["key"] = cert, key
        return key, cert

    return credentials


def trust_bundle_file(path: Path) -> Callable[[], Sequence[x509.Certificate]]:
    """A trust-bundle getter reading a PEM file, re-read when it changes (same list otherwise).

    Independent of the certificate: an agent whose own certificate expired while it was
    down can still check the policy it stored.
    """
    cache: dict[str, Any] = {}

    def bundle() -> Sequence[x509.Certificate]:
        try:
            st = path.stat()
        except FileNotFoundError:
            return ()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if cache.get("stamp") != stamp:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
            cache["stamp"], cache["certs"] = stamp, certs
        result: Sequence[x509.Certificate] = cache["certs"]
        return result

    return bundle
