"""``Route`` (Istio VirtualService): matches, weighted destinations, retries, faults, rewrites."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from peermesh.policy.model import (
    HTTP_ROUTE_FIELDS,
    RETRY_ON_CONDITIONS,
    Destination,
    Fault,
    FaultAbort,
    FaultDelay,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    Retries,
    Rewrite,
    RouteDestination,
    RouteSpec,
    StringMatch,
)
from peermesh.policy.validate.common import (
    _AUTHORITY,
    _METHOD,
    _header_name,
    _header_value,
    _query_name,
    _rule_name,
    _service,
    _subset_name,
)
from peermesh.policy.validate.walker import (
    HOUR,
    MAX_NAMED,
    _bool,
    _Ctx,
    _duration,
    _int,
    _join,
    _list,
    _mapping,
    _pairs,
    _percentage,
    _regex,
    _some,
    _str,
    _type_name,
    _unique,
)

MAX_DESTINATIONS = 32


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
    if len(value) > MAX_NAMED:
        ctx.error(path, f"has {len(value)} entries, the limit is {MAX_NAMED}")
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
            import difflib  # only misspelt input pays for it

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
    f = _some(ctx, value, path, ("delay", "abort"))
    if f is None:
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
    f = _some(ctx, value, path, ("uri", "authority"))
    if f is None:
        return None
    authority = f.get(
        "authority", _str, pattern=_AUTHORITY, what="authority (host[:port])", max_len=260
    )
    return Rewrite(uri=f.get("uri", _uri_path), authority=authority)


def _http_route(ctx: _Ctx, value: object, path: str) -> HTTPRoute | None:
    f = _mapping(ctx, value, path, HTTP_ROUTE_FIELDS, ("route",))
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
