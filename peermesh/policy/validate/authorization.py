"""``AuthorizationPolicy``: who (principals) may do what (methods, paths, ports) when."""

from __future__ import annotations

import re

from peermesh.policy.model import (
    ACTION_ALLOW,
    ALL_SERVICES,
    AUTHZ_ACTIONS,
    AuthorizationPolicySpec,
    AuthzRule,
    Condition,
    Operation,
    Source,
)
from peermesh.policy.validate.common import (
    _METHOD,
    _header_name,
    _principal,
    _service,
    _wildcard_value,
)
from peermesh.policy.validate.walker import _Ctx, _enum, _int, _mapping, _str, _wrapped

_CONDITION_KEY = re.compile(r"request\.headers\[([^\[\]]+)\]")


def _source(ctx: _Ctx, value: object, path: str) -> Source | None:
    f = _wrapped(ctx, value, path, "source", ("principals", "notPrincipals"))
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
    allowed = ("methods", "notMethods", "paths", "notPaths", "ports", "notPorts")
    f = _wrapped(ctx, value, path, "operation", allowed)
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
