"""Istio ``DestinationRule`` → peermesh ``TrafficPolicy`` (subsets, balancing, pools, ejection).

Istio's own defaults are written out where peermesh's differ, so a translated host behaves
as it did: a DestinationRule without ``loadBalancer`` gets Istio's ``LEAST_REQUEST``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peermesh.policy.model import TRAFFIC_POLICY
from peermesh.policy.translate.context import Tx, Why, join
from peermesh.policy.translate.names import object_name, service_of_host

#: Istio's default load balancer (peermesh's own default is P2C_EWMA).
ISTIO_DEFAULT_LB = "LEAST_REQUEST"
_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
}

_TLS_MODES_HONOURED = ("ISTIO_MUTUAL",)


def _load_balancer(tx: Tx, value: object, path: str) -> dict[str, Any] | None:
    f = tx.fields(
        value,
        path,
        ("simple", "consistentHash"),
        {
            "localityLbSetting": (Why.UNSUPPORTED, "peermesh balancing is not locality-aware"),
            "warmupDurationSecs": (Why.UNSUPPORTED, "peermesh has no slow start"),
        },
    )
    if "simple" in f:
        simple = f["simple"]
        if simple not in _SIMPLE:
            tx.refuse(
                join(path, "simple"),
                f"load balancer {simple!r} is not supported",
                hint=f"supported: {', '.join(_SIMPLE)}",
            )
            return None
        return {"simple": _SIMPLE[simple]}
    if "consistentHash" in f:
        sub = join(path, "consistentHash")
        ch = tx.fields(
            f["consistentHash"],
            sub,
            ("httpHeaderName",),
            {
                "minimumRingSize": (
                    Why.DIFFERENT_SEMANTICS,
                    "peermesh's hash ring has a fixed size",
                ),
            },
        )
        return {"consistentHash": ch} if ch else None
    return None


def _connection_pool(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("tcp", "http"))
    out: dict[str, Any] = {}
    if "tcp" in f:
        out["tcp"] = tx.fields(f["tcp"], join(path, "tcp"), ("maxConnections", "connectTimeout"))
    if "http" in f:
        out["http"] = tx.fields(
            f["http"],
            join(path, "http"),
            (
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "idleTimeout",
            ),
            {"maxRetries": (Why.UNSUPPORTED, "use a retry budget (TrafficPolicy retryBudget)")},
        )
    return out


def _outlier_detection(tx: Tx, value: object, path: str) -> dict[str, Any]:
    honoured = (
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
        "minHealthPercent",
    )
    f = tx.fields(
        value,
        path,
        honoured,
        {"consecutiveErrors": (Why.UNSUPPORTED, "deprecated; use 'consecutive5xxErrors'")},
    )
    if f.pop("minHealthPercent", 0) != 0:
        tx.refuse(
            join(path, "minHealthPercent"),
            "peermesh ejects regardless of how many endpoints are healthy (Istio's 0)",
        )
    return f


def _traffic_policy(tx: Tx, value: object, path: str) -> dict[str, Any]:
    f = tx.fields(
        value,
        path,
        ("loadBalancer", "connectionPool", "outlierDetection", "tls"),
        {
            "portLevelSettings": (
                Why.UNSUPPORTED,
                "peermesh traffic policy is per host, not per port",
            )
        },
    )
    out: dict[str, Any] = {}
    if "loadBalancer" in f:
        lb = _load_balancer(tx, f["loadBalancer"], join(path, "loadBalancer"))
        if lb is not None:
            out["loadBalancer"] = lb
    if "connectionPool" in f:
        out["connectionPool"] = _connection_pool(
            tx, f["connectionPool"], join(path, "connectionPool")
        )
    if "outlierDetection" in f:
        out["outlierDetection"] = _outlier_detection(
            tx, f["outlierDetection"], join(path, "outlierDetection")
        )
    if "tls" in f:
        tls = tx.mapping(f["tls"], join(path, "tls"))
        # Agents always speak mTLS to each other, which is what ISTIO_MUTUAL asks for.
        if dict(tls) != {"mode": "ISTIO_MUTUAL"}:
            tx.refuse(
                join(path, "tls"),
                "agents always use mesh mTLS between each other; only {mode: ISTIO_MUTUAL} "
                "is honoured",
            )
    return out


def translate_destination_rule(
    tx: Tx, data: Mapping[str, Any], name: str, namespace: str
) -> list[dict[str, Any]]:
    spec = tx.spec(
        data,
        ("host", "trafficPolicy", "subsets", "exportTo"),
        {"workloadSelector": (Why.UNSUPPORTED, "peermesh traffic policy applies to every caller")},
    )
    tx.exported_to_mesh(spec)
    if "host" not in spec:
        tx.refuse("spec.host", "required field is missing", Why.INVALID)
    host = service_of_host(tx, spec.get("host"), "spec.host") if "host" in spec else None
    out: dict[str, Any] = {"host": host, "loadBalancer": {"simple": ISTIO_DEFAULT_LB}}
    if "trafficPolicy" in spec:
        out.update(_traffic_policy(tx, spec["trafficPolicy"], "spec.trafficPolicy"))
    subsets: list[dict[str, Any]] = []
    for sub, item in tx.items(spec.get("subsets"), "spec.subsets"):
        s = tx.fields(
            item,
            sub,
            ("name", "labels"),
            {
                "trafficPolicy": (
                    Why.UNSUPPORTED,
                    "peermesh traffic policy is per host, not per subset",
                )
            },
        )
        subsets.append(s)
    if subsets:
        out["subsets"] = subsets
    if host is None:
        return []
    return [{"kind": TRAFFIC_POLICY, "name": object_name(name, namespace), "spec": out}]
