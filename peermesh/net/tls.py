"""Mutual TLS for the mesh: SSL contexts from an agent data dir, and peer SPIFFE identity.

Policy that every mesh connection gets, whichever CA issued the certificates:

* TLS 1.3 only, ALPN ``h2``, both sides present a certificate (``CERT_REQUIRED``);
* trust only the data dir's ``bundle.pem`` (never the system CAs);
* no hostname check: peers are named by the SPIFFE ID in their URI SAN, which Python's
  ``ssl`` cannot match, so the proxy calls :func:`peer_identity` after the handshake.

Certificates rotate (24 h by default), so :class:`MeshTls` re-reads the files when they
change and hands out new contexts for new connections; an open connection keeps the
context it was made with. A reload that fails (half-written rotation, corrupt file)
keeps the previous contexts and records the error instead of breaking the accept loop.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from certs.spiffe import IdentityError, SpiffeId, spiffe_id_from_certificate, validate_trust_domain
from peermesh.core.errors import PeermeshError
from peermesh.net.identity_files import BUNDLE_FILE, CERT_FILE, KEY_FILE

__all__ = [
    "ALPN_PROTOCOLS",
    "DEFAULT_RELOAD_INTERVAL",
    "MeshTls",
    "PeerIdentityError",
    "TlsConfigError",
    "TlsError",
    "TlsNotReady",
    "build_contexts",
    "identity_from_der",
    "peer_identity",
    "peer_node_name",
]

ALPN_PROTOCOLS = ["h2"]
DEFAULT_RELOAD_INTERVAL = 5.0

_FileStamp = tuple[int, int, int] | None  # (inode, mtime_ns, size), None when missing
_Stamp = tuple[_FileStamp, _FileStamp, _FileStamp]


class TlsError(PeermeshError):
    """Base class for TLS configuration problems."""

    default_status = 503
    default_code = "no-identity"


class TlsConfigError(TlsError):
    """The data dir's cert/key/bundle cannot be used; the message says which and why."""


class TlsNotReady(TlsError):
    """No certificate has been loaded successfully yet, so no context can be handed out."""


class PeerIdentityError(PeermeshError, ValueError):
    """The peer's certificate does not carry an acceptable SPIFFE identity."""

    default_status = 403
    default_code = "bad-identity"


@dataclass(frozen=True)
class _Material:
    """One successfully loaded generation of contexts, with what they were built from."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    identity: SpiffeId
    certificate: x509.Certificate
    not_after: dt.datetime
    stamp: _Stamp


def _stat(path: Path) -> _FileStamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _base_context(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        # Must come before verify_mode; SPIFFE IDs are checked by peer_identity().
        ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx


def build_contexts(
    cert_path: Path, key_path: Path, bundle_pem: str
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Build the (server, client) mesh contexts; raises ``ssl.SSLError``/``OSError`` as-is."""
    server = _base_context(ssl.PROTOCOL_TLS_SERVER)
    # We never resume sessions: a resumed session would keep a peer identity across a
    # certificate rotation, and tickets are extra bytes on every handshake.
    server.num_tickets = 0
    client = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.load_verify_locations(cadata=bundle_pem)
        ctx.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    return server, client


class MeshTls:
    """The agent's TLS identity, read from ``cert.pem``/``key.pem``/``bundle.pem``.

    ``server_context()``/``client_context()`` are cheap to call per connection: they
    stat the three files at most once per ``reload_interval`` seconds and rebuild the
    contexts only when a file changed.
    """

    def __init__(
        self,
        data_dir: Path,
        trust_domain: str,
        *,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        require: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the identity now; with ``require=False`` missing files are not an error yet.

        ``require=False`` is for agents that start before they hold a certificate (the
        threshold CA issues it after joining): contexts raise :class:`TlsNotReady` until a
        valid set of files appears.
        """
        self.data_dir = Path(data_dir)
        self.trust_domain = validate_trust_domain(trust_domain)
        self.reload_interval = reload_interval
        self.cert_path = self.data_dir / CERT_FILE
        self.key_path = self.data_dir / KEY_FILE
        self.bundle_path = self.data_dir / BUNDLE_FILE
        self.last_reload_error: str | None = None
        # How the files get here, for the "missing" message (the threshold CA says its own).
        self.missing_hint = "e.g. 'peermesh dev-ca issue --data-dir ...'"
        self.generation = 0
        self._clock = clock
        self._material: _Material | None = None
        self._attempted: _Stamp | None = None
        self._last_check: float | None = None
        try:
            self.reload()
        except TlsConfigError:
            if require:
                raise
        self._last_check = clock()

    # -- state -------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True once a valid cert/key/bundle has been loaded (it stays loaded after that)."""
        return self._material is not None

    def _current(self) -> _Material:
        if self._material is None:
            raise TlsNotReady(
                f"no usable TLS identity in {self.data_dir} yet: {self.last_reload_error}"
            )
        return self._material

    @property
    def identity(self) -> SpiffeId:
        """Our own SPIFFE ID (from the loaded cert.pem)."""
        return self._current().identity

    @property
    def certificate(self) -> x509.Certificate:
        """Our loaded leaf certificate."""
        return self._current().certificate

    @property
    def not_after(self) -> dt.datetime:
        """Expiry (UTC) of the loaded certificate; renew well before it."""
        return self._current().not_after

    # -- contexts ------------------------------------------------------------------------

    def server_context(self, now: float | None = None) -> ssl.SSLContext:
        """Context for accepting mesh connections (after a reload check if one is due)."""
        self.maybe_reload(now)
        return self._current().server

    def client_context(self, now: float | None = None) -> ssl.SSLContext:
        """Context for dialling mesh peers (after a reload check if one is due)."""
        self.maybe_reload(now)
        return self._current().client

    # -- reloading -----------------------------------------------------------------------

    def _stamp(self) -> _Stamp:
        return (_stat(self.cert_path), _stat(self.key_path), _stat(self.bundle_path))

    def maybe_reload(self, now: float | None = None) -> bool:
        """Reload if the check interval passed and a file changed; never raises.

        Returns True when new contexts were installed. A failure is kept in
        ``last_reload_error`` and the same file versions are not retried until one changes.
        """
        now = self._clock() if now is None else now
        if (
            self._last_check is not None
            and self._material is not None
            and now - self._last_check < self.reload_interval
        ):
            return False
        self._last_check = now
        stamp = self._stamp()
        if stamp == self._attempted:
            return False
        try:
            self.reload()
        except TlsConfigError:
            return False
        return True

    def reload(self) -> None:
        """Re-read the files now; on failure keep the old contexts and raise TlsConfigError."""
        stamp = self._stamp()
        self._attempted = stamp
        try:
            material = self._load(stamp)
        except TlsConfigError as exc:
            self.last_reload_error = str(exc)
            raise
        self._material = material
        self.last_reload_error = None
        self.generation += 1

    def _load(self, stamp: _Stamp) -> _Material:
        for path, st in zip((self.cert_path, self.key_path, self.bundle_path), stamp, strict=True):
            if st is None:
                raise TlsConfigError(
                    f"{path} is missing; issue a certificate into {self.data_dir} "
                    f"({self.missing_hint})"
                )
        try:
            cert_pem = self.cert_path.read_bytes()
            bundle_pem = self.bundle_path.read_bytes()
        except OSError as exc:
            raise TlsConfigError(f"cannot read TLS files in {self.data_dir}: {exc}") from None
        try:
            chain = x509.load_pem_x509_certificates(cert_pem)
        except ValueError as exc:
            raise TlsConfigError(f"{self.cert_path} is not a PEM certificate: {exc}") from None
        try:
            bundle = x509.load_pem_x509_certificates(bundle_pem)
        except ValueError as exc:
            raise TlsConfigError(f"{self.bundle_path} is not a PEM trust bundle: {exc}") from None
        leaf = chain[0]
        try:
            identity = spiffe_id_from_certificate(leaf)
        except IdentityError as exc:
            raise TlsConfigError(f"{self.cert_path}: {exc}") from None
        if identity.trust_domain != self.trust_domain:
            raise TlsConfigError(
                f"{self.cert_path} is for trust domain {identity.trust_domain!r} but this agent "
                f"is in {self.trust_domain!r}; issue a certificate from the right CA"
            )
        not_after = leaf.not_valid_after_utc
        if not_after <= dt.datetime.now(dt.UTC):
            raise TlsConfigError(
                f"{self.cert_path} expired at {not_after.isoformat()}; issue a new certificate"
            )
        if not _issued_by_bundle(chain, bundle):
            raise TlsConfigError(
                f"{self.cert_path} is not signed by any certificate in {self.bundle_path}; "
                "peers trusting that bundle would refuse it"
            )
        try:
            server, client = build_contexts(
                self.cert_path, self.key_path, bundle_pem.decode("ascii")
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsConfigError(
                f"cannot load {self.key_path} with {self.cert_path} "
                f"(corrupt, or key and certificate do not match mid-rotation): {exc}"
            ) from None
        if self._stamp() != stamp:
            raise TlsConfigError(f"TLS files in {self.data_dir} changed while loading; will retry")
        return _Material(server, client, identity, leaf, not_after, stamp)


def _issued_by_bundle(chain: list[x509.Certificate], bundle: list[x509.Certificate]) -> bool:
    """True when some certificate of ``chain`` is directly signed by a bundle certificate."""
    for cert in chain:
        for root in bundle:
            try:
                cert.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
    return False


def identity_from_der(der: bytes | None, trust_domain: str) -> SpiffeId:
    """SPIFFE ID of a DER peer certificate, checked against ``trust_domain``."""
    if not der:
        raise PeerIdentityError("peer presented no certificate; mesh connections need mTLS")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PeerIdentityError(f"peer certificate cannot be parsed: {exc}") from None
    try:
        identity = spiffe_id_from_certificate(cert)
    except IdentityError as exc:
        raise PeerIdentityError(f"peer certificate refused: {exc}") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise PeerIdentityError(
            f"peer certificate for {identity} is a CA certificate; an X.509-SVID leaf "
            "must have CA:FALSE"
        )
    if identity.trust_domain != trust_domain:
        raise PeerIdentityError(
            f"peer {identity} is in trust domain {identity.trust_domain!r}, "
            f"not ours ({trust_domain!r})"
        )
    return identity


def peer_node_name(conn: ssl.SSLObject | ssl.SSLSocket | trio.SSLStream[Any]) -> str | None:
    """The node name the verified peer certificate binds (its one DNS SAN), or None.

    The SPIFFE ID names the service (shared by its instances); the CA puts exactly one
    DNS SAN, the node name, in every leaf it signs, so this tells two instances apart.
    """
    try:
        der = conn.getpeercert(binary_form=True)
        if not der:
            return None
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (ValueError, ssl.SSLError, x509.ExtensionNotFound):
        return None
    names = san.value.get_values_for_type(x509.DNSName)
    return names[0] if len(names) == 1 else None


def peer_identity(
    conn: ssl.SSLObject | ssl.SSLSocket | trio.SSLStream[Any],
    trust_domain: str,
    *,
    expect: SpiffeId | None = None,
) -> SpiffeId:
    """The verified peer's SPIFFE ID, right after the handshake; raise PeerIdentityError.

    OpenSSL has already checked the chain against our bundle; this applies the SPIFFE
    rules OpenSSL does not know (exactly one URI SAN, our trust domain) and, with
    ``expect``, that the peer is the workload we meant to dial.
    """
    try:
        der = conn.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError) as exc:
        raise PeerIdentityError(f"no completed TLS handshake to read a peer from: {exc}") from None
    identity = identity_from_der(der, trust_domain)
    if expect is not None and identity != expect:
        raise PeerIdentityError(f"peer is {identity}, expected {expect}")
    return identity
