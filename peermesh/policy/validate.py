"""Strict validation of policy documents, with errors that say what, where, why and what to do.

Everything a user or a peer hands us passes through :func:`parse_object`, which either
returns a frozen model object or raises :class:`PolicyError` listing *every* problem found
(each with kind, name, a field path such as ``spec.http[0].route[1].weight`` and a reason).
Checks that need several objects at once (subsets referenced by routes, one TrafficPolicy
per host) live in :func:`check_set`; problems that are legal but probably unintended (a
route to a service no agent fronts) come back as :class:`PolicyWarning` and never refuse.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from certs.spiffe import InvalidSpiffeId, SpiffeId
from peermesh.policy.model import (
    ACTION_ALLOW,
    ALL_SERVICES,
    API_VERSION,
    AUTHORIZATION_POLICY,
    AUTHZ_ACTIONS,
    DEFAULT_CERTIFICATE_LIFETIME,
    INBOUND_ALLOW_AUTHENTICATED,
    INBOUND_POLICIES,
    JOIN_TOKEN,
    KINDS,
    LB_SIMPLE,
    MESH_CONFIG,
    MESH_CONFIG_NAME,
    MTLS_MODES,
    MTLS_STRICT,
    RETRY_ON_CONDITIONS,
    ROUTE,
    TRAFFIC_POLICY,
    AuthorizationPolicy,
    AuthorizationPolicySpec,
    AuthzRule,
    Condition,
    ConnectionPool,
    Destination,
    Fault,
    FaultAbort,
    FaultDelay,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    JoinToken,
    JoinTokenEntry,
    JoinTokenSpec,
    LoadBalancer,
    MeshConfig,
    MeshConfigSpec,
    MTLSSettings,
    Operation,
    OutlierDetection,
    Pairs,
    PolicyObject,
    RateLimit,
    Retries,
    RetryBudget,
    RevokedIdentity,
    Rewrite,
    Route,
    RouteDestination,
    RouteSpec,
    Source,
    StringMatch,
    Subset,
    TelemetrySettings,
    TrafficPolicy,
    TrafficPolicySpec,
    parse_duration,
)

#: Largest accepted object, measured as compact JSON. Policy replicates to every agent and
#: is held in memory everywhere, so one runaway object must not be able to bloat the mesh.
MAX_OBJECT_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_LIST = 1024
MAX_DESTINATIONS = 32
MAX_REGEX_LEN = 1024
MAX_DURATION = 24 * 3600.0
HOUR = 3600.0

T = TypeVar("T")


# ---------------------------------------------------------------------------- errors


class PolicyError(ValueError):
    """A refused policy object: what (kind/name), where (field path), why, and what to do.

    ``errors`` holds every problem found in the same input, this one first, so an API can
    report them all at once instead of making the user fix them one by one.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str | None = None,
        name: str | None = None,
        path: str = "",
        hint: str | None = None,
        source: str | None = None,
        errors: Sequence[PolicyError] = (),
    ) -> None:
        self.reason = reason
        self.kind = kind
        self.name = name
        self.path = path
        self.hint = hint
        self.source = source
        self.errors: tuple[PolicyError, ...] = tuple(errors) or (self,)
        super().__init__(self._describe())

    @property
    def object(self) -> str:
        """``Kind/name`` as far as known, for messages."""
        return f"{self.kind or '?'}/{self.name or '?'}"

    def _describe(self) -> str:
        text = (
            f"{self.object}: {self.path}: {self.reason}"
            if self.path
            else (f"{self.object}: {self.reason}")
        )
        if self.source:
            text = f"{self.source}: {text}"
        if self.hint:
            text += f" (hint: {self.hint})"
        if len(self.errors) > 1:
            text += f" [and {len(self.errors) - 1} more problem(s)]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Structured JSON form for the admin API; ``errors`` lists every problem found."""
        return {
            "error": "invalid_policy",
            **self.single_dict(),
            "errors": [e.single_dict() for e in self.errors],
        }

    def single_dict(self) -> dict[str, Any]:
        """This one problem as JSON, without the list of siblings."""
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "reason": self.reason,
            "hint": self.hint,
            "source": self.source,
        }

    def with_source(self, source: str | None) -> PolicyError:
        """The same problem (and its siblings) located in a file, e.g. ``routes.yaml:12``."""
        singles = [
            PolicyError(
                e.reason,
                kind=e.kind,
                name=e.name,
                path=e.path,
                hint=e.hint,
                source=e.source or source,
            )
            for e in self.errors
        ]
        return PolicyError.collect(singles)

    def identity(self) -> tuple[str | None, str | None, str, str]:
        """What the problem is, for telling new problems from ones already present."""
        return (self.kind, self.name, self.path, self.reason)

    @classmethod
    def collect(cls, errors: Sequence[PolicyError]) -> PolicyError:
        """One exception carrying all of ``errors`` (the first one's fields on top)."""
        flat = [single for error in errors for single in error.errors]
        head = flat[0]
        return cls(
            head.reason,
            kind=head.kind,
            name=head.name,
            path=head.path,
            hint=head.hint,
            source=head.source,
            errors=flat,
        )


@dataclass(frozen=True)
class PolicyWarning:
    """A legal but suspicious policy: reported to the user, never refused."""

    kind: str
    name: str
    path: str
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.path,
            "message": self.message,
            "code": self.code,
        }


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
_CONDITION_KEY = re.compile(r"request\.headers\[([^\[\]]+)\]")

#: Kinds people paste from Istio or Linkerd, mapped to ours, for a helpful hint.
_FOREIGN_KINDS = {
    "VirtualService": ROUTE,
    "DestinationRule": TRAFFIC_POLICY,
    "PeerAuthentication": MESH_CONFIG,
    "ServiceProfile": ROUTE,
}

_NAME_HINT = "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
_PRINCIPAL_HINT = (
    "principals look like 'spiffe://<trust-domain>/svc/<service>', "
    "optionally with one leading or trailing '*'"
)


# ---------------------------------------------------------------------------- the walker


class _Ctx:
    """Collects every problem in one object instead of stopping at the first."""

    def __init__(self, kind: str | None, name: str | None) -> None:
        self.kind = kind
        self.name = name
        self.errors: list[PolicyError] = []

    def error(self, path: str, reason: str, hint: str | None = None) -> None:
        self.errors.append(
            PolicyError(reason, kind=self.kind, name=self.name, path=path, hint=hint)
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


class _Fields:
    """A mapping already checked for unknown keys, with one-line access to optional fields."""

    def __init__(self, ctx: _Ctx, data: dict[str, Any], path: str) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def get(self, key: str, parse: Callable[..., T | None], **options: Any) -> T | None:
        """Parse ``key`` with ``parse(ctx, value, path, **options)``; None if absent or bad."""
        if key not in self.data:
            return None
        return parse(self.ctx, self.data[key], self.at(key), **options)

    def get_or(
        self, key: str, default: T, parse: Callable[..., T | None], **options: Any
    ) -> T | None:
        """Like :meth:`get` but ``default`` when absent (None still means invalid)."""
        if key not in self.data:
            return default
        return parse(self.ctx, self.data[key], self.at(key), **options)

    def many(
        self, key: str, parse: Callable[..., T | None], *, min_items: int = 0
    ) -> tuple[T, ...]:
        if key not in self.data:
            return ()
        return _each(self.ctx, self.data[key], self.at(key), parse, min_items=min_items)


def _mapping(
    ctx: _Ctx, value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> _Fields | None:
    """A mapping with only ``allowed`` keys; unknown keys are refused with a suggestion."""
    if not isinstance(value, Mapping):
        ctx.error(
            path or "(top level)",
            f"expected a mapping with fields {', '.join(allowed)}, got {_type_name(value)}",
        )
        return None
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            ctx.error(path, f"field names must be strings, got {_type_name(key)} {key!r}")
        elif key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            ctx.error(_join(path, key), f"unknown field '{key}'", hint)
        else:
            result[key] = item
    for key in required:
        if key not in value:
            ctx.error(_join(path, key), "required field is missing")
    return _Fields(ctx, result, path)


def _list(ctx: _Ctx, value: object, path: str, *, min_items: int = 0) -> list[Any] | None:
    if not isinstance(value, list | tuple):
        ctx.error(path, f"expected a list, got {_type_name(value)}")
        return None
    if len(value) < min_items:
        ctx.error(path, f"needs at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
        return None
    if len(value) > MAX_LIST:
        ctx.error(path, f"has {len(value)} entries, the limit is {MAX_LIST}")
        return None
    return list(value)


def _each(
    ctx: _Ctx,
    value: object,
    path: str,
    parse: Callable[..., T | None],
    *,
    min_items: int = 0,
) -> tuple[T, ...]:
    items = _list(ctx, value, path, min_items=min_items)
    if items is None:
        return ()
    out: list[T] = []
    for i, item in enumerate(items):
        parsed = parse(ctx, item, f"{path}[{i}]")
        if parsed is not None:
            out.append(parsed)
    return tuple(out)


def _str(
    ctx: _Ctx,
    value: object,
    path: str,
    *,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
    max_len: int = 1024,
    hint: str | None = None,
    allow_empty: bool = False,
) -> str | None:
    if not isinstance(value, str):
        label = f" ({what})" if what else ""
        ctx.error(path, f"expected a string{label}, got {_type_name(value)}")
        return None
    if not value and not allow_empty:
        ctx.error(path, "must not be empty")
        return None
    if len(value) > max_len:
        ctx.error(path, f"is {len(value)} characters long, the limit is {max_len}")
        return None
    if pattern is not None and not pattern.fullmatch(value):
        ctx.error(path, f"{value!r} is not a valid {what}", hint)
        return None
    return value


def _int(ctx: _Ctx, value: object, path: str, *, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.error(path, f"expected an integer, got {_type_name(value)} {value!r}")
        return None
    if not lo <= value <= hi:
        ctx.error(path, f"{value} is out of range, must be between {lo} and {hi}")
        return None
    return value


def _number(ctx: _Ctx, value: object, path: str, *, lo: float, hi: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        ctx.error(path, f"expected a number, got {_type_name(value)} {value!r}")
        return None
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        ctx.error(path, f"{value} is out of range, must be between {lo:g} and {hi:g}")
        return None
    return number


def _bool(ctx: _Ctx, value: object, path: str) -> bool | None:
    if not isinstance(value, bool):
        ctx.error(path, f"expected true or false, got {_type_name(value)} {value!r}")
        return None
    return value


def _enum(ctx: _Ctx, value: object, path: str, *, choices: Sequence[str]) -> str | None:
    if not isinstance(value, str):
        ctx.error(path, f"expected one of {', '.join(choices)}, got {_type_name(value)}")
        return None
    if value not in choices:
        upper = value.upper()
        hint = f"did you mean '{upper}'?" if upper in choices else None
        ctx.error(path, f"{value!r} is not one of {', '.join(choices)}", hint)
        return None
    return value


def _duration(
    ctx: _Ctx, value: object, path: str, *, lo: float = 0.0, hi: float = MAX_DURATION
) -> float | None:
    """Durations are strings with units; bare numbers are refused (their unit is a guess)."""
    if isinstance(value, bool) or not isinstance(value, str):
        hint = f"write e.g. '{value}s'" if isinstance(value, int | float) else None
        ctx.error(
            path,
            f"expected a duration string such as '250ms' or '2s', got {_type_name(value)}",
            hint,
        )
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        ctx.error(path, str(exc))
        return None
    if seconds <= 0.0:
        ctx.error(path, f"duration {value!r} must be greater than zero")
        return None
    if seconds < lo or seconds > hi:
        ctx.error(path, f"duration {value!r} is out of range, must be between {lo:g}s and {hi:g}s")
        return None
    return seconds


def _percentage(ctx: _Ctx, value: object, path: str) -> float | None:
    """Istio's ``{value: 0..100}`` shape."""
    fields = _mapping(ctx, value, path, ("value",), ("value",))
    if fields is None:
        return None
    return fields.get("value", _number, lo=0.0, hi=100.0)


def _regex(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _str(ctx, value, path, what="regular expression", max_len=MAX_REGEX_LEN)
    if text is None:
        return None
    try:
        re.compile(text)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        ctx.error(path, f"bad regular expression {text!r}: {exc.msg}{where}")
        return None
    return text


def _unique(ctx: _Ctx, items: Iterable[tuple[str, object]], what: str) -> None:
    seen: set[object] = set()
    for item_path, item in items:
        if item in seen:
            ctx.error(item_path, f"{what} {item!r} is listed twice")
        seen.add(item)


def _pairs(
    ctx: _Ctx,
    value: object,
    path: str,
    *,
    key_check: Callable[[_Ctx, object, str], str | None],
    value_check: Callable[[_Ctx, object, str], str | None],
) -> Pairs | None:
    """A string-to-string mapping, stored sorted so equal mappings compare (and hash) equal."""
    if not isinstance(value, Mapping):
        ctx.error(path, f"expected a mapping, got {_type_name(value)}")
        return None
    out: dict[str, str] = {}
    for raw_key, raw_value in value.items():
        sub = _join(path, str(raw_key))
        key = key_check(ctx, raw_key, sub)
        val = value_check(ctx, raw_value, sub)
        if key is not None and key in out:
            ctx.error(sub, f"'{key}' is given twice (names are case-insensitive)")
        elif key is not None and val is not None:
            out[key] = val
    return tuple(sorted(out.items()))


# ---------------------------------------------------------------------------- leaf checkers


def _service(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(
        ctx,
        value,
        path,
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


def _header_value(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(
        ctx,
        value,
        path,
        pattern=_HEADER_VALUE,
        max_len=8192,
        allow_empty=True,
        what="HTTP header value (no control characters or line breaks)",
    )


def _query_name(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(ctx, value, path, what="query parameter name", max_len=256)


def _label_key(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(ctx, value, path, pattern=_LABEL_KEY, what="label key", max_len=317)


def _label_value(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(
        ctx, value, path, pattern=_LABEL_VALUE, what="label value", max_len=63, allow_empty=True
    )


def _subset_name(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(
        ctx,
        value,
        path,
        pattern=_DNS_LABEL,
        what="subset name",
        max_len=63,
        hint="subset names are DNS labels such as 'v1' or 'canary'",
    )


def _rule_name(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(ctx, value, path, pattern=_RULE_NAME, what="name", max_len=128)


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


# ---------------------------------------------------------------------------- Route


def _string_match(
    ctx: _Ctx,
    value: object,
    path: str,
    *,
    allow_present: bool = False,
    uri: bool = False,
    method: bool = False,
) -> StringMatch | None:
    allowed = (
        ("exact", "prefix", "regex", "present") if allow_present else ("exact", "prefix", "regex")
    )
    fields = _mapping(ctx, value, path, allowed)
    if fields is None:
        return None
    if len(fields) != 1:
        ctx.error(path, f"set exactly one of {', '.join(allowed)}, found {len(fields)}")
        return None
    ((which, raw),) = fields.data.items()
    sub = fields.at(which)
    if which == "present":
        flag = _bool(ctx, raw, sub)
        return None if flag is None else StringMatch(present=flag)
    if which == "regex":
        regex = _regex(ctx, raw, sub)
        return None if regex is None else StringMatch(regex=regex)
    text = _str(ctx, raw, sub, max_len=4096, allow_empty=which == "prefix" and not uri)
    if text is None:
        return None
    if uri and not text.startswith("/"):
        ctx.error(sub, f"path {text!r} must start with '/'")
        return None
    if method and not _METHOD.fullmatch(text):
        ctx.error(
            sub, f"method {text!r} must be uppercase letters", f"did you mean '{text.upper()}'?"
        )
        return None
    return StringMatch(exact=text) if which == "exact" else StringMatch(prefix=text)


def _named_matches(
    ctx: _Ctx,
    value: object,
    path: str,
    key_check: Callable[[_Ctx, object, str], str | None],
) -> tuple[tuple[str, StringMatch], ...]:
    if not isinstance(value, Mapping):
        ctx.error(path, f"expected a mapping of name to match, got {_type_name(value)}")
        return ()
    out: dict[str, StringMatch] = {}
    for raw_name, raw_match in value.items():
        sub = _join(path, str(raw_name))
        name = key_check(ctx, raw_name, sub)
        match = _string_match(ctx, raw_match, sub, allow_present=True)
        if name is not None and name in out:
            ctx.error(sub, f"'{name}' is matched twice (header names are case-insensitive)")
        elif name is not None and match is not None:
            out[name] = match
    return tuple(sorted(out.items()))


def _http_match(ctx: _Ctx, value: object, path: str) -> HTTPMatch | None:
    f = _mapping(ctx, value, path, ("name", "uri", "method", "headers", "queryParams"))
    if f is None:
        return None
    headers = f.get("headers", _named_matches, key_check=_header_name) or ()
    query = f.get("queryParams", _named_matches, key_check=_query_name) or ()
    return HTTPMatch(
        name=f.get("name", _rule_name),
        uri=f.get("uri", _string_match, uri=True),
        method=f.get("method", _string_match, method=True),
        headers=headers,
        query_params=query,
    )


def _destination(ctx: _Ctx, value: object, path: str) -> Destination | None:
    f = _mapping(ctx, value, path, ("host", "subset", "port"), ("host",))
    if f is None:
        return None
    host = f.get("host", _service)
    subset = f.get("subset", _subset_name)
    port = f.get("port", _int, lo=1, hi=65535)
    return None if host is None else Destination(host=host, subset=subset, port=port)


def _route_destinations(ctx: _Ctx, value: object, path: str) -> tuple[RouteDestination, ...]:
    items = _list(ctx, value, path, min_items=1)
    if items is None:
        return ()
    if len(items) > MAX_DESTINATIONS:
        ctx.error(path, f"has {len(items)} destinations, the limit is {MAX_DESTINATIONS}")
        return ()
    out: list[RouteDestination] = []
    total = 0
    weights_ok = True
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        f = _mapping(ctx, item, sub, ("destination", "weight"), ("destination",))
        if f is None:
            weights_ok = False
            continue
        dest = f.get("destination", _destination)
        weight: int | None = 100
        if "weight" in f:
            weight = f.get("weight", _int, lo=0, hi=100)
        elif len(items) > 1:
            ctx.error(
                f.at("weight"),
                "required when a rule has more than one destination",
                "give every destination a weight; the weights must add up to 100",
            )
            weight = None
        if weight is None:
            weights_ok = False
        else:
            total += weight
        if dest is not None and weight is not None:
            out.append(RouteDestination(destination=dest, weight=weight))
    if weights_ok and total != 100:
        ctx.error(path, f"weights add up to {total}, they must add up to 100")
    _unique(
        ctx,
        (
            (
                f"{path}[{i}].destination",
                (d.destination.host, d.destination.subset, d.destination.port),
            )
            for i, d in enumerate(out)
        ),
        "destination",
    )
    return tuple(out)


def _retry_on(ctx: _Ctx, value: object, path: str) -> tuple[str, ...] | None:
    conditions: list[Any]
    if isinstance(value, str):
        conditions = [c.strip() for c in value.split(",")]
    elif isinstance(value, list):
        conditions = value
    else:
        ctx.error(path, f"expected a comma-separated string or a list, got {_type_name(value)}")
        return None
    out: list[str] = []
    for condition in conditions:
        is_status = (
            isinstance(condition, str)
            and len(condition) == 3
            and condition.isdigit()
            and 400 <= int(condition) <= 599
        )
        if not isinstance(condition, str) or not condition:
            ctx.error(path, f"bad retry condition {condition!r}")
        elif condition in out:
            ctx.error(path, f"retry condition '{condition}' is listed twice")
        elif condition in RETRY_ON_CONDITIONS or is_status:
            out.append(condition)
        else:
            known = sorted(RETRY_ON_CONDITIONS)
            close = difflib.get_close_matches(condition, known, n=1)
            ctx.error(
                path,
                f"unknown retry condition '{condition}'",
                f"did you mean '{close[0]}'?"
                if close
                else f"use {', '.join(known)} or a status code 400-599",
            )
    return tuple(out)


def _retries(ctx: _Ctx, value: object, path: str) -> Retries | None:
    f = _mapping(ctx, value, path, ("attempts", "perTryTimeout", "retryOn"), ("attempts",))
    if f is None:
        return None
    attempts = f.get("attempts", _int, lo=0, hi=10)
    per_try = f.get("perTryTimeout", _duration)
    retry_on = f.get("retryOn", _retry_on) or ()
    if attempts is None:
        return None
    return Retries(attempts=attempts, per_try_timeout=per_try, retry_on=retry_on)


def _fault_delay(ctx: _Ctx, value: object, path: str) -> FaultDelay | None:
    f = _mapping(ctx, value, path, ("fixedDelay", "percentage"), ("fixedDelay",))
    if f is None:
        return None
    fixed = f.get("fixedDelay", _duration, hi=HOUR)
    pct = f.get_or("percentage", 100.0, _percentage)
    if fixed is None or pct is None:
        return None
    return FaultDelay(fixed_delay=fixed, percentage=pct)


def _fault_abort(ctx: _Ctx, value: object, path: str) -> FaultAbort | None:
    f = _mapping(ctx, value, path, ("httpStatus", "percentage"), ("httpStatus",))
    if f is None:
        return None
    status = f.get("httpStatus", _int, lo=200, hi=599)
    pct = f.get_or("percentage", 100.0, _percentage)
    if status is None or pct is None:
        return None
    return FaultAbort(http_status=status, percentage=pct)


def _fault(ctx: _Ctx, value: object, path: str) -> Fault | None:
    f = _mapping(ctx, value, path, ("delay", "abort"))
    if f is None:
        return None
    if not len(f):
        ctx.error(path, "set 'delay', 'abort' or both")
        return None
    delay = f.get("delay", _fault_delay)
    abort = f.get("abort", _fault_abort)
    if delay is None and abort is None:
        return None
    return Fault(delay=delay, abort=abort)


def _header_ops(ctx: _Ctx, value: object, path: str) -> HeaderOperations | None:
    f = _mapping(ctx, value, path, ("set", "add", "remove"))
    if f is None:
        return None
    pairs = {"key_check": _header_name, "value_check": _header_value}
    remove = f.many("remove", _header_name)
    _unique(ctx, ((f.at("remove"), r) for r in remove), "header")
    ops = HeaderOperations(
        set=f.get("set", _pairs, **pairs) or (),
        add=f.get("add", _pairs, **pairs) or (),
        remove=remove,
    )
    # Empty means absent: one canonical form, so the content hash does not depend on it.
    return ops if ops != HeaderOperations() else None


def _headers(ctx: _Ctx, value: object, path: str) -> Headers | None:
    f = _mapping(ctx, value, path, ("request", "response"))
    if f is None:
        return None
    headers = Headers(
        request=f.get("request", _header_ops), response=f.get("response", _header_ops)
    )
    return headers if headers != Headers() else None


def _uri_path(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _str(ctx, value, path, max_len=4096)
    if text is not None and not text.startswith("/"):
        ctx.error(path, f"path {text!r} must start with '/'")
        return None
    return text


def _rewrite(ctx: _Ctx, value: object, path: str) -> Rewrite | None:
    f = _mapping(ctx, value, path, ("uri", "authority"))
    if f is None:
        return None
    if not len(f):
        ctx.error(path, "set 'uri', 'authority' or both")
        return None
    authority = f.get(
        "authority", _str, pattern=_AUTHORITY, what="authority (host[:port])", max_len=260
    )
    return Rewrite(uri=f.get("uri", _uri_path), authority=authority)


_HTTP_ROUTE_FIELDS = (
    "name",
    "match",
    "route",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercentage",
    "headers",
    "rewrite",
)


def _http_route(ctx: _Ctx, value: object, path: str) -> HTTPRoute | None:
    f = _mapping(ctx, value, path, _HTTP_ROUTE_FIELDS, ("route",))
    if f is None:
        return None
    route = f.get("route", _route_destinations) or ()
    timeout = f.get("timeout", _duration)
    retries = f.get("retries", _retries)
    mirror_pct = f.get("mirrorPercentage", _percentage)
    if "mirrorPercentage" in f and "mirror" not in f:
        ctx.error(
            f.at("mirrorPercentage"),
            "has no effect without 'mirror'",
            "add a 'mirror' destination or drop mirrorPercentage",
        )
    per_try = retries.per_try_timeout if retries is not None else None
    if per_try is not None and timeout is not None and per_try > timeout:
        ctx.error(
            f.at("retries.perTryTimeout"),
            "is longer than the rule's timeout, so a retry could never happen",
        )
    rule = HTTPRoute(
        name=f.get("name", _rule_name),
        match=f.many("match", _http_match),
        route=route,
        timeout=timeout,
        retries=retries,
        fault=f.get("fault", _fault),
        mirror=f.get("mirror", _destination),
        mirror_percentage=mirror_pct,
        headers=f.get("headers", _headers),
        rewrite=f.get("rewrite", _rewrite),
    )
    return rule if route else None


def _route_spec(ctx: _Ctx, value: object) -> RouteSpec | None:
    f = _mapping(ctx, value, "spec", ("host", "http"), ("host", "http"))
    if f is None:
        return None
    host = f.get("host", _service)
    http = f.many("http", _http_route, min_items=1)
    _unique(ctx, ((f"spec.http[{i}].name", r.name) for i, r in enumerate(http) if r.name), "rule")
    if host is None or not http:
        return None
    return RouteSpec(host=host, http=http)


# ---------------------------------------------------------------------------- TrafficPolicy


def _consistent_hash(ctx: _Ctx, value: object, path: str) -> str | None:
    f = _mapping(ctx, value, path, ("httpHeaderName",), ("httpHeaderName",))
    return None if f is None else f.get("httpHeaderName", _header_name)


def _load_balancer(ctx: _Ctx, value: object, path: str) -> LoadBalancer | None:
    f = _mapping(ctx, value, path, ("simple", "consistentHash"))
    if f is None:
        return None
    if len(f) != 1:
        ctx.error(path, "set exactly one of 'simple' or 'consistentHash'")
        return None
    if "simple" in f:
        simple = f.get("simple", _enum, choices=LB_SIMPLE)
        return None if simple is None else LoadBalancer(simple=simple)
    header = f.get("consistentHash", _consistent_hash)
    return None if header is None else LoadBalancer(simple=None, consistent_hash_header=header)


_LIMIT = 10_000_000


def _connection_pool(ctx: _Ctx, value: object, path: str) -> ConnectionPool | None:
    f = _mapping(ctx, value, path, ("tcp", "http"))
    if f is None:
        return None
    tcp_fields = ("maxConnections", "connectTimeout")
    http_fields = (
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "idleTimeout",
    )
    tcp = _mapping(ctx, f.data.get("tcp", {}), f.at("tcp"), tcp_fields)
    http = _mapping(ctx, f.data.get("http", {}), f.at("http"), http_fields)
    if tcp is None or http is None:
        return None
    pool = ConnectionPool(
        max_connections=tcp.get("maxConnections", _int, lo=1, hi=_LIMIT),
        connect_timeout=tcp.get("connectTimeout", _duration, hi=600.0),
        http1_max_pending_requests=http.get("http1MaxPendingRequests", _int, lo=1, hi=_LIMIT),
        http2_max_requests=http.get("http2MaxRequests", _int, lo=1, hi=_LIMIT),
        max_requests_per_connection=http.get("maxRequestsPerConnection", _int, lo=1, hi=_LIMIT),
        idle_timeout=http.get("idleTimeout", _duration),
    )
    return pool if pool != ConnectionPool() else None  # empty means absent


def _outlier_detection(ctx: _Ctx, value: object, path: str) -> OutlierDetection | None:
    allowed = (
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
    )
    f = _mapping(ctx, value, path, allowed)
    if f is None:
        return None
    d = OutlierDetection()
    c5 = f.get_or("consecutive5xxErrors", d.consecutive_5xx_errors, _int, lo=0, hi=1000)
    gateway = f.get("consecutiveGatewayErrors", _int, lo=0, hi=1000)
    interval = f.get_or("interval", d.interval, _duration, hi=HOUR)
    base = f.get_or("baseEjectionTime", d.base_ejection_time, _duration, hi=HOUR)
    max_pct = f.get_or("maxEjectionPercent", d.max_ejection_percent, _int, lo=0, hi=100)
    if c5 is None or interval is None or base is None or max_pct is None:
        return None
    return OutlierDetection(
        consecutive_5xx_errors=c5,
        consecutive_gateway_errors=gateway,
        interval=interval,
        base_ejection_time=base,
        max_ejection_percent=max_pct,
    )


def _rate_limit(ctx: _Ctx, value: object, path: str) -> RateLimit | None:
    allowed = ("maxTokens", "tokensPerFill", "fillInterval", "perSource")
    f = _mapping(ctx, value, path, allowed, ("maxTokens", "tokensPerFill", "fillInterval"))
    if f is None:
        return None
    max_tokens = f.get("maxTokens", _int, lo=1, hi=_LIMIT)
    per_fill = f.get("tokensPerFill", _int, lo=1, hi=_LIMIT)
    interval = f.get("fillInterval", _duration, hi=HOUR)
    per_source = f.get_or("perSource", False, _bool)
    if max_tokens is None or per_fill is None or interval is None or per_source is None:
        return None
    if per_fill > max_tokens:
        ctx.error(
            f.at("tokensPerFill"),
            f"{per_fill} is more than maxTokens ({max_tokens}), so part of every fill is lost",
        )
        return None
    return RateLimit(
        max_tokens=max_tokens,
        tokens_per_fill=per_fill,
        fill_interval=interval,
        per_source=per_source,
    )


def _retry_budget(ctx: _Ctx, value: object, path: str) -> RetryBudget | None:
    f = _mapping(ctx, value, path, ("retryRatio", "minRetriesPerSecond", "ttl"))
    if f is None:
        return None
    d = RetryBudget()
    ratio = f.get_or("retryRatio", d.retry_ratio, _number, lo=0.0, hi=10.0)
    floor = f.get_or("minRetriesPerSecond", d.min_retries_per_second, _int, lo=0, hi=1_000_000)
    ttl = f.get_or("ttl", d.ttl, _duration, hi=600.0)
    if ratio is None or floor is None or ttl is None:
        return None
    return RetryBudget(retry_ratio=ratio, min_retries_per_second=floor, ttl=ttl)


def _subset(ctx: _Ctx, value: object, path: str) -> Subset | None:
    f = _mapping(ctx, value, path, ("name", "labels"), ("name", "labels"))
    if f is None:
        return None
    name = f.get("name", _subset_name)
    labels = f.get("labels", _pairs, key_check=_label_key, value_check=_label_value)
    if name is None or labels is None:
        return None
    return Subset(name=name, labels=labels)


def _traffic_policy_spec(ctx: _Ctx, value: object) -> TrafficPolicySpec | None:
    allowed = (
        "host",
        "loadBalancer",
        "connectionPool",
        "outlierDetection",
        "rateLimit",
        "retryBudget",
        "subsets",
    )
    f = _mapping(ctx, value, "spec", allowed, ("host",))
    if f is None:
        return None
    subsets = f.many("subsets", _subset)
    _unique(ctx, ((f"spec.subsets[{i}].name", s.name) for i, s in enumerate(subsets)), "subset")
    host = f.get("host", _service)
    spec = TrafficPolicySpec(
        host=host or "",
        load_balancer=f.get("loadBalancer", _load_balancer),
        connection_pool=f.get("connectionPool", _connection_pool),
        outlier_detection=f.get("outlierDetection", _outlier_detection),
        rate_limit=f.get("rateLimit", _rate_limit),
        retry_budget=f.get("retryBudget", _retry_budget),
        subsets=subsets,
    )
    return None if host is None else spec


# ---------------------------------------------------------------------------- AuthorizationPolicy


def _source(ctx: _Ctx, value: object, path: str) -> Source | None:
    outer = _mapping(ctx, value, path, ("source",), ("source",))
    if outer is None or "source" not in outer:
        return None
    f = _mapping(ctx, outer.data["source"], outer.at("source"), ("principals", "notPrincipals"))
    if f is None:
        return None
    return Source(
        principals=f.many("principals", _principal, min_items=1),
        not_principals=f.many("notPrincipals", _principal, min_items=1),
    )


def _method_name(ctx: _Ctx, value: object, path: str) -> str | None:
    hint = f"did you mean '{value.upper()}'?" if isinstance(value, str) else None
    return _str(
        ctx,
        value,
        path,
        pattern=_METHOD,
        what="HTTP method (uppercase, e.g. GET)",
        max_len=32,
        hint=hint,
    )


def _auth_path(ctx: _Ctx, value: object, path: str) -> str | None:
    text = _wildcard_value(ctx, value, path)
    if text is not None and not text.startswith(("/", "*")):
        ctx.error(path, f"path pattern {text!r} must start with '/' or '*'")
        return None
    return text


def _port(ctx: _Ctx, value: object, path: str) -> int | None:
    """Istio writes ports as strings; both spellings are accepted, integers are stored."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return _int(ctx, value, path, lo=1, hi=65535)


def _operation(ctx: _Ctx, value: object, path: str) -> Operation | None:
    outer = _mapping(ctx, value, path, ("operation",), ("operation",))
    if outer is None or "operation" not in outer:
        return None
    allowed = ("methods", "notMethods", "paths", "notPaths", "ports", "notPorts")
    f = _mapping(ctx, outer.data["operation"], outer.at("operation"), allowed)
    if f is None:
        return None
    return Operation(
        methods=f.many("methods", _method_name, min_items=1),
        not_methods=f.many("notMethods", _method_name, min_items=1),
        paths=f.many("paths", _auth_path, min_items=1),
        not_paths=f.many("notPaths", _auth_path, min_items=1),
        ports=f.many("ports", _port, min_items=1),
        not_ports=f.many("notPorts", _port, min_items=1),
    )


def _condition_header(ctx: _Ctx, value: object, path: str) -> str | None:
    key = _str(ctx, value, path, max_len=300)
    if key is None:
        return None
    match = _CONDITION_KEY.fullmatch(key)
    if match is None:
        ctx.error(path, f"unsupported condition key {key!r}", "supported: request.headers[<name>]")
        return None
    return _header_name(ctx, match.group(1), path)


def _condition(ctx: _Ctx, value: object, path: str) -> Condition | None:
    f = _mapping(ctx, value, path, ("key", "values", "notValues"), ("key",))
    if f is None:
        return None
    header = f.get("key", _condition_header)
    values = f.many("values", _wildcard_value, min_items=1)
    not_values = f.many("notValues", _wildcard_value, min_items=1)
    if "values" not in f and "notValues" not in f:
        ctx.error(path, "set 'values', 'notValues' or both")
        return None
    if header is None:
        return None
    return Condition(
        key=f"request.headers[{header}]", header=header, values=values, not_values=not_values
    )


def _authz_rule(ctx: _Ctx, value: object, path: str) -> AuthzRule | None:
    f = _mapping(ctx, value, path, ("from", "to", "when"))
    if f is None:
        return None
    return AuthzRule(
        from_=f.many("from", _source, min_items=1),
        to=f.many("to", _operation, min_items=1),
        when=f.many("when", _condition, min_items=1),
    )


def _authz_service(ctx: _Ctx, value: object, path: str) -> str | None:
    return ALL_SERVICES if value == ALL_SERVICES else _service(ctx, value, path)


def _authz_spec(ctx: _Ctx, value: object) -> AuthorizationPolicySpec | None:
    f = _mapping(ctx, value, "spec", ("service", "action", "rules"), ("service",))
    if f is None:
        return None
    service = f.get("service", _authz_service)
    action = f.get_or("action", ACTION_ALLOW, _enum, choices=AUTHZ_ACTIONS)
    rules = f.many("rules", _authz_rule)
    if service is None or action is None:
        return None
    return AuthorizationPolicySpec(service=service, action=action, rules=rules)


# ---------------------------------------------------------------------------- MeshConfig


def _mtls_mode(ctx: _Ctx, value: object, path: str) -> str | None:
    return _enum(ctx, value, path, choices=MTLS_MODES)


def _mtls(ctx: _Ctx, value: object, path: str) -> MTLSSettings | None:
    f = _mapping(ctx, value, path, ("mode", "services"))
    if f is None:
        return None
    mode = f.get_or("mode", MTLS_STRICT, _mtls_mode)
    no_overrides: Pairs = ()
    services = f.get_or(
        "services", no_overrides, _pairs, key_check=_service, value_check=_mtls_mode
    )
    if mode is None or services is None:
        return None
    return MTLSSettings(mode=mode, services=services)


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


def _token_sha256(ctx: _Ctx, value: object, path: str) -> str | None:
    return _str(
        ctx,
        value,
        path,
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
    return JoinTokenEntry(
        id=token_id,
        token_sha256=spec.token_sha256,
        expires_at=spec.expires_at,
        max_uses=spec.max_uses,
        service=spec.service,
    )


def _join_token_spec(ctx: _Ctx, value: object) -> JoinTokenSpec | None:
    f = _mapping(
        ctx, value, "spec", ("tokenSha256", "service", "expiresAt", "maxUses"), ("tokenSha256",)
    )
    if f is None:
        return None
    return _join_token_fields(f)


def _revoked(ctx: _Ctx, value: object, path: str) -> RevokedIdentity | None:
    f = _mapping(ctx, value, path, ("identity", "reason"), ("identity",))
    if f is None:
        return None
    identity = f.get("identity", _spiffe_exact)
    reason = f.get("reason", _str, what="reason", max_len=1024)
    return None if identity is None else RevokedIdentity(identity=identity, reason=reason)


def _telemetry(ctx: _Ctx, value: object, path: str) -> TelemetrySettings | None:
    f = _mapping(ctx, value, path, ("accessLog", "tracing"))
    if f is None:
        return None
    access_log = None
    if "accessLog" in f:
        log_fields = _mapping(ctx, f.data["accessLog"], f.at("accessLog"), ("enabled",))
        if log_fields is not None:
            access_log = log_fields.get("enabled", _bool)
    sampling = None
    if "tracing" in f:
        tracing = _mapping(ctx, f.data["tracing"], f.at("tracing"), ("randomSamplingPercentage",))
        if tracing is not None:
            sampling = tracing.get("randomSamplingPercentage", _number, lo=0.0, hi=100.0)
    return TelemetrySettings(
        access_log=access_log,
        random_sampling_percentage=None if sampling is None else float(sampling),
    )


def _mesh_config_spec(ctx: _Ctx, value: object) -> MeshConfigSpec | None:
    allowed = (
        "mtls",
        "defaultInboundPolicy",
        "certificateLifetime",
        "joinTokens",
        "revokedIdentities",
        "admins",
        "telemetry",
    )
    f = _mapping(ctx, value, "spec", allowed)
    if f is None:
        return None
    mtls = f.get_or("mtls", MTLSSettings(), _mtls)
    inbound = f.get_or(
        "defaultInboundPolicy", INBOUND_ALLOW_AUTHENTICATED, _enum, choices=INBOUND_POLICIES
    )
    lifetime = f.get_or(
        "certificateLifetime", DEFAULT_CERTIFICATE_LIFETIME, _duration, lo=60.0, hi=90 * 24 * HOUR
    )
    tokens = f.many("joinTokens", _join_token)
    _unique(ctx, ((f"spec.joinTokens[{i}].id", t.id) for i, t in enumerate(tokens)), "token id")
    revoked = f.many("revokedIdentities", _revoked)
    _unique(
        ctx,
        ((f"spec.revokedIdentities[{i}].identity", r.identity) for i, r in enumerate(revoked)),
        "identity",
    )
    admins = f.many("admins", _spiffe_exact)
    _unique(ctx, ((f"spec.admins[{i}]", a) for i, a in enumerate(admins)), "admin")
    telemetry = f.get_or("telemetry", TelemetrySettings(), _telemetry)
    if mtls is None or inbound is None or lifetime is None or telemetry is None:
        return None
    return MeshConfigSpec(
        mtls=mtls,
        default_inbound_policy=inbound,
        certificate_lifetime=lifetime,
        join_tokens=tokens,
        revoked_identities=revoked,
        admins=admins,
        telemetry=telemetry,
    )


# ---------------------------------------------------------------------------- objects


def shape_problem(
    data: object, limit: int = MAX_OBJECT_BYTES, reported_limit: int = MAX_OBJECT_BYTES
) -> str | None:
    """Why ``data`` is too big or too deeply nested to be a policy object, or None.

    One iterative walk that stops as soon as a limit is passed, so a 10 MB object or a YAML
    alias bomb is refused without ever being serialised in full. Sizes approximate compact
    JSON (UTF-8) closely enough for a limit.
    """
    total = 0
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"object is nested more than {MAX_DEPTH} levels deep"
        # Concrete types first: an ABC isinstance check per scalar would dominate the walk.
        if isinstance(item, str):
            total += (len(item) if item.isascii() else len(item.encode("utf-8", "replace"))) + 3
        elif isinstance(item, bool | int | float) or item is None:
            total += 6
        elif isinstance(item, dict | Mapping):
            total += 2
            for key, value in item.items():
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(item, list | tuple):
            total += 2
            stack.extend((v, depth + 1) for v in item)
        else:
            total += len(str(item)) + 1
        if total > limit:
            return (
                f"object too large: at least {total} bytes encoded, the limit is "
                f"{reported_limit} bytes"
            )
    return None


_SPEC_PARSERS: dict[str, Callable[[_Ctx, object], Any]] = {
    ROUTE: _route_spec,
    TRAFFIC_POLICY: _traffic_policy_spec,
    AUTHORIZATION_POLICY: _authz_spec,
    MESH_CONFIG: _mesh_config_spec,
    JOIN_TOKEN: _join_token_spec,
}


def _kind(ctx: _Ctx, value: object, path: str) -> str | None:
    if isinstance(value, str) and value in KINDS:
        return value
    if isinstance(value, str) and value in _FOREIGN_KINDS:
        hint = f"the peermesh equivalent is '{_FOREIGN_KINDS[value]}'"
    else:
        close = difflib.get_close_matches(str(value), KINDS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"kinds are {', '.join(KINDS)}"
    ctx.error(path, f"unknown kind {value!r}", hint)
    return None


def check_object(
    data: object, *, size_checked: bool = False
) -> tuple[PolicyObject | None, list[PolicyError]]:
    """Parse one document; returns the object or every problem found (never both).

    ``size_checked`` skips the size/depth walk for data decoded from JSON text whose length
    the caller already bounded (records from peers); the schema-driven parser never descends
    into unknown fields, so depth cannot hurt it.
    """
    obj, _, errors = check_object_canonical(data, size_checked=size_checked)
    return obj, errors


def check_object_canonical(
    data: object, *, size_checked: bool = False
) -> tuple[PolicyObject | None, str | None, list[PolicyError]]:
    """:func:`check_object` that also returns the canonical JSON it had to compute."""
    raw_kind = data.get("kind") if isinstance(data, Mapping) else None
    raw_name = data.get("name") if isinstance(data, Mapping) else None
    ctx = _Ctx(
        raw_kind if isinstance(raw_kind, str) else None,
        raw_name if isinstance(raw_name, str) else None,
    )
    if not isinstance(data, Mapping):
        ctx.error(
            "", f"a policy object is a mapping with kind, name and spec, got {_type_name(data)}"
        )
        return None, None, ctx.errors
    # Early guard (generous, approximate): never walk or serialise absurd inputs in full.
    problem = None if size_checked else shape_problem(data, 2 * MAX_OBJECT_BYTES)
    if problem is not None:
        hint = (
            "split it into several objects (one Route per service)" if "large" in problem else None
        )
        ctx.error("", problem, hint)
        return None, None, ctx.errors
    if "metadata" in data and "name" not in data:
        ctx.error(
            "metadata",
            "unknown field 'metadata'",
            "peermesh objects put 'name' at the top level, next to 'kind'",
        )
        return None, None, ctx.errors
    f = _mapping(ctx, data, "", ("apiVersion", "kind", "name", "spec"), ("kind", "name", "spec"))
    assert f is not None
    if "apiVersion" in f and f.data["apiVersion"] != API_VERSION:
        ctx.error(
            "apiVersion",
            f"unsupported apiVersion {f.data['apiVersion']!r}",
            f"use '{API_VERSION}' or leave it out",
        )
    kind = f.get("kind", _kind)
    name = f.get(
        "name",
        _str,
        pattern=_DNS_NAME,
        what="object name",
        max_len=253,
        hint=f"names are {_NAME_HINT}",
    )
    if kind == MESH_CONFIG and name is not None and name != MESH_CONFIG_NAME:
        ctx.error(
            "name",
            f"a MeshConfig must be named '{MESH_CONFIG_NAME}', not {name!r}",
            "there is exactly one mesh configuration",
        )
    if kind == JOIN_TOKEN and name is not None and not _TOKEN_ID.fullmatch(name):
        ctx.error(
            "name",
            f"a JoinToken's name is its token id (lowercase letters, digits, '-'), not {name!r}",
            "'peermesh token create' names it for you",
        )
    spec = _SPEC_PARSERS[kind](ctx, f.data["spec"]) if kind is not None and "spec" in f else None
    if ctx.errors or kind is None or name is None or spec is None:
        if not ctx.errors:  # defensive: a parser gave up without saying why
            ctx.error("spec", "invalid spec")
        return None, None, ctx.errors
    obj: PolicyObject
    if kind == ROUTE:
        obj = Route(name=name, spec=spec)
    elif kind == TRAFFIC_POLICY:
        obj = TrafficPolicy(name=name, spec=spec)
    elif kind == AUTHORIZATION_POLICY:
        obj = AuthorizationPolicy(name=name, spec=spec)
    elif kind == JOIN_TOKEN:
        obj = JoinToken(name=name, spec=spec)
    else:
        obj = MeshConfig(name=name, spec=spec)
    # The authoritative limit is on the canonical encoding, which every replica computes
    # identically: an object accepted here is never refused by a peer for its size.
    canonical = canonical_json(obj)
    size = len(canonical.encode())
    if size > MAX_OBJECT_BYTES:
        ctx.error(
            "",
            f"object too large: {size} bytes encoded, the limit is {MAX_OBJECT_BYTES} bytes",
            "split it into several objects",
        )
        return None, None, ctx.errors
    return obj, canonical, []


def parse_object(data: object) -> PolicyObject:
    """Parse and validate one document (a mapping from YAML or JSON).

    Raises :class:`PolicyError` describing every problem if the document is invalid.
    """
    obj, errors = check_object(data)
    if errors:
        raise PolicyError.collect(errors)
    assert obj is not None
    return obj


def canonical_json(obj: PolicyObject) -> str:
    """The one spelling of an object that every replica hashes and stores."""
    return json.dumps(obj.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def normalize(obj: PolicyObject) -> PolicyObject:
    """Re-validate an object built in code (dataclasses do not validate on construction)."""
    return parse_object(obj.to_dict())


# ---------------------------------------------------------------------------- sets of objects


@dataclass(frozen=True)
class SetCheck:
    """Cross-object problems: ``errors`` refuse an edit, ``warnings`` are only reported."""

    errors: tuple[PolicyError, ...]
    warnings: tuple[PolicyWarning, ...]


def hosts_of(obj: PolicyObject) -> frozenset[str]:
    """Every service an object names, so cross-checks can be limited to related objects."""
    if isinstance(obj, Route):
        hosts = {obj.spec.host}
        for rule in obj.spec.http:
            hosts.update(d.destination.host for d in rule.route)
            if rule.mirror is not None:
                hosts.add(rule.mirror.host)
        return frozenset(hosts)
    if isinstance(obj, TrafficPolicy):
        return frozenset({obj.spec.host})
    if isinstance(obj, AuthorizationPolicy):
        return frozenset({obj.spec.service})
    return frozenset()


class _SetChecker:
    def __init__(self, objects: Iterable[PolicyObject], known: Collection[str] | None) -> None:
        self.objects = sorted(objects, key=lambda o: (o.kind, o.name))
        self.known = known
        self.errors: list[PolicyError] = []
        self.warnings: list[PolicyWarning] = []
        self.policies: dict[str, TrafficPolicy] = {}

    def warn(self, obj: PolicyObject, path: str, message: str, code: str) -> None:
        self.warnings.append(PolicyWarning(obj.kind, obj.name, path, message, code))

    def fail(self, obj: PolicyObject, path: str, reason: str, hint: str | None = None) -> None:
        self.errors.append(PolicyError(reason, kind=obj.kind, name=obj.name, path=path, hint=hint))

    def unknown_service(self, obj: PolicyObject, path: str, host: str) -> None:
        if self.known is not None and host != ALL_SERVICES and host not in self.known:
            self.warn(obj, path, f"no agent fronts service '{host}'", "unknown-service")

    def run(self) -> SetCheck:
        seen: set[str] = set()
        routes_by_host: dict[str, list[str]] = {}
        for obj in self.objects:
            if obj.key in seen:
                self.fail(obj, "name", "is given more than once in the same input")
            seen.add(obj.key)
            if isinstance(obj, TrafficPolicy):
                first = self.policies.setdefault(obj.spec.host, obj)
                if first.name != obj.name:
                    self.fail(
                        obj,
                        "spec.host",
                        f"host '{obj.spec.host}' already has TrafficPolicy '{first.name}'",
                        f"edit TrafficPolicy/{first.name}; a host has one traffic policy",
                    )
            elif isinstance(obj, Route):
                routes_by_host.setdefault(obj.spec.host, []).append(obj.name)
        for obj in self.objects:
            if isinstance(obj, Route):
                self.route(obj)
            elif isinstance(obj, TrafficPolicy):
                self.unknown_service(obj, "spec.host", obj.spec.host)
            elif isinstance(obj, AuthorizationPolicy):
                self.unknown_service(obj, "spec.service", obj.spec.service)
        for host, names in routes_by_host.items():
            for name in names[1:]:
                self.warnings.append(
                    PolicyWarning(
                        ROUTE,
                        name,
                        "spec.host",
                        f"host '{host}' is also routed by Route '{names[0]}'; "
                        "their rules are evaluated in name order",
                        "shared-host",
                    )
                )
        return SetCheck(errors=tuple(self.errors), warnings=tuple(self.warnings))

    def route(self, obj: Route) -> None:
        self.unknown_service(obj, "spec.host", obj.spec.host)
        catch_all: int | None = None
        for i, rule in enumerate(obj.spec.http):
            rule_path = f"spec.http[{i}]"
            if catch_all is not None:
                self.warn(
                    obj,
                    rule_path,
                    f"is never reached: rule {catch_all} matches every request",
                    "unreachable-rule",
                )
            elif not rule.match:
                catch_all = i
            targets = [
                (f"{rule_path}.route[{j}].destination", d.destination)
                for j, d in enumerate(rule.route)
            ]
            if rule.mirror is not None:
                targets.append((f"{rule_path}.mirror", rule.mirror))
            for path, dest in targets:
                self.unknown_service(obj, f"{path}.host", dest.host)
                if dest.subset is not None:
                    self.subset(obj, f"{path}.subset", dest)

    def subset(self, obj: Route, path: str, dest: Destination) -> None:
        policy = self.policies.get(dest.host)
        if policy is None:
            self.fail(
                obj,
                path,
                f"subset '{dest.subset}' is unknown: no TrafficPolicy defines subsets for "
                f"host '{dest.host}'",
                f"apply a TrafficPolicy for '{dest.host}' defining it in the same change",
            )
        elif dest.subset is not None and policy.spec.subset(dest.subset) is None:
            defined = ", ".join(s.name for s in policy.spec.subsets) or "none"
            self.fail(
                obj,
                path,
                f"subset '{dest.subset}' is not defined for host '{dest.host}' "
                f"(TrafficPolicy '{policy.name}' defines: {defined})",
            )


def check_set(
    objects: Iterable[PolicyObject], known_services: Collection[str] | None = None
) -> SetCheck:
    """Check references between objects: subsets must exist, one TrafficPolicy per host.

    ``known_services`` (for example from membership) turns references to services nobody
    fronts into warnings; pass None to skip that check.
    """
    return _SetChecker(objects, known_services).run()


@dataclass(frozen=True)
class ValidationReport:
    objects: tuple[PolicyObject, ...]
    warnings: tuple[PolicyWarning, ...]


def validate_documents(
    documents: Iterable[object], *, known_services: Collection[str] | None = None
) -> ValidationReport:
    """Validate a batch (e.g. one ``policy apply -f DIR``) as a whole, all or nothing.

    Raises :class:`PolicyError` carrying every problem of every document.
    """
    objects: list[PolicyObject] = []
    errors: list[PolicyError] = []
    for doc in documents:
        obj, problems = check_object(doc)
        errors.extend(problems)
        if obj is not None:
            objects.append(obj)
    if errors:
        raise PolicyError.collect(errors)
    cross = check_set(objects, known_services)
    if cross.errors:
        raise PolicyError.collect(cross.errors)
    return ValidationReport(objects=tuple(objects), warnings=cross.warnings)
