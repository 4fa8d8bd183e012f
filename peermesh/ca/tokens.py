"""Join tokens: what a new agent shows to get its first certificate.

Format (one copy-pasteable string, like kubeadm's token plus discovery hash)::

    pmjt1.<id: 12 hex>.<secret: 32 hex>.<root: sha256 of the root certificate, 64 hex>

* ``id`` names the token: it is the name of its ``JoinToken`` policy object;
* ``secret`` (128 bits) is what authorizes. Policy keeps only the SHA-256 of the whole
  string (``tokenSha256``), so the replicated policy and every data dir admit nobody;
* ``root`` lets the new agent authenticate the mesh before it sends the secret: it
  pins the root certificate, and then requires the member it talks to to present a
  certificate that chains to that root (TLS 1.3, CertificateVerify proves the key).

Tokens are replicated in policy (``JoinToken`` objects, or ``MeshConfig``
``spec.joinTokens``). Uses are counted by each signer in its own durable ledger: a
signer releases a share for at most ``maxUses`` distinct keys, so with a majority
threshold (any two quorums share a signer) a token never admits more agents than it
allows. The decisions here are pure functions of (grant, uses, request, now).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

from peermesh.ca.errors import TokenError
from peermesh.policy.compiled import JoinTokenGrant

__all__ = ["JoinToken", "TokenError", "check_token", "token_sha256"]

TOKEN_PREFIX: Final[str] = "pmjt1"
_TOKEN_RE: Final[re.Pattern[str]] = re.compile(
    r"^pmjt1\.([0-9a-f]{12})\.([0-9a-f]{32})\.([0-9a-f]{64})$"
)


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


def token_sha256(token: str) -> str:
    """What policy stores instead of the token: hex SHA-256 of the whole token string."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


def check_token(
    grant: JoinTokenGrant | None,
    used_by: tuple[str, ...],
    *,
    token: JoinToken,
    service: str,
    subject_key: str,
    now: float,
) -> tuple[str, ...]:
    """Decide whether ``token`` admits a first certificate for ``service`` with this key.

    ``token`` is rebuilt by the signer with its own root fingerprint, so a token for
    another mesh never matches. Returns ``used_by`` with this key counted (unchanged when
    the same key asks again, e.g. the coordinator retrying after excluding a bad signer).
    Raises TokenError saying why not.
    """
    token_id = token.token_id
    if grant is None:
        raise TokenError(
            f"join token {token_id} is not in this signer's policy (deleted, never created,"
            " or not replicated here yet); create one with 'peermesh token create'"
        )
    if not hmac.compare_digest(grant.token_sha256, token_sha256(str(token))):
        raise TokenError(
            f"join token {token_id}: wrong secret or another mesh's token; copy the whole token"
        )
    if grant.expires is not None and now >= grant.expires:
        raise TokenError(f"join token {token_id} expired; create a new one")
    if grant.service is not None and grant.service != service:
        raise TokenError(
            f"join token {token_id} allows service {grant.service!r}, but the CSR asks"
            f" for {service!r}; start the agent with --service {grant.service}=PORT"
        )
    if subject_key in used_by:
        return used_by
    if grant.max_uses is not None and len(used_by) >= grant.max_uses:
        raise TokenError(
            f"join token {token_id} is used up ({grant.max_uses} of {grant.max_uses} uses);"
            " create a new one"
        )
    return (*used_by, subject_key)
