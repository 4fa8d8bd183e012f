"""Policy model: every field's validation with its exact error, round trips, examples, loader."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.policy.loader import (
    PolicyLoadError,
    dump_json,
    dump_yaml,
    load_path,
    load_policy,
    load_text,
    parse_documents,
)
from peermesh.policy.model import (
    MeshConfig,
    Route,
    TrafficPolicy,
    format_duration,
    parse_duration,
)
from peermesh.policy.validate import (
    MAX_OBJECT_BYTES,
    PolicyError,
    check_set,
    parse_object,
    validate_documents,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policy"
DELETE = object()

ROUTE: dict[str, Any] = {
    "kind": "Route",
    "name": "reviews",
    "spec": {
        "host": "reviews",
        "http": [
            {
                "name": "canary",
                "match": [{"uri": {"prefix": "/api"}, "method": {"exact": "GET"}}],
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                ],
                "timeout": "2s",
                "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,reset"},
                "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 1}}},
                "mirror": {"host": "reviews", "subset": "v2"},
                "mirrorPercentage": {"value": 5},
                "headers": {"request": {"set": {"x-a": "1"}, "remove": ["x-b"]}},
                "rewrite": {"uri": "/v2"},
            },
            {"name": "rest", "route": [{"destination": {"host": "reviews"}}]},
        ],
    },
}
TRAFFIC: dict[str, Any] = {
    "kind": "TrafficPolicy",
    "name": "reviews",
    "spec": {
        "host": "reviews",
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {
            "tcp": {"maxConnections": 10, "connectTimeout": "1s"},
            "http": {"http1MaxPendingRequests": 5, "idleTimeout": "30s"},
        },
        "outlierDetection": {"consecutive5xxErrors": 3, "maxEjectionPercent": 50},
        "rateLimit": {"maxTokens": 10, "tokensPerFill": 5, "fillInterval": "1s"},
        "retryBudget": {"retryRatio": 0.2},
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}
AUTHZ: dict[str, Any] = {
    "kind": "AuthorizationPolicy",
    "name": "reviews-allow",
    "spec": {
        "service": "reviews",
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["spiffe://mesh.local/svc/frontend"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"], "ports": [80]}}],
                "when": [{"key": "request.headers[x-team]", "values": ["blue"]}],
            }
        ],
    },
}
MESH: dict[str, Any] = {
    "kind": "MeshConfig",
    "name": "default",
    "spec": {
        "mtls": {"mode": "STRICT", "services": {"legacy": "PERMISSIVE"}},
        "defaultInboundPolicy": "DENY",
        "certificateLifetime": "12h",
        "joinTokens": [
            {"id": "rack-1", "tokenSha256": "a" * 64, "expiresAt": "2030-01-01T00:00:00Z"}
        ],
        "revokedIdentities": [{"identity": "spiffe://mesh.local/svc/old", "reason": "leaked"}],
        "admins": ["spiffe://mesh.local/svc/ops"],
    },
}
BASES = {"Route": ROUTE, "TrafficPolicy": TRAFFIC, "AuthorizationPolicy": AUTHZ, "MeshConfig": MESH}

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def mutate(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of ``doc`` with the field at ``path`` set (or removed with DELETE)."""
    result = copy.deepcopy(doc)
    steps: list[str | int] = [
        int(index) if index else key for key, index in _STEP.findall(path.replace(".[", "["))
    ]
    target: Any = result
    for step in steps[:-1]:
        target = target[step]
    last = steps[-1]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return result


def errors_of(doc: object) -> list[PolicyError]:
    with pytest.raises(PolicyError) as info:
        parse_object(doc)
    return list(info.value.errors)


def assert_error(doc: object, path: str, reason: str, hint: str | None = None) -> None:
    errors = errors_of(doc)
    found = [(e.path, e.reason, e.hint) for e in errors]
    assert any(e.path == path and e.reason == reason for e in errors), found
    if hint is not None:
        assert any(e.path == path and e.hint == hint for e in errors), found


def test_valid_bases_parse() -> None:
    for kind, doc in BASES.items():
        obj = parse_object(doc)
        assert obj.kind == kind
        assert parse_object(obj.to_dict()) == obj


# (kind, field path to set, value, expected error path, exact reason[, hint])
CASES: list[tuple[Any, ...]] = [
    # envelope
    ("Route", "kindd", "Route", "kindd", "unknown field 'kindd'", "did you mean 'kind'?"),
    ("Route", "apiVersion", "v2", "apiVersion", "unsupported apiVersion 'v2'"),
    (
        "Route",
        "kind",
        "VirtualService",
        "kind",
        "unknown kind 'VirtualService'",
        "the peermesh equivalent is 'Route'",
    ),
    ("Route", "kind", "Rout", "kind", "unknown kind 'Rout'", "did you mean 'Route'?"),
    ("Route", "name", "Reviews", "name", "'Reviews' is not a valid object name"),
    ("Route", "name", DELETE, "name", "required field is missing"),
    ("Route", "name", 7, "name", "expected a string (object name), got integer"),
    ("Route", "spec", [], "spec", "expected a mapping with fields host, http, got list"),
    # Route
    ("Route", "spec.host", DELETE, "spec.host", "required field is missing"),
    ("Route", "spec.host", "Reviews_1", "spec.host", "'Reviews_1' is not a valid service name"),
    ("Route", "spec.http", [], "spec.http", "needs at least 1 entry"),
    ("Route", "spec.http[0].route", DELETE, "spec.http[0].route", "required field is missing"),
    ("Route", "spec.http[0].route", [], "spec.http[0].route", "needs at least 1 entry"),
    (
        "Route",
        "spec.http[0].route[1].weight",
        DELETE,
        "spec.http[0].route[1].weight",
        "required when a rule has more than one destination",
    ),
    (
        "Route",
        "spec.http[0].route[1].weight",
        5,
        "spec.http[0].route",
        "weights add up to 95, they must add up to 100",
    ),
    (
        "Route",
        "spec.http[0].route[0].weight",
        -1,
        "spec.http[0].route[0].weight",
        "-1 is out of range, must be between 0 and 100",
    ),
    (
        "Route",
        "spec.http[0].route[0].weight",
        "90",
        "spec.http[0].route[0].weight",
        "expected an integer, got string '90'",
    ),
    (
        "Route",
        "spec.http[0].route[0].weight",
        True,
        "spec.http[0].route[0].weight",
        "expected an integer, got boolean True",
    ),
    (
        "Route",
        "spec.http[0].route[0].weight",
        90.0,
        "spec.http[0].route[0].weight",
        "expected an integer, got number 90.0",
    ),
    (
        "Route",
        "spec.http[0].route[0].destination.subset",
        "V1",
        "spec.http[0].route[0].destination.subset",
        "'V1' is not a valid subset name",
    ),
    (
        "Route",
        "spec.http[0].route[0].destination.port",
        70000,
        "spec.http[0].route[0].destination.port",
        "70000 is out of range, must be between 1 and 65535",
    ),
    (
        "Route",
        "spec.http[0].route[0].destination.host",
        DELETE,
        "spec.http[0].route[0].destination.host",
        "required field is missing",
    ),
    (
        "Route",
        "spec.http[0].route[1].destination.subset",
        "v1",
        "spec.http[0].route[1].destination",
        "destination ('reviews', 'v1', None) is listed twice",
    ),
    (
        "Route",
        "spec.http[0].wieght",
        1,
        "spec.http[0].wieght",
        "unknown field 'wieght'",
    ),
    (
        "Route",
        "spec.http[0].match[0].uri",
        {"prefix": "api"},
        "spec.http[0].match[0].uri.prefix",
        "path 'api' must start with '/'",
    ),
    (
        "Route",
        "spec.http[0].match[0].uri",
        {"prefix": "/a", "exact": "/a"},
        "spec.http[0].match[0].uri",
        "set exactly one of exact, prefix, regex, found 2",
    ),
    (
        "Route",
        "spec.http[0].match[0].uri",
        {"present": True},
        "spec.http[0].match[0].uri.present",
        "unknown field 'present'",
    ),
    (
        "Route",
        "spec.http[0].match[0].uri",
        {"regex": "(a"},
        "spec.http[0].match[0].uri.regex",
        "bad regular expression '(a': missing ): (a",
    ),
    (
        "Route",
        "spec.http[0].match[0].method",
        {"exact": "get"},
        "spec.http[0].match[0].method.exact",
        "method 'get' must be uppercase letters",
        "did you mean 'GET'?",
    ),
    (
        "Route",
        "spec.http[0].match[0].headers",
        {"bad header": {"exact": "x"}},
        "spec.http[0].match[0].headers.bad header",
        "'bad header' is not a valid HTTP header name",
    ),
    (
        "Route",
        "spec.http[0].match[0].headers",
        {"x-a": {"present": "yes"}},
        "spec.http[0].match[0].headers.x-a.present",
        "expected true or false, got string 'yes'",
    ),
    (
        "Route",
        "spec.http[0].match[0].headers",
        {"X-A": {"exact": "1"}, "x-a": {"exact": "2"}},
        "spec.http[0].match[0].headers.x-a",
        "'x-a' is matched twice (header names are case-insensitive)",
    ),
    (
        "Route",
        "spec.http[0].match[0].headers",
        ["x-a"],
        "spec.http[0].match[0].headers",
        "expected a mapping of name to match, got list",
    ),
    (
        "Route",
        "spec.http[0].match[0].queryParams",
        {"v": {"suffix": "x"}},
        "spec.http[0].match[0].queryParams.v.suffix",
        "unknown field 'suffix'",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        5,
        "spec.http[0].timeout",
        "expected a duration string such as '250ms' or '2s', got integer",
        "write e.g. '5s'",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        "5",
        "spec.http[0].timeout",
        "duration '5' has no unit; write e.g. '5s'",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        "-1s",
        "spec.http[0].timeout",
        "negative duration '-1s' is not allowed",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        "2 days",
        "spec.http[0].timeout",
        "invalid duration '2 days'; use numbers with units ns, us, ms, s, m, h such as "
        "'250ms', '2s' or '1m30s'",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        "0s",
        "spec.http[0].timeout",
        "duration '0s' must be greater than zero",
    ),
    (
        "Route",
        "spec.http[0].timeout",
        "25h",
        "spec.http[0].timeout",
        "duration '25h' is out of range, must be between 0s and 86400s",
    ),
    (
        "Route",
        "spec.http[0].retries.attempts",
        DELETE,
        "spec.http[0].retries.attempts",
        "required field is missing",
    ),
    (
        "Route",
        "spec.http[0].retries.attempts",
        11,
        "spec.http[0].retries.attempts",
        "11 is out of range, must be between 0 and 10",
    ),
    (
        "Route",
        "spec.http[0].retries.retryOn",
        "5xx,bogus",
        "spec.http[0].retries.retryOn",
        "unknown retry condition 'bogus'",
    ),
    (
        "Route",
        "spec.http[0].retries.retryOn",
        "5xx,5xx",
        "spec.http[0].retries.retryOn",
        "retry condition '5xx' is listed twice",
    ),
    (
        "Route",
        "spec.http[0].retries.retryOn",
        503,
        "spec.http[0].retries.retryOn",
        "expected a comma-separated string or a list, got integer",
    ),
    (
        "Route",
        "spec.http[0].retries.perTryTimeout",
        "3s",
        "spec.http[0].retries.perTryTimeout",
        "is longer than the rule's timeout, so a retry could never happen",
    ),
    ("Route", "spec.http[0].fault", {}, "spec.http[0].fault", "set 'delay', 'abort' or both"),
    (
        "Route",
        "spec.http[0].fault.abort.httpStatus",
        600,
        "spec.http[0].fault.abort.httpStatus",
        "600 is out of range, must be between 200 and 599",
    ),
    (
        "Route",
        "spec.http[0].fault.abort.percentage",
        10,
        "spec.http[0].fault.abort.percentage",
        "expected a mapping with fields value, got integer",
    ),
    (
        "Route",
        "spec.http[0].fault.abort.percentage",
        {"value": 101},
        "spec.http[0].fault.abort.percentage.value",
        "101 is out of range, must be between 0 and 100",
    ),
    (
        "Route",
        "spec.http[0].fault.delay",
        {"percentage": {"value": 1}},
        "spec.http[0].fault.delay.fixedDelay",
        "required field is missing",
    ),
    (
        "Route",
        "spec.http[0].mirror",
        DELETE,
        "spec.http[0].mirrorPercentage",
        "has no effect without 'mirror'",
    ),
    (
        "Route",
        "spec.http[0].headers.request.set",
        {"x-a": "a\nb"},
        "spec.http[0].headers.request.set.x-a",
        "'a\\nb' is not a valid HTTP header value (no control characters or line breaks)",
    ),
    (
        "Route",
        "spec.http[0].headers.request.remove",
        ["x-b", "X-B"],
        "spec.http[0].headers.request.remove",
        "header 'x-b' is listed twice",
    ),
    ("Route", "spec.http[0].rewrite", {}, "spec.http[0].rewrite", "set 'uri', 'authority' or both"),
    (
        "Route",
        "spec.http[0].rewrite.uri",
        "v2",
        "spec.http[0].rewrite.uri",
        "path 'v2' must start with '/'",
    ),
    (
        "Route",
        "spec.http[0].rewrite.authority",
        "a b",
        "spec.http[0].rewrite.authority",
        "'a b' is not a valid authority (host[:port])",
    ),
    ("Route", "spec.http[1].name", "canary", "spec.http[1].name", "rule 'canary' is listed twice"),
    # TrafficPolicy
    (
        "TrafficPolicy",
        "spec.loadBalancer.simple",
        "round_robin",
        "spec.loadBalancer.simple",
        "'round_robin' is not one of ROUND_ROBIN, LEAST_REQUEST, P2C_EWMA",
        "did you mean 'ROUND_ROBIN'?",
    ),
    (
        "TrafficPolicy",
        "spec.loadBalancer.consistentHash",
        {"httpHeaderName": "x-user"},
        "spec.loadBalancer",
        "set exactly one of 'simple' or 'consistentHash'",
    ),
    (
        "TrafficPolicy",
        "spec.loadBalancer",
        {"consistentHash": {}},
        "spec.loadBalancer.consistentHash.httpHeaderName",
        "required field is missing",
    ),
    (
        "TrafficPolicy",
        "spec.connectionPool.tcp.maxConnections",
        0,
        "spec.connectionPool.tcp.maxConnections",
        "0 is out of range, must be between 1 and 10000000",
    ),
    (
        "TrafficPolicy",
        "spec.connectionPool.http.maxRetries",
        3,
        "spec.connectionPool.http.maxRetries",
        "unknown field 'maxRetries'",
    ),
    (
        "TrafficPolicy",
        "spec.outlierDetection.maxEjectionPercent",
        101,
        "spec.outlierDetection.maxEjectionPercent",
        "101 is out of range, must be between 0 and 100",
    ),
    (
        "TrafficPolicy",
        "spec.outlierDetection.interval",
        "2h",
        "spec.outlierDetection.interval",
        "duration '2h' is out of range, must be between 0s and 3600s",
    ),
    (
        "TrafficPolicy",
        "spec.rateLimit.fillInterval",
        DELETE,
        "spec.rateLimit.fillInterval",
        "required field is missing",
    ),
    (
        "TrafficPolicy",
        "spec.rateLimit.tokensPerFill",
        20,
        "spec.rateLimit.tokensPerFill",
        "20 is more than maxTokens (10), so part of every fill is lost",
    ),
    (
        "TrafficPolicy",
        "spec.retryBudget.retryRatio",
        -0.1,
        "spec.retryBudget.retryRatio",
        "-0.1 is out of range, must be between 0 and 10",
    ),
    (
        "TrafficPolicy",
        "spec.subsets[1].name",
        "v1",
        "spec.subsets[1].name",
        "subset 'v1' is listed twice",
    ),
    (
        "TrafficPolicy",
        "spec.subsets[0].labels",
        {"-bad": "x"},
        "spec.subsets[0].labels.-bad",
        "'-bad' is not a valid label key",
    ),
    (
        "TrafficPolicy",
        "spec.subsets[0].labels",
        ["version=v1"],
        "spec.subsets[0].labels",
        "expected a mapping, got list",
    ),
    # AuthorizationPolicy
    (
        "AuthorizationPolicy",
        "spec.action",
        "allow",
        "spec.action",
        "'allow' is not one of ALLOW, DENY, AUDIT",
        "did you mean 'ALLOW'?",
    ),
    ("AuthorizationPolicy", "spec.service", DELETE, "spec.service", "required field is missing"),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        ["frontend"],
        "spec.rules[0].from[0].source.principals[0]",
        "bad principal pattern 'frontend': does not start with 'spiffe://'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        ["spiffe://mesh.local/*/x"],
        "spec.rules[0].from[0].source.principals[0]",
        "bad principal pattern 'spiffe://mesh.local/*/x': a '*' may only be the first or the "
        "last character",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        ["spiffe://Mesh/svc/x"],
        "spec.rules[0].from[0].source.principals[0]",
        "bad principal pattern 'spiffe://Mesh/svc/x': trust domain 'Mesh' contains uppercase "
        "letters; SPIFFE trust domains are lowercase only (use 'mesh')",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        [],
        "spec.rules[0].from[0].source.principals",
        "needs at least 1 entry",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0]",
        {"principals": ["*"]},
        "spec.rules[0].from[0].principals",
        "unknown field 'principals'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].to[0].operation.methods",
        ["get"],
        "spec.rules[0].to[0].operation.methods[0]",
        "'get' is not a valid HTTP method (uppercase, e.g. GET)",
        "did you mean 'GET'?",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].to[0].operation.paths",
        ["api/*"],
        "spec.rules[0].to[0].operation.paths[0]",
        "path pattern 'api/*' must start with '/' or '*'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].to[0].operation.ports",
        ["80a"],
        "spec.rules[0].to[0].operation.ports[0]",
        "expected an integer, got string '80a'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].to[0].operation.ports",
        [0],
        "spec.rules[0].to[0].operation.ports[0]",
        "0 is out of range, must be between 1 and 65535",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].when[0].key",
        "source.ip",
        "spec.rules[0].when[0].key",
        "unsupported condition key 'source.ip'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].when[0].values",
        DELETE,
        "spec.rules[0].when[0]",
        "set 'values', 'notValues' or both",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        ["spiffe://mesh.local/svc/a b*"],
        "spec.rules[0].from[0].source.principals[0]",
        "bad principal pattern 'spiffe://mesh.local/svc/a b*': path segment 'a b' may only hold "
        "letters, digits, '.', '-', '_'",
    ),
    (
        "AuthorizationPolicy",
        "spec.rules[0].from[0].source.principals",
        ["http://x*"],
        "spec.rules[0].from[0].source.principals[0]",
        "bad principal pattern 'http://x*': a prefix pattern must start with 'spiffe://'",
    ),
    # MeshConfig
    (
        "MeshConfig",
        "name",
        "mesh",
        "name",
        "a MeshConfig must be named 'default', not 'mesh'",
    ),
    (
        "MeshConfig",
        "spec.mtls.mode",
        "strict",
        "spec.mtls.mode",
        "'strict' is not one of STRICT, PERMISSIVE",
        "did you mean 'STRICT'?",
    ),
    (
        "MeshConfig",
        "spec.mtls.services",
        {"Legacy": "STRICT"},
        "spec.mtls.services.Legacy",
        "'Legacy' is not a valid service name",
    ),
    (
        "MeshConfig",
        "spec.defaultInboundPolicy",
        "ALLOW",
        "spec.defaultInboundPolicy",
        "'ALLOW' is not one of ALLOW_AUTHENTICATED, DENY",
    ),
    (
        "MeshConfig",
        "spec.certificateLifetime",
        "30s",
        "spec.certificateLifetime",
        "duration '30s' is out of range, must be between 60s and 7.776e+06s",
    ),
    (
        "MeshConfig",
        "spec.joinTokens[0].tokenSha256",
        "secret",
        "spec.joinTokens[0].tokenSha256",
        "'secret' is not a valid SHA-256 (64 lowercase hex digits)",
        'store the SHA-256 of the whole token (printf %s "$TOKEN" | sha256sum), never'
        " the token itself",
    ),
    (
        "MeshConfig",
        "spec.joinTokens[0].expiresAt",
        "tomorrow",
        "spec.joinTokens[0].expiresAt",
        "'tomorrow' is not an RFC 3339 timestamp",
    ),
    (
        "MeshConfig",
        "spec.joinTokens[0].expiresAt",
        "2030-01-01T00:00:00",
        "spec.joinTokens[0].expiresAt",
        "timestamp '2030-01-01T00:00:00' has no time zone",
    ),
    (
        "MeshConfig",
        "spec.revokedIdentities[0].identity",
        "spiffe://mesh.local/svc/*",
        "spec.revokedIdentities[0].identity",
        "bad SPIFFE ID 'spiffe://mesh.local/svc/*': path segment '*' contains '*'; only "
        "letters, digits, '.', '-' and '_' are allowed",
    ),
    (
        "MeshConfig",
        "spec.admins",
        ["spiffe://mesh.local/svc/ops", "spiffe://mesh.local/svc/ops"],
        "spec.admins[1]",
        "admin 'spiffe://mesh.local/svc/ops' is listed twice",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}:{c[1]}={c[2]!r}" for c in CASES])
def test_field_validation(case: tuple[Any, ...]) -> None:
    kind, path, value, error_path, reason, *hint = case
    assert_error(mutate(BASES[kind], path, value), error_path, reason, hint[0] if hint else None)


def test_every_problem_is_reported_with_structured_json() -> None:
    doc = mutate(ROUTE, "name", "Bad_Name")
    doc = mutate(doc, "spec.http[0].timeout", 5)
    doc = mutate(doc, "spec.http[0].route[0].weight", 80)
    with pytest.raises(PolicyError) as info:
        parse_object(doc)
    error = info.value
    assert {e.path for e in error.errors} == {
        "name",
        "spec.http[0].timeout",
        "spec.http[0].route",
    }
    data = json.loads(json.dumps(error.to_dict()))
    assert data["error"] == "invalid_policy"
    assert data["kind"] == "Route" and data["name"] == "Bad_Name"
    assert len(data["errors"]) == 3
    assert {"kind", "name", "path", "reason", "hint", "source"} <= set(data["errors"][0])
    assert "[and 2 more problem(s)]" in str(error)


def test_object_too_large_is_refused_without_serialising_it() -> None:
    doc = mutate(ROUTE, "spec.http[0].headers.request.set", {"x-big": "a" * (10 * 1024 * 1024)})
    (error,) = errors_of(doc)
    assert error.path == ""
    assert error.reason.startswith("object too large: at least ")
    assert error.reason.endswith(f"the limit is {MAX_OBJECT_BYTES} bytes")


def test_size_limit_is_on_the_canonical_encoding() -> None:
    headers = {f"x-pad-{i}": "a" * 8000 for i in range(36)}  # about 290 KB once encoded
    doc = mutate(ROUTE, "spec.http[0].headers.request.set", headers)
    (error,) = errors_of(doc)
    assert re.fullmatch(
        rf"object too large: \d+ bytes encoded, the limit is {MAX_OBJECT_BYTES} bytes",
        error.reason,
    )
    smaller = mutate(ROUTE, "spec.http[0].headers.request.set", dict(list(headers.items())[:30]))
    assert parse_object(smaller).kind == "Route"


def test_deep_nesting_and_non_mappings_are_refused() -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    assert errors_of({"kind": "Route", "name": "r", "spec": deep})[0].reason == (
        "object is nested more than 32 levels deep"
    )
    assert errors_of(["kind", "Route"])[0].reason == (
        "a policy object is a mapping with kind, name and spec, got list"
    )
    errors = errors_of({"kind": "Route", "metadata": {"name": "r"}, "spec": {}})
    assert errors[0].hint == "peermesh objects put 'name' at the top level, next to 'kind'"
    # The rest of the object is still checked in the same round, under metadata.name.
    assert [(e.name, e.path) for e in errors[1:]] == [("r", "spec.host"), ("r", "spec.http")]


def test_canonical_form_and_defaults() -> None:
    obj = parse_object(ROUTE)
    assert isinstance(obj, Route)
    rule = obj.spec.http[0]
    assert rule.timeout == 2.0 and rule.retries is not None
    assert rule.retries.per_try_timeout == 0.5
    assert rule.retries.retry_on == ("5xx", "reset")
    assert obj.spec.http[1].route[0].weight == 100  # a single destination defaults to 100
    headers = parse_object(
        mutate(ROUTE, "spec.http[0].match[0].headers", {"X-User": {"exact": "a"}})
    )
    assert isinstance(headers, Route)
    assert headers.spec.http[0].match[0].headers[0][0] == "x-user"  # names are lowercased
    tp = parse_object(TRAFFIC)
    assert isinstance(tp, TrafficPolicy)
    assert tp.spec.outlier_detection is not None
    assert tp.spec.outlier_detection.base_ejection_time == 30.0
    assert parse_object(mutate(AUTHZ, "spec.rules[0].to[0].operation.ports", ["8080"])) == (
        parse_object(mutate(AUTHZ, "spec.rules[0].to[0].operation.ports", [8080]))
    )
    mesh = parse_object({"kind": "MeshConfig", "name": "default", "spec": {}})
    assert isinstance(mesh, MeshConfig)
    assert mesh.spec.mtls.mode == "STRICT"
    assert mesh.spec.default_inbound_policy == "ALLOW_AUTHENTICATED"


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5), ("100ms", 0.1)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@given(st.floats(min_value=1e-6, max_value=86400, allow_nan=False))
@settings(max_examples=200, deadline=None)
def test_duration_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=1, max_value=86_400_000))
@settings(max_examples=200, deadline=None)
def test_millisecond_durations_keep_their_spelling(millis: int) -> None:
    assert parse_duration(format_duration(parse_duration(f"{millis}ms"))) == millis / 1000


# ---------------------------------------------------------------------------- round trips

_names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_durations = st.sampled_from(["250ms", "1s", "2s", "1m30s", "100ms"])


@st.composite
def routes(draw: st.DrawFn) -> dict[str, Any]:
    host = draw(_names)
    rules = []
    for i in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 3))
        cut = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
        weights = [b - a for a, b in zip([0, *cut], [*cut, 100], strict=True)]
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "route": [
                {"destination": {"host": f"{host}{j}"}, "weight": w} for j, w in enumerate(weights)
            ],
        }
        if draw(st.booleans()):
            rule["match"] = [
                {
                    "uri": {draw(st.sampled_from(["exact", "prefix"])): "/" + draw(_names)},
                    "headers": {draw(_names): {"regex": "[a-z]+"}},
                    "queryParams": {draw(_names): {"present": draw(st.booleans())}},
                }
            ]
        if draw(st.booleans()):
            rule["timeout"] = draw(_durations)
        if draw(st.booleans()):
            rule["fault"] = {
                "delay": {
                    "fixedDelay": draw(_durations),
                    "percentage": {"value": draw(st.floats(0, 100, allow_nan=False))},
                }
            }
        rules.append(rule)
    return {"kind": "Route", "name": host, "spec": {"host": host, "http": rules}}


@given(routes())
@settings(max_examples=60, deadline=None)
def test_generated_routes_round_trip_through_yaml_and_json(doc: dict[str, Any]) -> None:
    obj = parse_object(doc)
    assert parse_object(obj.to_dict()) == obj
    (from_yaml,) = parse_documents(load_text(dump_yaml([obj]), file="x.yaml")).objects
    (from_json,) = parse_documents(load_text(dump_json([obj]), file="x.json")).objects
    assert from_yaml == obj == from_json


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Route", "spec.http[0].headers", {}),
        ("Route", "spec.http[0].headers", {"request": {}, "response": {"set": {}}}),
        ("Route", "spec.http[0].match", []),
        ("Route", "spec.http[0].match", [{}]),
        ("TrafficPolicy", "spec.connectionPool", {"tcp": {}}),
        ("TrafficPolicy", "spec.subsets", []),
        ("TrafficPolicy", "spec.outlierDetection", {}),
        ("AuthorizationPolicy", "spec.rules", [{}]),
        ("AuthorizationPolicy", "spec.rules[0].from[0].source", {}),
        ("MeshConfig", "spec", {}),
    ],
)
def test_empty_parts_have_one_canonical_form(kind: str, path: str, value: object) -> None:
    obj = parse_object(mutate(BASES[kind], path, value))
    assert parse_object(obj.to_dict()) == obj
    (again,) = [parse_object(doc.data) for doc in load_text(dump_yaml([obj]), file="x.yaml")]
    assert again == obj


def test_examples_validate_and_round_trip() -> None:
    loaded = load_policy(EXAMPLES, known_services={"reviews", "ratings", "payments", "checkout"})
    kinds = {obj.kind for obj in loaded.objects}
    assert kinds == {"Route", "TrafficPolicy", "AuthorizationPolicy", "MeshConfig"}
    assert loaded.warnings == ()
    for dump, name in ((dump_yaml, "all.yaml"), (dump_json, "all.json")):
        again = parse_documents(load_text(dump(loaded.objects), file=name))
        assert again.objects == loaded.objects
    canary = next(o for o in loaded.objects if isinstance(o, Route) and o.name == "reviews")
    assert [d.weight for d in canary.spec.http[0].route] == [90, 10]


# ---------------------------------------------------------------------------- loader


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("kind: Route\nname: r\nspec:\n  host: [unclosed\n  http: []\n")
    with pytest.raises(PolicyLoadError) as info:
        load_path(bad)
    assert info.value.file == str(bad)
    assert info.value.line == 5
    assert str(info.value).startswith(f"{bad}:5:")
    assert "malformed YAML" in info.value.reason


def test_duplicate_yaml_keys_are_refused() -> None:
    with pytest.raises(PolicyLoadError) as info:
        load_text("kind: Route\nname: a\nname: b\nspec: {}\n", file="dup.yaml")
    assert info.value.line == 3
    assert "found duplicate key 'name' (first at line 2)" in info.value.reason


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(PolicyLoadError) as info:
        load_text('{\n  "kind": "Route",\n  "name": }', file="r.json")
    assert (info.value.line, info.value.column) == (3, 11)
    assert info.value.reason.startswith("malformed JSON: Expecting value")


def test_directory_of_files_multi_doc_and_error_locations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(dump_yaml([parse_object(TRAFFIC), parse_object(ROUTE)]))
    (tmp_path / "b.json").write_text(json.dumps([AUTHZ, MESH]))
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("ignored")
    docs = load_path(tmp_path)
    assert [d.file.rsplit("/", 1)[1] for d in docs] == ["a.yaml", "a.yaml", "b.json", "b.json"]
    assert docs[1].line > 1  # second YAML document starts further down
    loaded = parse_documents(docs)
    assert len(loaded.objects) == 4
    broken = tmp_path / "c.yaml"
    broken.write_text("---\nkind: Route\nname: ok\nspec: {host: ok, http: [{route: []}]}\n")
    with pytest.raises(PolicyError) as info:
        parse_documents(load_path(tmp_path))
    assert info.value.source == f"{broken}:2"
    assert info.value.path == "spec.http[0].route"


def test_wrong_kind_and_empty_documents() -> None:
    assert load_text("---\n---\n", file="empty.yaml") == []
    with pytest.raises(PolicyError) as info:
        validate_documents([{"kind": "DestinationRule", "name": "x", "spec": {}}])
    assert info.value.reason == "unknown kind 'DestinationRule'"
    assert info.value.hint == "the peermesh equivalent is 'TrafficPolicy'"


# ---------------------------------------------------------------------------- sets


def test_cross_object_errors_and_warnings() -> None:
    route = parse_object(ROUTE)
    traffic = parse_object(TRAFFIC)
    missing = check_set([route])
    assert (missing.errors[0].path, missing.errors[0].reason) == (
        "spec.http[0].route[0].destination.subset",
        "subset 'v1' is unknown: no TrafficPolicy defines subsets for host 'reviews'",
    )
    only_v1 = parse_object(mutate(TRAFFIC, "spec.subsets", [{"name": "v1", "labels": {}}]))
    undefined = check_set([route, only_v1]).errors
    assert undefined[0].reason == (
        "subset 'v2' is not defined for host 'reviews' (TrafficPolicy 'reviews' defines: v1)"
    )
    twin = parse_object(mutate(TRAFFIC, "name", "reviews-2"))
    assert check_set([traffic, twin]).errors[0].reason == (
        "host 'reviews' already has TrafficPolicy 'reviews'"
    )
    catch_all_first = parse_object(
        mutate(ROUTE, "spec.http", [ROUTE["spec"]["http"][1], ROUTE["spec"]["http"][0]])
    )
    result = check_set([catch_all_first, traffic], known_services={"ratings"})
    assert result.errors == ()
    codes = {(w.code, w.path) for w in result.warnings}
    assert ("unreachable-rule", "spec.http[1]") in codes
    assert ("unknown-service", "spec.host") in codes
    with pytest.raises(PolicyError) as info:
        validate_documents([ROUTE, TRAFFIC, ROUTE])
    assert info.value.reason == "is given more than once in the same input"
