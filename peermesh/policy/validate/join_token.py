"""``JoinToken`` objects and MeshConfig ``joinTokens`` entries: a token's SHA-256 and limits."""

from __future__ import annotations

import datetime as _dt

from peermesh.policy.model import JoinTokenEntry, JoinTokenSpec
from peermesh.policy.validate.common import _SHA256_HEX, _TOKEN_ID, _service
from peermesh.policy.validate.walker import _Ctx, _Fields, _int, _mapping, _str, _text


def _timestamp(ctx: _Ctx, value: object, path: str) -> str | None:
    if isinstance(value, _dt.datetime):  # YAML turns unquoted timestamps into datetimes
        value = value.isoformat()
    text = _str(ctx, value, path, what="timestamp", max_len=64)
    if text is None:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        ctx.error(
            path, f"{text!r} is not an RFC 3339 timestamp", "write e.g. '2030-01-31T12:00:00Z'"
        )
        return None
    if parsed.tzinfo is None:
        ctx.error(path, f"timestamp {text!r} has no time zone", "append 'Z' for UTC")
        return None
    return text


_token_sha256 = _text(
    pattern=_SHA256_HEX,
    what="SHA-256 (64 lowercase hex digits)",
    max_len=64,
    hint='store the SHA-256 of the whole token (printf %s "$TOKEN" | sha256sum), never'
    " the token itself",
)


def _join_token_fields(f: _Fields) -> JoinTokenSpec | None:
    digest = f.get("tokenSha256", _token_sha256)
    service = f.get("service", _service)
    expires = f.get("expiresAt", _timestamp)
    max_uses = f.get("maxUses", _int, lo=1, hi=1_000_000)
    if digest is None:
        return None
    return JoinTokenSpec(
        token_sha256=digest, service=service, expires_at=expires, max_uses=max_uses
    )


def _join_token(ctx: _Ctx, value: object, path: str) -> JoinTokenEntry | None:
    allowed = ("id", "tokenSha256", "service", "expiresAt", "maxUses")
    f = _mapping(ctx, value, path, allowed, ("id", "tokenSha256"))
    if f is None:
        return None
    token_id = f.get("id", _str, pattern=_TOKEN_ID, what="token id", max_len=64)
    spec = _join_token_fields(f)
    if token_id is None or spec is None:
        return None
    return JoinTokenEntry(id=token_id, spec=spec)


def _join_token_spec(ctx: _Ctx, value: object) -> JoinTokenSpec | None:
    f = _mapping(
        ctx, value, "spec", ("tokenSha256", "service", "expiresAt", "maxUses"), ("tokenSha256",)
    )
    if f is None:
        return None
    return _join_token_fields(f)
