"""Join tokens: a ``JoinToken`` object's spec and a MeshConfig ``joinTokens`` entry."""

from __future__ import annotations

from dataclasses import dataclass

from peermesh.policy.model.common import JSON, _drop_empty


@dataclass(frozen=True)
class JoinTokenSpec:
    """What a join token admits; the token is stored only as its SHA-256.

    ``token_sha256`` is the hex SHA-256 of the whole token string as printed by
    ``peermesh token create`` (``printf %s "$TOKEN" | sha256sum``), so replicating policy
    never leaks a token.
    """

    token_sha256: str
    #: The only service the token may enrol (its SPIFFE ID); None: any service.
    service: str | None = None
    #: RFC 3339; None: never expires (delete the object to revoke it).
    expires_at: str | None = None
    #: How many distinct agents (keys) it admits; None: unlimited until it expires.
    max_uses: int | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "tokenSha256": self.token_sha256,
                "service": self.service,
                "expiresAt": self.expires_at,
                "maxUses": self.max_uses,
            }
        )


@dataclass(frozen=True)
class JoinTokenEntry:
    """A join token declared inside the MeshConfig (``spec.joinTokens[]``), e.g. by GitOps:
    the token's id (the object name a ``JoinToken`` would have) and what it admits."""

    id: str
    spec: JoinTokenSpec

    def to_dict(self) -> JSON:
        return {"id": self.id, **self.spec.to_dict()}


__all__ = [
    "JoinTokenEntry",
    "JoinTokenSpec",
]
