"""Leaf fields several kinds share: names, headers, labels, SPIFFE principals, patterns."""

from __future__ import annotations

import re

from certs.spiffe import InvalidSpiffeId, SpiffeId
from peermesh.policy.validate.walker import _Ctx, _str, _text, _type_name

# ---------------------------------------------------------------------------- patterns

_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_RULE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*")
_METHOD = re.compile(r"[A-Z]+")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_AUTHORITY = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_TOKEN_ID = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

_NAME_HINT = "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
_PRINCIPAL_HINT = (
    "principals look like 'spiffe://<trust-domain>/svc/<service>', "
    "optionally with one leading or trailing '*'"
)


_service = _text(
    pattern=_DNS_NAME,
    what="service name",
    max_len=253,
    hint=f"service names are {_NAME_HINT}, like 'reviews'",
)


def _header_name(ctx: _Ctx, value: object, path: str) -> str | None:
    """Header names are case-insensitive in HTTP; we store them lowercased (HTTP/2 style)."""
    if not isinstance(value, str):
        ctx.error(path, f"expected a header name, got {_type_name(value)}")
        return None
    return _str(
        ctx,
        value.lower(),
        path,
        pattern=_HEADER_NAME,
        what="HTTP header name",
        max_len=256,
        hint="header names are tokens such as 'x-user'; pseudo-headers cannot be used",
    )


_header_value = _text(
    pattern=_HEADER_VALUE,
    max_len=8192,
    allow_empty=True,
    what="HTTP header value (no control characters or line breaks)",
)
_query_name = _text(what="query parameter name", max_len=256)
_label_key = _text(pattern=_LABEL_KEY, what="label key", max_len=317)
_label_value = _text(pattern=_LABEL_VALUE, what="label value", max_len=63, allow_empty=True)
_subset_name = _text(
    pattern=_DNS_LABEL,
    what="subset name",
    max_len=63,
    hint="subset names are DNS labels such as 'v1' or 'canary'",
)
_rule_name = _text(pattern=_RULE_NAME, what="name", max_len=128)


def spiffe_id_problem(text: str) -> str | None:
    """Why ``text`` is not a SPIFFE ID, or None if it is one.

    Uses the same parser as identity checks (:mod:`certs.spiffe`), so a principal accepted
    here is exactly what a peer's certificate can carry.
    """
    try:
        SpiffeId.parse(text)
    except InvalidSpiffeId as exc:
        problem = str(exc)
        quoted = repr(text)
        if problem.startswith(quoted):
            problem = problem[len(quoted) :].lstrip(": ")
        return problem
    return None


def _pattern_problem(fixed: str) -> str | None:
    """Problems in the fixed part of a wildcard principal (a prefix or a suffix of an ID)."""
    if len(fixed.encode()) > 2048:
        return "is longer than 2048 bytes"
    if fixed.startswith("spiffe://"):
        domain, _, id_path = fixed[len("spiffe://") :].partition("/")
        if domain and not _TRUST_DOMAIN.fullmatch(domain):
            return f"trust domain {domain!r} must be lowercase letters, digits, '.', '-' or '_'"
    elif "://" in fixed:
        return "must use the 'spiffe://' scheme"
    else:
        id_path = fixed
    for segment in filter(None, id_path.split("/")):
        if segment in (".", ".."):
            return "path segments must not be '.' or '..'"
        if not _SPIFFE_SEGMENT.fullmatch(segment):
            return f"path segment {segment!r} may only hold letters, digits, '.', '-', '_'"
    return None


def _misplaced_star(text: str) -> bool:
    return text != "*" and ("*" in text[1:-1] or (text.startswith("*") and text.endswith("*")))


def _principal(ctx: _Ctx, value: object, path: str) -> str | None:
    """An exact SPIFFE ID, ``*``, or one wildcard at the start or end (Istio semantics)."""
    text = _str(ctx, value, path, what="SPIFFE principal", max_len=2048)
    if text is None or text == "*":
        return text
    if _misplaced_star(text):
        problem: str | None = "a '*' may only be the first or the last character"
    elif text.endswith("*"):
        prefix = text[:-1]
        problem = (
            _pattern_problem(prefix)
            if prefix.startswith("spiffe://")
            else "a prefix pattern must start with 'spiffe://'"
        )
    elif text.startswith("*"):
        suffix = text[1:]
        problem = (
            _pattern_problem(suffix)
            if suffix[:1] in ("/", ".")
            else "the part after a leading '*' must start with '/' or '.'"
        )
    else:
        problem = spiffe_id_problem(text)
    if problem:
        ctx.error(path, f"bad principal pattern {text!r}: {problem}", _PRINCIPAL_HINT)
        return None
    return text


def _spiffe_exact(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _str(ctx, value, path, what="SPIFFE ID", max_len=2048)
    if text is None:
        return None
    problem = spiffe_id_problem(text)
    if problem:
        ctx.error(
            path,
            f"bad SPIFFE ID {text!r}: {problem}",
            "write e.g. 'spiffe://mesh.local/svc/frontend' (no wildcards here)",
        )
        return None
    return text


def _wildcard_value(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _str(ctx, value, path, what="pattern", max_len=1024)
    if text is not None and _misplaced_star(text):
        ctx.error(path, f"bad pattern {text!r}: a '*' may only be the first or the last character")
        return None
    return text
