"""X.509 for the threshold root: TBSCertificates from ``cryptography``, FROST signature spliced in.

``cryptography`` can only sign with a key it holds, and nobody holds the root key.
So we let it build and sign the certificate with a *throwaway* Ed25519 key (the
subject public key is set separately, so for the root it is the group key), keep
only the DER TBSCertificate, have the committee FROST-sign those bytes, and
re-assemble ``Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
signatureValue }`` around the 64-byte signature.  Ed25519 signs the message itself
(no pre-hash), so the TBS bytes are exactly the FROST message.

:func:`check_leaf_tbs` is the policy every signer runs on a TBS before it releases
its signature share; a malicious coordinator cannot get a CA certificate, a foreign
identity or an overlong lifetime past an honest signer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertsError, ErrorCode

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW",
    "TbsRefused",
    "X509Error",
    "assemble_certificate",
    "build_leaf_tbs",
    "build_root_tbs",
    "certificate_builder",
    "certificate_signature_valid",
    "check_leaf_tbs",
    "key_usage",
    "leaf_serial",
    "root_common_name",
]

#: AlgorithmIdentifier ::= SEQUENCE { OBJECT IDENTIFIER id-Ed25519 (1.3.101.112) }, no params.
_ED25519_ALGID: Final[bytes] = bytes.fromhex("300506032b6570")
#: How far in the future a signer accepts ``not_before`` (clock skew between agents).
DEFAULT_MAX_FUTURE_SKEW: Final[dt.timedelta] = dt.timedelta(minutes=5)
_TRUST_DOMAIN_RE: Final[re.Pattern[str]] = re.compile(r"^[a-z0-9._-]{1,255}$")


class X509Error(CertsError, ValueError):
    """A certificate, a TBSCertificate or an input to build one is malformed."""

    default_code = ErrorCode.CERTIFICATE_FORMAT


class TbsRefused(CertsError, ValueError):
    """A signer refuses to sign this TBSCertificate; the message is the exact reason."""

    default_code = ErrorCode.TBS_REFUSED


# ----------------------------------------------------------------------------------------
# Minimal DER
# ----------------------------------------------------------------------------------------


def _read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content_start, end) of the DER TLV at ``offset``; strict definite lengths."""
    if offset + 2 > len(data):
        raise X509Error("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise X509Error("multi-byte DER tags are not used in certificates")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise X509Error("unsupported DER length encoding")
        if pos + count > len(data):
            raise X509Error("truncated DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise X509Error("non-minimal DER length")
        pos += count
    end = pos + length
    if end > len(data):
        raise X509Error("DER length runs past the end")
    return tag, pos, end


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _sequence_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, start_of_tlv, end) of each element between ``start`` and ``end``."""
    items = []
    pos = start
    while pos < end:
        tag, _, item_end = _read_tlv(data, pos)
        if item_end > end:
            raise X509Error("element runs past its SEQUENCE")
        items.append((tag, pos, item_end))
        pos = item_end
    return items


def _split_certificate(der: bytes) -> tuple[bytes, bytes, bytes]:
    """Certificate DER -> (tbsCertificate TLV, signatureAlgorithm TLV, signature bits)."""
    tag, start, end = _read_tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise X509Error("certificate is not a single DER SEQUENCE")
    items = _sequence_items(der, start, end)
    if [t for t, _, _ in items] != [0x30, 0x30, 0x03]:
        raise X509Error("certificate is not SEQUENCE { SEQUENCE, SEQUENCE, BIT STRING }")
    (_, tbs_s, tbs_e), (_, alg_s, alg_e), (_, sig_s, sig_e) = items
    _, bits_start, _ = _read_tlv(der, sig_s)
    if der[bits_start] != 0:
        raise X509Error("signature BIT STRING has unused bits")
    return der[tbs_s:tbs_e], der[alg_s:alg_e], der[bits_start + 1 : sig_e]


def _tbs_signature_algorithm(tbs: bytes) -> bytes:
    """The AlgorithmIdentifier TLV inside a TBSCertificate (after optional version, serial)."""
    tag, start, end = _read_tlv(tbs, 0)
    if tag != 0x30 or end != len(tbs):
        raise X509Error("TBSCertificate is not a single DER SEQUENCE")
    items = _sequence_items(tbs, start, end)
    index = 2 if items and items[0][0] == 0xA0 else 1
    if len(items) <= index:
        raise X509Error("TBSCertificate is too short")
    _, alg_s, alg_e = items[index]
    return tbs[alg_s:alg_e]


def _wrap(tbs: bytes, signature: bytes) -> bytes:
    body = tbs + _ED25519_ALGID + b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    return b"\x30" + _der_length(len(body)) + body


# ----------------------------------------------------------------------------------------
# Building and assembling
# ----------------------------------------------------------------------------------------


def key_usage(*, digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    """The KeyUsage of an Ed25519 CA (``cert_sign``) or leaf (``digital_signature``)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_validity(not_before: dt.datetime, not_after: dt.datetime) -> None:
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise X509Error("not_before and not_after must be timezone-aware")
    if not_after <= not_before:
        raise X509Error("not_after must be after not_before")


def _serial(serial: int | None) -> int:
    if serial is None:
        return secrets.randbits(159) | 1  # positive, < 2**159 (fits 20 octets)
    if not 0 < serial < 2**159:
        raise X509Error("serial must be a positive integer below 2**159")
    return serial


def certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Ed25519PublicKey,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    """A builder with every certificate's names, key, serial and validity; extensions next."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _tbs_of(builder: x509.CertificateBuilder) -> bytes:
    """Sign with a throwaway key (only to obtain DER) and keep the TBSCertificate."""
    throwaway = Ed25519PrivateKey.generate()
    cert = builder.sign(throwaway, None)
    tbs, alg, _ = _split_certificate(cert.public_bytes(Encoding.DER))
    if alg != _ED25519_ALGID or tbs != cert.tbs_certificate_bytes:
        raise RuntimeError("cryptography produced an unexpected certificate layout")
    return tbs


def leaf_serial(
    subject_public_key: bytes,
    spiffe_id: str,
    node_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> int:
    """A leaf's serial derived from what it says, so every signer builds the same bytes.

    Distinct leaves differ in key or validity, so their serials differ; nobody chooses it.
    """
    digest = hashlib.sha256(
        b"\0".join(
            [
                b"peermesh leaf serial v1",
                subject_public_key,
                spiffe_id.encode(),
                node_name.encode(),
                str(int(not_before.timestamp())).encode(),
                str(int(not_after.timestamp())).encode(),
            ]
        )
    ).digest()
    return (int.from_bytes(digest[:20], "big") >> 1) | 1  # positive, < 2**159


def root_common_name(trust_domain: str) -> str:
    """The root's subject CN."""
    return f"peermesh root {trust_domain}"[:64]


def build_root_tbs(
    group_public_key: bytes,
    trust_domain: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None = None,
) -> bytes:
    """TBSCertificate of the self-issued root whose key is the FROST group key.

    CA:TRUE (pathlen 0) and keyCertSign+cRLSign, both critical; SKI (and AKI = SKI);
    the trust domain's SPIFFE ID as URI SAN, like the dev CA's root.
    """
    if not _TRUST_DOMAIN_RE.match(trust_domain):
        raise X509Error(f"invalid trust domain {trust_domain!r}")
    _check_validity(not_before, not_after)
    key = Ed25519PublicKey.from_public_bytes(group_public_key)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, root_common_name(trust_domain)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peermesh"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key)
    builder = (
        certificate_builder(name, name, key, _serial(serial), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(digital_signature=False, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
    )
    return _tbs_of(builder)


def build_leaf_tbs(
    subject_public_key: Ed25519PublicKey | bytes,
    spiffe_id: str,
    node_name: str,
    issuer: x509.Certificate | tuple[x509.Name, bytes],
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None = None,
) -> bytes:
    """TBSCertificate of an X.509-SVID leaf issued by the root.

    ``issuer`` is the root certificate, or its (subject, subject key identifier).
    CA:FALSE and digitalSignature (critical), EKU serverAuth+clientAuth, SKI, AKI,
    SAN = the SPIFFE ID (URI) and the node name (DNS).
    """
    if not spiffe_id.startswith("spiffe://"):
        raise X509Error(f"not a SPIFFE ID: {spiffe_id!r}")
    _check_validity(not_before, not_after)
    key = (
        subject_public_key
        if isinstance(subject_public_key, Ed25519PublicKey)
        else Ed25519PublicKey.from_public_bytes(subject_public_key)
    )
    if isinstance(issuer, x509.Certificate):
        issuer_name = issuer.subject
        issuer_ski = issuer.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    else:
        issuer_name, issuer_ski = issuer
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peermesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, node_name[:64]),
        ]
    )
    builder = (
        certificate_builder(subject, issuer_name, key, _serial(serial), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True, cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(issuer_ski, None, None), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id), x509.DNSName(node_name)]
            ),
            critical=False,
        )
    )
    return _tbs_of(builder)


def assemble_certificate(tbs: bytes, signature: bytes) -> x509.Certificate:
    """The certificate made of ``tbs`` and a 64-byte Ed25519 (FROST) signature over it.

    Does not verify the signature (see :func:`certificate_signature_valid`); FROST's
    :func:`certs.frost.aggregate` already did.
    """
    if len(signature) != 64:
        raise X509Error(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    if _tbs_signature_algorithm(tbs) != _ED25519_ALGID:
        raise X509Error("TBSCertificate does not declare the Ed25519 signature algorithm")
    return x509.load_der_x509_certificate(_wrap(tbs, signature))


def certificate_signature_valid(cert: x509.Certificate, issuer_public_key: bytes) -> bool:
    """Does ``cert`` carry a valid Ed25519 signature by ``issuer_public_key``?"""
    try:
        Ed25519PublicKey.from_public_bytes(issuer_public_key).verify(
            cert.signature, cert.tbs_certificate_bytes
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------------------
# The signer's policy check
# ----------------------------------------------------------------------------------------


def _parse_tbs(tbs: bytes) -> x509.Certificate:
    """Load a bare TBS by wrapping it with a dummy signature (parsing checks no signature)."""
    try:
        _tbs_signature_algorithm(tbs)
        cert = x509.load_der_x509_certificate(_wrap(tbs, bytes(64)))
        cert.extensions  # noqa: B018 - force parsing of every extension now
    except ValueError as exc:
        raise TbsRefused(f"not a TBSCertificate: {exc}") from None
    return cert


def _extension(cert: x509.Certificate, cls: type[x509.ExtensionType], what: str) -> x509.Extension:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        raise TbsRefused(f"{what} extension is missing") from None


def check_leaf_tbs(
    tbs: bytes,
    *,
    root: x509.Certificate,
    expected_spiffe_id: str,
    max_lifetime: dt.timedelta,
    now: dt.datetime,
    max_future_skew: dt.timedelta = DEFAULT_MAX_FUTURE_SKEW,
) -> None:
    """Refuse (raise :class:`TbsRefused`) unless ``tbs`` is a leaf the committee may sign.

    ``expected_spiffe_id`` is the requester's authenticated identity (or, for a first
    certificate, the identity its join token allows).
    """
    if now.tzinfo is None:
        raise X509Error("now must be timezone-aware")
    cert = _parse_tbs(tbs)
    if cert.version != x509.Version.v3:
        raise TbsRefused("certificate version is not v3")
    # The inner AlgorithmIdentifier (the wrapper used for parsing always says Ed25519).
    if _tbs_signature_algorithm(tbs) != _ED25519_ALGID:
        raise TbsRefused("signature algorithm is not Ed25519")
    if not isinstance(cert.public_key(), Ed25519PublicKey):
        raise TbsRefused("subject public key is not Ed25519")

    for ext in cert.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise TbsRefused(f"unrecognized critical extension {ext.oid.dotted_string}")

    basic = _extension(cert, x509.BasicConstraints, "BasicConstraints").value
    assert isinstance(basic, x509.BasicConstraints)
    if basic.ca:
        raise TbsRefused("BasicConstraints asks for CA:TRUE")
    usage = _extension(cert, x509.KeyUsage, "KeyUsage").value
    assert isinstance(usage, x509.KeyUsage)
    if usage.key_cert_sign:
        raise TbsRefused("KeyUsage includes keyCertSign")
    if usage.crl_sign:
        raise TbsRefused("KeyUsage includes cRLSign")

    san = _extension(cert, x509.SubjectAlternativeName, "SubjectAlternativeName").value
    assert isinstance(san, x509.SubjectAlternativeName)
    for name in san:
        if not isinstance(name, x509.UniformResourceIdentifier | x509.DNSName | x509.IPAddress):
            raise TbsRefused(f"SubjectAlternativeName contains a {type(name).__name__}")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise TbsRefused(f"expected exactly one URI SAN, found {len(uris)}")
    if uris[0] != expected_spiffe_id:
        raise TbsRefused(
            f"URI SAN {uris[0]!r} is not the authenticated identity {expected_spiffe_id!r}"
        )

    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not_after <= not_before:
        raise TbsRefused("not_after is not after not_before")
    lifetime = not_after - not_before
    if lifetime > max_lifetime:
        raise TbsRefused(f"lifetime {lifetime} exceeds the maximum {max_lifetime}")
    if not_before > now + max_future_skew:
        raise TbsRefused(
            f"not_before {not_before.isoformat()} is more than {max_future_skew} in the future"
        )

    if cert.issuer != root.subject:
        raise TbsRefused(
            f"issuer {cert.issuer.rfc4514_string()!r} is not the root subject "
            f"{root.subject.rfc4514_string()!r}"
        )
    aki = _extension(cert, x509.AuthorityKeyIdentifier, "AuthorityKeyIdentifier").value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    if aki.key_identifier != root_ski:
        raise TbsRefused("AuthorityKeyIdentifier does not match the root's SubjectKeyIdentifier")
