"""SPIFFE IDs and X.509-SVID identity extraction.

Peers are authorized by their SPIFFE ID, never by IP, so the parser here is strict:
anything that is not exactly a SPIFFE ID per the spec (SPIFFE-ID.md section 2) is
refused with a message saying what is wrong, instead of being normalised into
something that might compare equal to another workload's identity.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from cryptography import x509

from certs.errors import CertsError, ErrorCode

__all__ = [
    "MAX_SPIFFE_ID_LENGTH",
    "MAX_TRUST_DOMAIN_LENGTH",
    "SCHEME_PREFIX",
    "IdentityError",
    "InvalidSpiffeId",
    "SpiffeId",
    "spiffe_id_from_certificate",
    "validate_node_name",
    "validate_service_name",
    "validate_trust_domain",
]

SCHEME_PREFIX = "spiffe://"
MAX_SPIFFE_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255
SERVICE_PATH_PREFIX = "/svc/"
MAX_SERVICE_NAME_LENGTH = 63

_TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_PATH_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
_SERVICE_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
_DNS_LABEL_CHARS = frozenset(string.ascii_lowercase + string.digits + "-")


class InvalidSpiffeId(CertsError, ValueError):
    """A string (or trust domain / path) does not follow the SPIFFE ID rules."""

    default_code = ErrorCode.SPIFFE_ID


class IdentityError(CertsError, ValueError):
    """A certificate does not carry a usable SPIFFE identity (X.509-SVID rules)."""

    default_code = ErrorCode.IDENTITY


def _bad_chars(text: str, allowed: frozenset[str]) -> str:
    return "".join(sorted({c for c in text if c not in allowed}))


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if valid, else raise :class:`InvalidSpiffeId`.

    Only lowercase letters, digits, ``.``, ``-`` and ``_`` are allowed, so two spellings
    of one trust domain can never exist (no case folding, no ports, no userinfo).
    """
    if not trust_domain:
        raise InvalidSpiffeId("trust domain is empty; a SPIFFE ID needs one, e.g. 'mesh.local'")
    if len(trust_domain) > MAX_TRUST_DOMAIN_LENGTH:
        raise InvalidSpiffeId(
            f"trust domain is {len(trust_domain)} characters; "
            f"the SPIFFE limit is {MAX_TRUST_DOMAIN_LENGTH}"
        )
    if "@" in trust_domain:
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} contains userinfo ('@'); "
            "SPIFFE IDs must not carry a user or password"
        )
    if ":" in trust_domain:
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} contains a port (':'); SPIFFE IDs must not have one"
        )
    if any(c in string.ascii_uppercase for c in trust_domain):
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} contains uppercase letters; SPIFFE trust "
            f"domains are lowercase only (use {trust_domain.lower()!r})"
        )
    bad = _bad_chars(trust_domain, _TRUST_DOMAIN_CHARS)
    if bad:
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} contains {bad!r}; only lowercase letters, digits, "
            "'.', '-' and '_' are allowed"
        )
    return trust_domain


def _validate_path(path: str) -> str:
    """Return ``path`` ('' or '/seg/seg...') if valid, else raise :class:`InvalidSpiffeId`."""
    if path == "":
        return path
    if not path.startswith("/"):
        raise InvalidSpiffeId(f"path {path!r} must be empty or start with '/'")
    if "?" in path:
        raise InvalidSpiffeId(f"path {path!r} contains a query ('?'); SPIFFE IDs must not")
    if "#" in path:
        raise InvalidSpiffeId(f"path {path!r} contains a fragment ('#'); SPIFFE IDs must not")
    if "%" in path:
        raise InvalidSpiffeId(
            f"path {path!r} contains percent-encoding ('%'); SPIFFE IDs allow only letters, "
            "digits, '.', '-' and '_' in path segments"
        )
    for segment in path[1:].split("/"):
        if segment == "":
            raise InvalidSpiffeId(
                f"path {path!r} has an empty segment (a trailing '/' or '//'); "
                "every segment must be non-empty"
            )
        if segment in (".", ".."):
            raise InvalidSpiffeId(
                f"path {path!r} has a {segment!r} segment; relative segments are not allowed"
            )
        bad = _bad_chars(segment, _PATH_SEGMENT_CHARS)
        if bad:
            raise InvalidSpiffeId(
                f"path segment {segment!r} contains {bad!r}; only letters, digits, '.', '-' "
                "and '_' are allowed"
            )
    return path


def validate_service_name(service: str) -> str:
    """Return ``service`` if usable as a mesh service name, else raise :class:`InvalidSpiffeId`.

    Stricter than a SPIFFE path segment (lowercase, at most 63 characters, starts and ends
    with a letter or digit) so a service name also works as a DNS label and a metric label.
    """
    if not service:
        raise InvalidSpiffeId("service name is empty")
    if len(service) > MAX_SERVICE_NAME_LENGTH:
        raise InvalidSpiffeId(
            f"service name {service!r} is {len(service)} characters; "
            f"the limit is {MAX_SERVICE_NAME_LENGTH}"
        )
    bad = _bad_chars(service, _SERVICE_CHARS)
    if bad:
        raise InvalidSpiffeId(
            f"service name {service!r} contains {bad!r}; use lowercase letters, digits, "
            "'.', '-' and '_'"
        )
    if not (service[0].isalnum() and service[-1].isalnum()):
        raise InvalidSpiffeId(
            f"service name {service!r} must start and end with a lowercase letter or digit"
        )
    return service


def validate_node_name(node: str) -> str:
    """Return ``node`` if it is a valid lowercase DNS name, else raise ``ValueError``.

    The node name goes into the certificate as a DNS SAN, so it must be a real DNS name.
    """
    if not node:
        raise ValueError("node name is empty")
    if len(node) > 253:
        raise ValueError(f"node name is {len(node)} characters; DNS names are at most 253")
    for label in node.split("."):
        if not label:
            raise ValueError(
                f"node name {node!r} has an empty DNS label ('..' or leading/trailing '.')"
            )
        if len(label) > 63:
            raise ValueError(
                f"node name {node!r}: DNS label {label!r} is longer than 63 characters"
            )
        bad = _bad_chars(label, _DNS_LABEL_CHARS)
        if bad:
            raise ValueError(
                f"node name {node!r} contains {bad!r}; DNS names use lowercase letters, digits "
                "and '-' (labels separated by '.')"
            )
        if label.startswith("-") or label.endswith("-"):
            raise ValueError(f"node name {node!r}: DNS label {label!r} starts or ends with '-'")
    return node


@dataclass(frozen=True)
class SpiffeId:
    """A validated SPIFFE ID; ``path`` is '' or starts with '/' (e.g. '/svc/orders')."""

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        _validate_path(self.path)
        if len(str(self)) > MAX_SPIFFE_ID_LENGTH:
            raise InvalidSpiffeId(
                f"SPIFFE ID is {len(str(self))} characters; the limit is {MAX_SPIFFE_ID_LENGTH}"
            )

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://trust-domain/path``; raise :class:`InvalidSpiffeId` saying why not."""
        if not isinstance(uri, str):
            raise InvalidSpiffeId(f"SPIFFE ID must be a string, got {type(uri).__name__}")
        if not uri:
            raise InvalidSpiffeId("SPIFFE ID is empty")
        if len(uri) > MAX_SPIFFE_ID_LENGTH:
            raise InvalidSpiffeId(
                f"SPIFFE ID is {len(uri)} characters; the limit is {MAX_SPIFFE_ID_LENGTH}"
            )
        if not uri.startswith(SCHEME_PREFIX):
            scheme, sep, _ = uri.partition("://")
            if sep and scheme.lower() == "spiffe":
                raise InvalidSpiffeId(f"{uri!r}: the scheme must be lowercase 'spiffe'")
            if sep:
                raise InvalidSpiffeId(f"{uri!r}: scheme {scheme!r} is not 'spiffe'")
            raise InvalidSpiffeId(f"{uri!r} does not start with 'spiffe://'")
        rest = uri[len(SCHEME_PREFIX) :]
        # Split the authority at the first character that can end it, so a query or a
        # fragment right after the trust domain is reported as such, not as a bad char.
        end = len(rest)
        for stop in "/?#":
            idx = rest.find(stop)
            if idx != -1:
                end = min(end, idx)
        authority, path = rest[:end], rest[end:]
        if path.startswith(("?", "#")):
            what = "a query ('?')" if path.startswith("?") else "a fragment ('#')"
            raise InvalidSpiffeId(f"{uri!r} contains {what}; SPIFFE IDs must not")
        if not authority:
            raise InvalidSpiffeId(f"{uri!r} has no trust domain after 'spiffe://'")
        try:
            validate_trust_domain(authority)
            _validate_path(path)
        except InvalidSpiffeId as exc:
            raise InvalidSpiffeId(f"{uri!r}: {exc}") from None
        return cls(authority, path)

    @classmethod
    def for_service(cls, trust_domain: str, service: str) -> SpiffeId:
        """The workload identity of ``service``: ``spiffe://<td>/svc/<service>``."""
        validate_service_name(service)
        return cls(trust_domain, SERVICE_PATH_PREFIX + service)

    @classmethod
    def for_trust_domain(cls, trust_domain: str) -> SpiffeId:
        """The ID of the trust domain itself (``spiffe://<td>``), used as the root's SAN."""
        return cls(trust_domain, "")

    @property
    def service(self) -> str | None:
        """The service name when the path is ``/svc/<name>``, else None."""
        if self.path.startswith(SERVICE_PATH_PREFIX):
            name = self.path[len(SERVICE_PATH_PREFIX) :]
            if name and "/" not in name:
                return name
        return None


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """Extract the SPIFFE ID of an X.509-SVID (exactly one URI SAN), else :class:`IdentityError`."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError(
            "certificate has no subjectAltName extension; an X.509-SVID carries its SPIFFE ID "
            "as exactly one URI SAN"
        ) from None
    except ValueError as exc:  # duplicate or malformed extensions
        raise IdentityError(f"certificate extensions cannot be parsed: {exc}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(
            f"certificate has {len(uris)} URI SANs; an X.509-SVID carries exactly one"
        )
    try:
        return SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise IdentityError(f"certificate URI SAN is not a valid SPIFFE ID: {exc}") from None
