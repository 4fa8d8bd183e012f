"""Istio ``security.istio.io`` ``AuthorizationPolicy`` and ``PeerAuthentication``.

An AuthorizationPolicy keeps its shape; its ``selector`` (``app: <service>``) becomes
``spec.service`` and its principals follow the rule in :mod:`.names`. A policy without a
selector in Istio's root namespace (``istio-system``) applies to every service (``"*"``);
elsewhere it would apply to one namespace, which peermesh cannot express, so it is refused.
PeerAuthentication becomes MeshConfig ``mtls`` fields: mesh-wide (root namespace, no
selector) sets ``mtls.mode``, a selector sets ``mtls.services[<service>]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peermesh.policy.model import ALL_SERVICES, AUTHORIZATION_POLICY, MESH_CONFIG, MESH_CONFIG_NAME
from peermesh.policy.translate.context import Tx, Why, join
from peermesh.policy.translate.names import ROOT_NAMESPACE, object_name, principal, service_of_host

_ACTIONS = ("ALLOW", "DENY", "AUDIT")
_MTLS_MODES = ("STRICT", "PERMISSIVE")
_SOURCE_REASONS = {
    key: (Why.UNSUPPORTED, "peermesh authorizes callers by SPIFFE identity only")
    for key in (
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "serviceAccounts",
        "notServiceAccounts",
    )
}
_OPERATION_REASONS = {
    "hosts": (Why.UNSUPPORTED, "a policy already names its service"),
    "notHosts": (Why.UNSUPPORTED, "a policy already names its service"),
}


def _selected_service(tx: Tx, spec: Mapping[str, Any], namespace: str) -> str | None:
    """``spec.service`` for a policy: its selector's ``app``, or ``*`` mesh-wide."""
    if "selector" not in spec:
        if namespace == ROOT_NAMESPACE:
            return ALL_SERVICES
        tx.refuse(
            "spec",
            f"without a selector this applies to every workload of namespace '{namespace}'; "
            "peermesh has no namespaces",
            Why.DIFFERENT_SEMANTICS,
            hint="add 'selector: {matchLabels: {app: <service>}}', or put it in "
            f"'{ROOT_NAMESPACE}' to apply it to every service",
        )
        return None
    selector = tx.fields(spec["selector"], "spec.selector", ("matchLabels",))
    labels = tx.mapping(selector.get("matchLabels", {}), "spec.selector.matchLabels")
    if set(labels) != {"app"}:
        tx.refuse(
            "spec.selector.matchLabels",
            "peermesh selects workloads by service only: match exactly the 'app' label",
        )
        return None
    return service_of_host(tx, labels["app"], "spec.selector.matchLabels.app")


def _rule(tx: Tx, value: object, path: str, trust_domain: str) -> dict[str, Any]:
    f = tx.fields(value, path, ("from", "to", "when"))
    out: dict[str, Any] = {}
    if "from" in f:
        sources = []
        for sub, item in tx.items(f["from"], join(path, "from")):
            inner, src = tx.wrapped(
                item, sub, "source", ("principals", "notPrincipals"), _SOURCE_REASONS
            )
            mapped: dict[str, Any] = {}
            for key, items in src.items():
                mapped[key] = [
                    principal(tx, p, ppath, trust_domain)
                    for ppath, p in tx.items(items, join(inner, key))
                ]
            sources.append({"source": mapped})
        out["from"] = sources
    if "to" in f:
        ops = []
        for sub, item in tx.items(f["to"], join(path, "to")):
            _, op = tx.wrapped(
                item,
                sub,
                "operation",
                ("methods", "notMethods", "paths", "notPaths", "ports", "notPorts"),
                _OPERATION_REASONS,
            )
            ops.append({"operation": op})
        out["to"] = ops
    if "when" in f:
        conditions = []
        for sub, item in tx.items(f["when"], join(path, "when")):
            cond = tx.fields(item, sub, ("key", "values", "notValues"))
            cond_key = cond.get("key")
            if not (isinstance(cond_key, str) and cond_key.startswith("request.headers[")):
                tx.refuse(
                    join(sub, "key"),
                    f"condition key {cond_key!r} is not supported",
                    hint="supported: request.headers[<name>]",
                )
            conditions.append(cond)
        out["when"] = conditions
    return out


def translate_authorization_policy(
    tx: Tx, data: Mapping[str, Any], name: str, namespace: str, trust_domain: str
) -> list[dict[str, Any]]:
    spec = tx.spec(
        data,
        ("selector", "action", "rules"),
        {
            "provider": (Why.UNSUPPORTED, "peermesh has no external authorizers (CUSTOM)"),
            "targetRef": (Why.UNSUPPORTED, "use 'selector: {matchLabels: {app: <service>}}'"),
            "targetRefs": (Why.UNSUPPORTED, "use 'selector: {matchLabels: {app: <service>}}'"),
        },
        required=False,
    )
    service = _selected_service(tx, spec, namespace)
    action = spec.get("action", "ALLOW")
    if action not in _ACTIONS:
        tx.refuse("spec.action", f"action {action!r} is not supported", hint="ALLOW, DENY or AUDIT")
    rules = [
        _rule(tx, item, p, trust_domain) for p, item in tx.items(spec.get("rules"), "spec.rules")
    ]
    if service is None:
        return []
    out: dict[str, Any] = {"service": service, "action": action}
    if rules:
        out["rules"] = rules
    return [{"kind": AUTHORIZATION_POLICY, "name": object_name(name, namespace), "spec": out}]


def translate_peer_authentication(
    tx: Tx, data: Mapping[str, Any], name: str, namespace: str
) -> list[dict[str, Any]]:
    spec = tx.spec(
        data,
        ("selector", "mtls"),
        {"portLevelMtls": (Why.UNSUPPORTED, "peermesh mTLS modes are per service, not per port")},
        required=False,
    )
    mtls = tx.fields(spec.get("mtls", {}), "spec.mtls", ("mode",))
    mode = mtls.get("mode", "UNSET")
    if mode == "UNSET":
        return []  # inherit: nothing to change
    if mode not in _MTLS_MODES:
        tx.refuse(
            "spec.mtls.mode",
            f"mode {mode!r} is not supported",
            hint="STRICT or PERMISSIVE (plaintext-only DISABLE has no peermesh equivalent)",
        )
        return []
    if "selector" in spec:
        service = _selected_service(tx, spec, namespace)
        if service is None:
            return []
        mtls_out: dict[str, Any] = {"services": {service: mode}}
    elif namespace == ROOT_NAMESPACE:
        mtls_out = {"mode": mode}
    else:
        _selected_service(tx, spec, namespace)  # refuses with the namespace explanation
        return []
    return [{"kind": MESH_CONFIG, "name": MESH_CONFIG_NAME, "spec": {"mtls": mtls_out}}]
