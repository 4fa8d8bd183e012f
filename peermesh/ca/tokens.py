"""Join tokens: what a new agent shows to get its first certificate.

Format (one copy-pasteable string, like kubeadm's token plus discovery hash)::

    pmjt1.<id: 12 hex>.<secret: 32 hex>.<root: sha256 of the root certificate, 64 hex>

* ``id`` names the token in logs and in the signers' store;
* ``secret`` (128 bits) is what authorizes; signers keep only
  ``sha256("peermesh-join-token" || id || secret)``, so a stolen store admits nobody;
* ``root`` lets the new agent authenticate the mesh before it sends the secret: it
  pins the root certificate, and then requires the member it talks to to present a
  certificate that chains to that root (TLS 1.3, CertificateVerify proves the key).

The decisions here are pure functions of (record, request, now); the signer stores
the records and calls them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

TOKEN_PREFIX: Final[str] = "pmjt1"
_TOKEN_RE: Final[re.Pattern[str]] = re.compile(
    r"^pmjt1\.([0-9a-f]{12})\.([0-9a-f]{32})\.([0-9a-f]{64})$"
)


class TokenError(ValueError):
    """A token that is malformed or refused; the message says why and what to do."""


@dataclass(frozen=True)
class JoinToken:
    """The parsed token string (held only by the operator and the joining agent)."""

    token_id: str
    secret: str
    root_fingerprint: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}.{self.token_id}.{self.secret}.{self.root_fingerprint}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        match = _TOKEN_RE.match(text.strip())
        if match is None:
            raise TokenError(
                "join token is malformed: expected pmjt1.<12 hex>.<32 hex>.<64 hex>;"
                " copy it whole from 'peermesh token create'"
            )
        return cls(*match.groups())

    @classmethod
    def generate(cls, root_fingerprint: str) -> JoinToken:
        return cls(secrets.token_hex(6), secrets.token_hex(16), root_fingerprint)


def secret_hash(token_id: str, secret: str) -> bytes:
    """What signers store instead of the secret."""
    return hashlib.sha256(
        b"peermesh-join-token\0" + token_id.encode() + b"\0" + secret.encode()
    ).digest()


@dataclass(frozen=True)
class TokenRecord:
    """A token as the signers keep it (hashed secret, limits, who used it)."""

    token_id: str
    secret_hash: bytes
    service: str | None  # None: any service name may be requested
    expires: float  # unix seconds
    uses: int
    used_by: tuple[str, ...] = field(default=())  # hex subject public keys, one per use

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "hash": self.secret_hash,
            "service": self.service,
            "expires": self.expires,
            "uses": self.uses,
            "used_by": list(self.used_by),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TokenRecord:
        try:
            record = cls(
                token_id=str(data["id"]),
                secret_hash=bytes(data["hash"]),
                service=None if data.get("service") is None else str(data["service"]),
                expires=float(data["expires"]),
                uses=int(data["uses"]),
                used_by=tuple(str(x) for x in data.get("used_by", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenError(f"token record is malformed: {exc!r}") from None
        if len(record.secret_hash) != 32 or record.uses < 1:
            raise TokenError("token record is malformed: bad hash or uses < 1")
        return record


def check_token(
    record: TokenRecord | None,
    *,
    token_id: str,
    secret: str,
    service: str,
    subject_key: str,
    now: float,
) -> TokenRecord:
    """Decide whether ``secret`` admits a first certificate for ``service`` with this key.

    Returns the record with this use counted (unchanged when the same key asks again,
    e.g. the coordinator retrying after excluding a bad signer). Raises TokenError.
    """
    if record is None:
        raise TokenError(
            f"join token {token_id} is unknown to this signer; create one with"
            " 'peermesh token create' on a member"
        )
    if not hmac.compare_digest(record.secret_hash, secret_hash(token_id, secret)):
        raise TokenError(f"join token {token_id}: wrong secret; copy the whole token")
    if now >= record.expires:
        raise TokenError(f"join token {token_id} expired; create a new one")
    if record.service is not None and record.service != service:
        raise TokenError(
            f"join token {token_id} allows service {record.service!r}, but the CSR asks"
            f" for {service!r}; start the agent with --service {record.service}=PORT"
        )
    if subject_key in record.used_by:
        return record
    if len(record.used_by) >= record.uses:
        raise TokenError(
            f"join token {token_id} is used up ({record.uses} of {record.uses} uses);"
            " create a new one"
        )
    return replace(record, used_by=(*record.used_by, subject_key))
