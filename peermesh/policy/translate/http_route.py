"""Gateway API ``HTTPRoute`` attached to a Service (the GAMMA mesh pattern) → ``Route``.

Differences peermesh makes exact rather than approximate:

- ``PathPrefix`` matches whole path segments (``/foo`` matches ``/foo`` and ``/foo/bar``
  but not ``/foobar``); it becomes two peermesh matches, ``exact: /foo`` and
  ``prefix: /foo/``, which is the same set of paths.
- ``backendRefs`` weights are relative (default 1); they become percentages that add up
  to 100 and are refused when that would round (1:1:1).
- A rule without ``matches`` matches every path, as in Gateway API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peermesh.policy.translate.context import Tx, Why, join
from peermesh.policy.translate.names import routes_for, service_of_host

_SERVICE_KINDS = (None, "Service")
_CORE_GROUPS = (None, "", "core")


def _service_ref(
    tx: Tx, value: object, path: str, extra: tuple[str, ...] = ()
) -> tuple[str | None, dict[str, Any]]:
    f = tx.fields(
        value,
        path,
        ("name", "kind", "group", "namespace", "port", *extra),
        {"sectionName": (Why.UNSUPPORTED, "attach to the whole Service")},
    )
    if f.get("kind") not in _SERVICE_KINDS or f.get("group") not in _CORE_GROUPS:
        tx.refuse(
            path,
            f"only Services can be referenced here, not {f.get('group') or 'core'}/{f.get('kind')}",
            hint="peermesh has no Gateways: attach the route to a Service (GAMMA)",
        )
        return None, f
    if "name" not in f:
        tx.refuse(join(path, "name"), "required field is missing", Why.INVALID)
        return None, f
    return service_of_host(tx, f["name"], join(path, "name")), f


def _path_matches(tx: Tx, value: object, path: str) -> list[dict[str, Any]] | None:
    f = tx.fields(value, path, ("type", "value"))
    kind = f.get("type", "PathPrefix")
    text = f.get("value", "/")
    if not isinstance(text, str):
        tx.refuse(join(path, "value"), "expected a string", Why.INVALID)
        return None
    if kind == "Exact":
        return [{"exact": text}]
    if kind == "RegularExpression":
        return [{"regex": text}]
    if kind == "PathPrefix":
        stem = text.rstrip("/")
        if not stem:
            return [{"prefix": "/"}]
        return [{"exact": stem}, {"prefix": stem + "/"}]
    tx.refuse(join(path, "type"), f"path match type {kind!r} is not supported", Why.INVALID)
    return None


def _named(tx: Tx, value: object, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sub, item in tx.items(value, path):
        f = tx.fields(item, sub, ("name", "value", "type"))
        kind = f.get("type", "Exact")
        which = {"Exact": "exact", "RegularExpression": "regex"}.get(kind)
        if which is None:
            tx.refuse(join(sub, "type"), f"match type {kind!r} is not supported", Why.INVALID)
            continue
        out[str(f.get("name"))] = {which: f.get("value")}
    return out


def _matches(tx: Tx, value: object, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sub, item in tx.items(value, path):
        f = tx.fields(item, sub, ("path", "headers", "queryParams", "method"))
        base: dict[str, Any] = {}
        if "headers" in f:
            base["headers"] = _named(tx, f["headers"], join(sub, "headers"))
        if "queryParams" in f:
            base["queryParams"] = _named(tx, f["queryParams"], join(sub, "queryParams"))
        if "method" in f:
            base["method"] = {"exact": f["method"]}
        uris = _path_matches(tx, f["path"], join(sub, "path")) if "path" in f else [None]
        for uri in uris or []:
            out.append({**base, **({"uri": uri} if uri is not None else {})})
    return out


def _header_modifier(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("set", "add", "remove"))
    out: dict[str, Any] = {}
    for op in ("set", "add"):
        if op in f:
            pairs = [
                tx.fields(item, sub, ("name", "value"))
                for sub, item in tx.items(f[op], join(path, op))
            ]
            out[op] = {str(p.get("name")): p.get("value") for p in pairs}
    if "remove" in f:
        out["remove"] = f["remove"]
    return out


def _weights(tx: Tx, weights: list[int], path: str) -> list[int] | None:
    total = sum(weights)
    if total <= 0:
        tx.refuse(path, "every backend has weight 0", Why.INVALID)
        return None
    percents = [w * 100 // total for w in weights]
    if any(w * 100 % total for w in weights):
        tx.refuse(
            path,
            f"weights {weights} are not whole percentages ({total} in all)",
            Why.DIFFERENT_SEMANTICS,
            hint="peermesh weights are percentages; pick weights that divide 100 evenly",
        )
        return None
    return percents


def _rule(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(
        value,
        path,
        ("matches", "backendRefs", "filters", "timeouts", "name"),
        {"sessionPersistence": (Why.UNSUPPORTED, "use a TrafficPolicy consistentHash")},
    )
    out: dict[str, Any] = {}
    if "name" in f:
        out["name"] = f["name"]
    if "matches" in f:
        out["match"] = _matches(tx, f["matches"], join(path, "matches"))
    route: list[dict[str, Any]] = []
    weights: list[int] = []
    for sub, item in tx.items(f.get("backendRefs"), join(path, "backendRefs")):
        host, ref = _service_ref(
            tx,
            item,
            sub,
            ("weight",),
        )
        if "filters" in tx.mapping(item, sub):
            tx.refuse(join(sub, "filters"), "filters go on the rule, not a backend")
        weight = ref.get("weight", 1)
        weights.append(weight if isinstance(weight, int) and not isinstance(weight, bool) else 0)
        route.append({"destination": {"host": host}})
    if not route:
        tx.refuse(join(path, "backendRefs"), "a rule without backends cannot be routed")
    percents = _weights(tx, weights, join(path, "backendRefs")) if route else None
    for entry, pct in zip(route, percents or [], strict=False):
        if len(route) > 1:
            entry["weight"] = pct
    out["route"] = route
    if "timeouts" in f:
        timeouts = tx.fields(
            f["timeouts"],
            join(path, "timeouts"),
            ("request",),
            {"backendRequest": (Why.UNSUPPORTED, "use a VirtualService perTryTimeout")},
        )
        if "request" in timeouts:
            out["timeout"] = timeouts["request"]
    headers: dict[str, Any] = {}
    for sub, item in tx.items(f.get("filters"), join(path, "filters")):
        flt = tx.fields(
            item,
            sub,
            (
                "type",
                "requestHeaderModifier",
                "responseHeaderModifier",
                "urlRewrite",
                "requestMirror",
            ),
        )
        kind = flt.get("type")
        if kind == "RequestHeaderModifier":
            headers["request"] = _header_modifier(
                tx, flt.get("requestHeaderModifier"), join(sub, "requestHeaderModifier")
            )
        elif kind == "ResponseHeaderModifier":
            headers["response"] = _header_modifier(
                tx, flt.get("responseHeaderModifier"), join(sub, "responseHeaderModifier")
            )
        elif kind == "URLRewrite":
            out["rewrite"] = _url_rewrite(tx, flt.get("urlRewrite"), join(sub, "urlRewrite"))
        elif kind == "RequestMirror":
            mirror = tx.fields(
                flt.get("requestMirror"), join(sub, "requestMirror"), ("backendRef", "percent")
            )
            host, _ = _service_ref(
                tx, mirror.get("backendRef"), join(sub, "requestMirror.backendRef")
            )
            out["mirror"] = {"host": host}
            if "percent" in mirror:
                out["mirrorPercentage"] = {"value": mirror["percent"]}
        else:
            tx.refuse(join(sub, "type"), f"filter {kind!r} is not supported")
    if headers:
        out["headers"] = headers
    return out


def _url_rewrite(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("hostname", "path"))
    out: dict[str, Any] = {}
    if "hostname" in f:
        out["authority"] = f["hostname"]
    if "path" in f:
        p = tx.fields(f["path"], join(path, "path"), ("type", "replaceFullPath"))
        if p.get("type") != "ReplaceFullPath":
            tx.refuse(
                join(path, "path.type"),
                "peermesh replaces the whole path; only ReplaceFullPath is honoured",
                Why.DIFFERENT_SEMANTICS,
            )
        elif "replaceFullPath" in p:
            out["uri"] = p["replaceFullPath"]
    return out


def translate_http_route(
    tx: Tx, data: Mapping[str, Any], name: str, namespace: str
) -> list[dict[str, Any]]:
    spec = tx.spec(
        data,
        ("parentRefs", "rules", "hostnames"),
    )
    if spec.get("hostnames"):
        tx.refuse(
            "spec.hostnames",
            "a route attached to a Service applies to every name of that Service",
            Why.DIFFERENT_SEMANTICS,
            hint="leave hostnames out (GAMMA ignores them too)",
        )
    parents = [
        _service_ref(tx, item, sub)[0]
        for sub, item in tx.items(spec.get("parentRefs"), "spec.parentRefs")
    ]
    for i, parent in enumerate(spec.get("parentRefs") or []):
        if isinstance(parent, Mapping) and "port" in parent:
            tx.refuse(
                f"spec.parentRefs[{i}].port",
                "a peermesh Route applies to every port of its service",
                Why.DIFFERENT_SEMANTICS,
            )
    if not parents:
        tx.refuse("spec.parentRefs", "attach the route to a Service (GAMMA)", Why.INVALID)
    rules = [_rule(tx, item, p) for p, item in tx.items(spec.get("rules"), "spec.rules")]
    if not rules:
        rules = [{"route": []}]
        tx.refuse("spec.rules", "an HTTPRoute without rules routes nothing", Why.INVALID)
    return routes_for(parents, name, namespace, rules)
