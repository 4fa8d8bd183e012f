"""Istio and Gateway API objects translated to peermesh kinds, every unhonoured field listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peermesh.policy.loader import Document, load_path, load_text
from peermesh.policy.translate import Why, is_foreign, merge_mesh_config, translate, translate_all
from peermesh.policy.translate.batch import translate_documents
from peermesh.policy.validate import parse_object

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FIXTURES = sorted((EXAMPLES / "istio").glob("*.yaml")) + sorted(
    (EXAMPLES / "gateway-api").glob("*.yaml")
)
TD = "mesh.test"


def one(text: str) -> dict:
    return dict(yaml.safe_load(text))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_translates_to_valid_peermesh_objects(path: Path) -> None:
    batch = translate_documents(load_path(path), trust_domain=TD)
    assert not batch.errors, [str(e) for e in batch.errors]
    assert batch.objects
    for obj in batch.objects:
        parse_object(obj)


def test_canary_in_istio_shape_names_hosts_and_keeps_weights() -> None:
    docs = [d.data for d in load_path(EXAMPLES / "istio" / "weighted-canary.yaml")]
    result = translate_all(docs, trust_domain=TD)
    assert not result.problems
    policy, route = result.objects
    assert (policy["kind"], policy["name"]) == ("TrafficPolicy", "reviews.default")
    assert policy["spec"]["host"] == "reviews"  # reviews.default.svc.cluster.local
    assert policy["spec"]["loadBalancer"] == {"simple": "LEAST_REQUEST"}  # Istio's default
    assert (route["kind"], route["name"]) == ("Route", "reviews.default")
    weights = [d["weight"] for d in route["spec"]["http"][0]["route"]]
    assert weights == [90, 10]
    assert result.origins["Route/reviews.default"] == ("VirtualService/default/reviews",)


def test_names_follow_namespace_and_one_route_per_host() -> None:
    vs = one(
        """
        apiVersion: networking.istio.io/v1alpha3
        kind: VirtualService
        metadata: {name: shop, namespace: prod}
        spec:
          hosts: [cart, cart-admin.prod.svc]
          http: [{route: [{destination: {host: cart, port: {number: 8080}}}]}]
        """
    )
    result = translate(vs, trust_domain=TD)
    assert not result.problems
    assert [o["name"] for o in result.objects] == ["shop.prod.cart", "shop.prod.cart-admin"]
    dest = result.objects[0]["spec"]["http"][0]["route"][0]["destination"]
    assert dest == {"host": "cart", "port": 8080}


def test_principals_map_service_accounts_to_spiffe_ids() -> None:
    policy = one(
        """
        apiVersion: security.istio.io/v1beta1
        kind: AuthorizationPolicy
        metadata: {name: p, namespace: istio-system}
        spec:
          rules:
          - from:
            - source:
                principals: [cluster.local/ns/web/sa/frontend, "*", "td/ns/ops/sa/admin-*"]
                notPrincipals: [spiffe://other/svc/x]
        """
    )
    result = translate(policy, trust_domain=TD)
    assert not result.problems
    (obj,) = result.objects
    assert obj["spec"]["service"] == "*"  # no selector in the root namespace: mesh-wide
    assert obj["spec"]["action"] == "ALLOW"
    source = obj["spec"]["rules"][0]["from"][0]["source"]
    assert source["principals"] == [
        "spiffe://mesh.test/svc/frontend",
        "*",
        "spiffe://mesh.test/svc/admin-*",
    ]
    assert source["notPrincipals"] == ["spiffe://other/svc/x"]
    parse_object(obj)


def test_every_unhonoured_field_is_listed_at_once_with_path_and_why() -> None:
    dr = one(
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: reviews}
        spec:
          host: reviews
          exportTo: ["."]
          trafficPolicy:
            loadBalancer: {simple: RANDOM}
            connectionPool: {http: {maxRetries: 3}}
            outlierDetection: {consecutiveErrors: 2, minHealthPercent: 50}
            tls: {mode: SIMPLE}
          subsets:
          - {name: v1, labels: {version: v1}, trafficPolicy: {}}
        """
    )
    result = translate(dr, trust_domain=TD)
    found = {(p.path, p.why) for p in result.problems}
    assert found == {
        ("spec.exportTo", Why.DIFFERENT_SEMANTICS),
        ("spec.trafficPolicy.loadBalancer.simple", Why.UNSUPPORTED),
        ("spec.trafficPolicy.connectionPool.http.maxRetries", Why.UNSUPPORTED),
        ("spec.trafficPolicy.outlierDetection.consecutiveErrors", Why.UNSUPPORTED),
        ("spec.trafficPolicy.outlierDetection.minHealthPercent", Why.UNSUPPORTED),
        ("spec.trafficPolicy.tls", Why.UNSUPPORTED),
        ("spec.subsets[0].trafficPolicy", Why.UNSUPPORTED),
    }
    assert all(p.kind == "DestinationRule" and p.name == "reviews.default" for p in result.problems)


def test_behaviour_changing_fields_are_refused_not_dropped() -> None:
    vs = one(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: r}
        spec:
          hosts: [reviews, www.example.com]
          gateways: [ingress]
          http:
          - match: [{uri: {prefix: /api}, ignoreUriCase: true}]
            rewrite: {uri: /v2}
            redirect: {uri: /x}
            route: [{destination: {host: reviews}}]
          tcp: [{route: []}]
        """
    )
    result = translate(vs, trust_domain=TD)
    paths = sorted(p.path for p in result.problems)
    assert paths == [
        "spec.gateways",
        "spec.hosts[1]",
        "spec.http[0].match[0].ignoreUriCase",
        "spec.http[0].redirect",
        "spec.http[0].rewrite.uri",
        "spec.tcp",
    ]
    # A rewrite under exact matches means the same in both, so it is accepted.
    exact = one(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: r}
        spec:
          hosts: [reviews]
          http: [{match: [{uri: {exact: /old}}], rewrite: {uri: /new},
                  route: [{destination: {host: reviews}}]}]
        """
    )
    assert not translate(exact, trust_domain=TD).problems


def test_authorization_outside_root_namespace_needs_a_selector() -> None:
    policy = one(
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: deny-all, namespace: shop}
        spec:
          action: CUSTOM
          provider: {name: opa}
          rules: [{from: [{source: {namespaces: [web], principals: [cluster.local/ns/*]}}]}]
        """
    )
    result = translate(policy, trust_domain=TD)
    assert {p.path for p in result.problems} == {
        "spec",
        "spec.action",
        "spec.provider",
        "spec.rules[0].from[0].source.namespaces",
        "spec.rules[0].from[0].source.principals[0]",
    }
    assert not result.objects


def test_peer_authentications_merge_into_the_live_mesh_config() -> None:
    docs = [d.data for d in load_path(EXAMPLES / "istio" / "peer-authentication.yaml")]
    result = translate_all(docs, trust_domain=TD)
    (fragment,) = result.objects
    assert fragment["spec"] == {
        "mtls": {"mode": "STRICT", "services": {"legacy-billing": "PERMISSIVE"}}
    }
    live = {
        "kind": "MeshConfig",
        "name": "default",
        "spec": {"admins": ["spiffe://mesh.test/svc/ops"], "mtls": {"services": {"a": "STRICT"}}},
    }
    merged = merge_mesh_config(live, fragment)
    assert merged["spec"]["admins"] == ["spiffe://mesh.test/svc/ops"]  # kept, not reset
    assert merged["spec"]["mtls"] == {
        "mode": "STRICT",
        "services": {"a": "STRICT", "legacy-billing": "PERMISSIVE"},
    }
    disable = one(
        """
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: x, namespace: istio-system}
        spec: {mtls: {mode: DISABLE}, portLevelMtls: {"80": {mode: DISABLE}}}
        """
    )
    assert {p.path for p in translate(disable, trust_domain=TD).problems} == {
        "spec.mtls.mode",
        "spec.portLevelMtls",
    }


def test_http_route_prefix_is_segment_wise_and_weights_become_percentages() -> None:
    route = one(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{kind: Service, name: reviews}]
          rules:
          - matches: [{path: {type: PathPrefix, value: /api/}, method: GET}]
            backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]
        """
    )
    (obj,) = translate(route, trust_domain=TD).objects
    rule = obj["spec"]["http"][0]
    assert rule["match"] == [
        {"method": {"exact": "GET"}, "uri": {"exact": "/api"}},
        {"method": {"exact": "GET"}, "uri": {"prefix": "/api/"}},
    ]
    assert [d["weight"] for d in rule["route"]] == [75, 25]
    thirds = one(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r}
        spec:
          parentRefs: [{kind: Gateway, name: ingress}, {kind: Service, name: reviews, port: 80}]
          hostnames: [reviews.example.com]
          rules:
          - backendRefs: [{name: a, port: 80}, {name: b, port: 80}, {name: c, port: 80}]
            filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
        """
    )
    problems = translate(thirds, trust_domain=TD).problems
    assert {(p.path, p.why) for p in problems} == {
        ("spec.hostnames", Why.DIFFERENT_SEMANTICS),
        ("spec.parentRefs[0]", Why.UNSUPPORTED),
        ("spec.parentRefs[1].port", Why.DIFFERENT_SEMANTICS),
        ("spec.rules[0].backendRefs", Why.DIFFERENT_SEMANTICS),
        ("spec.rules[0].filters[0].requestRedirect", Why.UNSUPPORTED),
        ("spec.rules[0].filters[0].type", Why.UNSUPPORTED),
    }


def test_batch_reports_translation_and_validation_problems_in_one_round() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, trafficPolicy: {portLevelSettings: []}}
---
kind: Route
metadata: {name: native}
spec: {hosts: [reviews]}
"""
    batch = translate_documents(load_text(text, file="mixed.yaml"), trust_domain=TD)
    found = [(e.source, e.kind, e.path) for e in batch.errors]
    assert ("mixed.yaml:2", "Route", "spec.http[0].route") in found  # weights add up to 110
    assert ("mixed.yaml:12", "DestinationRule", "spec.trafficPolicy.portLevelSettings") in found
    native = [f for f in found if f[0] == "mixed.yaml:17"]
    assert [p for _, _, p in native] == ["metadata", "spec.hosts", "spec.host", "spec.http"]


def test_only_istio_and_gateway_groups_are_foreign() -> None:
    assert is_foreign({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"})
    assert is_foreign({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"})
    assert not is_foreign({"apiVersion": "peermesh.io/v1", "kind": "Route"})
    assert not is_foreign(["x"])
    unknown = translate(
        {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "s"}},
        trust_domain=TD,
    )
    (problem,) = unknown.problems
    assert problem.path == "kind" and "VirtualService" in (problem.hint or "")
    nameless = translate(
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"}, trust_domain=TD
    )
    assert [p.path for p in nameless.problems] == ["metadata.name"]


def test_document_sources_survive_translation() -> None:
    docs = [Document({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                      "metadata": {"name": "default", "namespace": "istio-system"},
                      "spec": {"mtls": {"mode": "PERMISSIVE"}}}, "pa.yaml", 3)]  # fmt: skip
    batch = translate_documents(docs, trust_domain=TD)
    assert not batch.errors
    (doc,) = batch.documents
    assert doc.source == "pa.yaml:3"
    assert batch.translated == frozenset({"MeshConfig/default"})


def test_loading_reports_object_and_cross_object_problems_together() -> None:
    from peermesh.policy.errors import PolicyError
    from peermesh.policy.loader import parse_documents

    text = """
kind: Route
name: a
spec: {host: a, http: [{route: [{destination: {host: a, subset: v9}}]}]}
---
kind: Route
name: b
spec: {host: b, http: [{route: [{destination: {host: b}}], timeout: 5}]}
"""
    with pytest.raises(PolicyError) as info:
        parse_documents(load_text(text, file="two.yaml"))
    found = {(e.name, e.path) for e in info.value.errors}
    assert found == {
        ("a", "spec.http[0].route[0].destination.subset"),
        ("b", "spec.http[0].timeout"),
    }
