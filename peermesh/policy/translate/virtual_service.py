"""Istio ``VirtualService`` (networking.istio.io v1, v1beta1, v1alpha3) → peermesh ``Route``.

One Route per host. Rules keep Istio's field names (peermesh's Route was modelled on them),
so most fields are copied; the ones peermesh cannot do as Istio does are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peermesh.policy.model import HTTP_ROUTE_FIELDS, RETRY_ON_CONDITIONS
from peermesh.policy.translate.context import Tx, Why, join
from peermesh.policy.translate.names import routes_for, service_of_host

_MESH_GATEWAY = "mesh"

_RULE_REASONS = {
    "redirect": (Why.UNSUPPORTED, "peermesh routes do not answer redirects themselves"),
    "directResponse": (Why.UNSUPPORTED, "peermesh routes do not answer requests themselves"),
    "delegate": (Why.UNSUPPORTED, "delegated VirtualServices have no peermesh equivalent"),
    "corsPolicy": (Why.UNSUPPORTED, "the sidecar does not answer CORS preflights"),
    "mirrors": (Why.UNSUPPORTED, "one mirror per rule; use 'mirror'"),
    "mirror_percent": (Why.UNSUPPORTED, "deprecated; use 'mirrorPercentage'"),
    "mirrorPercent": (Why.UNSUPPORTED, "deprecated; use 'mirrorPercentage'"),
}
_MATCH_REASONS = {
    "sourceLabels": (Why.UNSUPPORTED, "rules cannot select callers by label; use authorization"),
    "gateways": (Why.UNSUPPORTED, "peermesh has no gateways"),
    "ignoreUriCase": (Why.DIFFERENT_SEMANTICS, "peermesh URI matches are case-sensitive"),
}


def _destination(tx: Tx, value: object, path: str) -> dict[str, Any] | None:
    f = tx.fields(value, path, ("host", "subset", "port"))
    if "host" not in f:
        tx.refuse(join(path, "host"), "required field is missing", Why.INVALID)
        return None
    host = service_of_host(tx, f["host"], join(path, "host"))
    out: dict[str, Any] = {"host": host}
    if "subset" in f:
        out["subset"] = f["subset"]
    if "port" in f:
        port = tx.fields(f["port"], join(path, "port"), ("number",))
        if "number" in port:
            out["port"] = port["number"]
    return out if host is not None else None


def _matches(tx: Tx, value: object, path: str) -> tuple[list[dict[str, Any]], bool]:
    """Matches as peermesh writes them, and whether every one matches the URI exactly."""
    out: list[dict[str, Any]] = []
    all_exact = True
    for sub, item in tx.items(value, path):
        f = tx.fields(
            item, sub, ("name", "uri", "method", "headers", "queryParams"), _MATCH_REASONS
        )
        uri = f.get("uri")
        if not (isinstance(uri, Mapping) and set(uri) == {"exact"}):
            all_exact = False
        out.append(f)
    return out, all_exact and bool(out)


def _retries(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("attempts", "perTryTimeout", "retryOn"))
    retry_on = f.get("retryOn")
    if isinstance(retry_on, str):
        for condition in (c.strip() for c in retry_on.split(",")):
            if condition not in RETRY_ON_CONDITIONS and not condition.isdigit():
                tx.refuse(
                    join(path, "retryOn"),
                    f"retry condition {condition!r} is not supported",
                    hint=f"supported: {', '.join(sorted(RETRY_ON_CONDITIONS))} or status codes",
                )
    return f


def _fault(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("delay", "abort"))
    out: dict[str, Any] = {}
    if "delay" in f:
        out["delay"] = tx.fields(
            f["delay"],
            join(path, "delay"),
            ("fixedDelay", "percentage"),
            {"percent": (Why.UNSUPPORTED, "deprecated; use 'percentage: {value: N}'")},
        )
    if "abort" in f:
        out["abort"] = tx.fields(f["abort"], join(path, "abort"), ("httpStatus", "percentage"))
    return out


def _rule(tx: Tx, value: object, path: str) -> dict[str, Any]:
    # An Istio http rule's fields that peermesh honours are exactly a Route rule's.
    f = tx.fields(value, path, HTTP_ROUTE_FIELDS, _RULE_REASONS)
    out: dict[str, Any] = {}
    if "name" in f:
        out["name"] = f["name"]
    all_exact = False
    if "match" in f:
        out["match"], all_exact = _matches(tx, f["match"], join(path, "match"))
    if "route" not in f:
        tx.refuse(join(path, "route"), "a rule without destinations cannot be routed")
    route: list[dict[str, Any]] = []
    for sub, item in tx.items(f.get("route"), join(path, "route")):
        d = tx.fields(
            item,
            sub,
            ("destination", "weight"),
            {"headers": (Why.UNSUPPORTED, "header operations go on the rule, not a destination")},
        )
        dest = _destination(tx, d.get("destination"), join(sub, "destination"))
        entry: dict[str, Any] = {"destination": dest}
        if "weight" in d:
            entry["weight"] = d["weight"]
        route.append(entry)
    out["route"] = route
    if "timeout" in f:
        out["timeout"] = f["timeout"]
    if "retries" in f:
        out["retries"] = _retries(tx, f["retries"], join(path, "retries"))
    if "fault" in f:
        out["fault"] = _fault(tx, f["fault"], join(path, "fault"))
    if "mirror" in f:
        out["mirror"] = _destination(tx, f["mirror"], join(path, "mirror"))
    if "mirrorPercentage" in f:
        out["mirrorPercentage"] = f["mirrorPercentage"]
    if "headers" in f:
        out["headers"] = f["headers"]
    if "rewrite" in f:
        rewrite = tx.fields(
            f["rewrite"],
            join(path, "rewrite"),
            ("uri", "authority"),
            {"uriRegexRewrite": (Why.UNSUPPORTED, "peermesh rewrites the path to a fixed value")},
        )
        if "uri" in rewrite and not all_exact:
            tx.refuse(
                join(path, "rewrite.uri"),
                "Istio replaces only the matched prefix; peermesh replaces the whole path",
                Why.DIFFERENT_SEMANTICS,
                hint="accepted when every match of the rule is 'uri: {exact: ...}'",
            )
        out["rewrite"] = rewrite
    return out


def translate_virtual_service(
    tx: Tx, data: Mapping[str, Any], name: str, namespace: str
) -> list[dict[str, Any]]:
    spec = tx.spec(
        data,
        ("hosts", "gateways", "http", "exportTo"),
        {
            "tcp": (Why.UNSUPPORTED, "peermesh routes HTTP only"),
            "tls": (Why.UNSUPPORTED, "peermesh routes HTTP only"),
        },
    )
    gateways = spec.get("gateways")
    if gateways is not None and gateways != [_MESH_GATEWAY]:
        tx.refuse("spec.gateways", "peermesh has no ingress gateways; only 'mesh' is accepted")
    tx.exported_to_mesh(spec, hint="leave it out or write ['*']")
    hosts = [service_of_host(tx, h, p) for p, h in tx.items(spec.get("hosts"), "spec.hosts")]
    if not hosts:
        tx.refuse("spec.hosts", "at least one host is required", Why.INVALID)
    rules = [_rule(tx, item, p) for p, item in tx.items(spec.get("http"), "spec.http")]
    if not rules:
        tx.refuse("spec.http", "a VirtualService without http rules routes nothing here")
    return routes_for(hosts, name, namespace, rules)
