"""Compiled routing and authorization tables: rule order, matching, weights, authz verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peermesh.policy.compiled import CompiledPolicy, compile_policy
from peermesh.policy.loader import load_policy
from peermesh.policy.model import PolicyObject
from peermesh.policy.validate import parse_object

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policy"
FRONTEND = "spiffe://peermesh.local/svc/frontend"
ADMIN = "spiffe://peermesh.local/svc/admin-tool"
OTHER = "spiffe://peermesh.local/svc/other"


@pytest.fixture(scope="module")
def table() -> CompiledPolicy:
    return compile_policy(load_policy(EXAMPLES).objects)


def objs(*docs: dict[str, Any]) -> list[PolicyObject]:
    return [parse_object(d) for d in docs]


def route(name: str, host: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Route", "name": name, "spec": {"host": host, "http": list(rules)}}


def authz(name: str, service: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "AuthorizationPolicy",
        "name": name,
        "spec": {"service": service, "action": action, "rules": rules},
    }


def to(host: str, subset: str | None = None) -> dict[str, Any]:
    dest: dict[str, Any] = {"host": host}
    if subset:
        dest["subset"] = subset
    return {"destination": dest}


# ---------------------------------------------------------------------------- routing


def test_no_route_means_default_routing(table: CompiledPolicy) -> None:
    assert table.match_route("unknown", "GET", "/", {}) is None


def test_header_query_path_and_method_matches(table: CompiledPolicy) -> None:
    by_header = table.match_route("ratings", "GET", "/x", {"end-user": "jason"})
    assert by_header is not None and by_header.rule_name == "test-user"
    assert [d.subset for d in by_header.destinations] == ["v2"]
    assert by_header.destinations[0].labels == (("version", "v2"),)
    by_query = table.match_route("ratings", "POST", "/x?preview=true&a=1", {})
    assert by_query is not None and by_query.rule_name == "test-user"
    explicit = table.match_route("ratings", "POST", "/x", {}, {"preview": "true"})
    assert explicit is not None and explicit.rule_name == "test-user"
    get_api = table.match_route("ratings", "GET", "/api/v1/books?preview=no", {"end-user": "ann"})
    assert get_api is not None and get_api.rule_name == "api-v1"
    post_api = table.match_route("ratings", "POST", "/api/v1/books", {})
    assert post_api is not None and post_api.rule_name == "default"
    assert post_api.destinations[0].labels == (("version", "v1"),)


def test_canary_weights_resolve_to_subsets(table: CompiledPolicy) -> None:
    decision = table.match_route("reviews", "GET", "/", {})
    assert decision is not None
    assert [(d.subset, d.weight, d.labels) for d in decision.destinations] == [
        ("v1", 90, (("version", "v1"),)),
        ("v2", 10, (("version", "v2"),)),
    ]
    picks = [decision.pick(i / 1000).subset for i in range(1000)]
    assert picks.count("v1") == 900 and picks.count("v2") == 100
    assert decision.pick(0.0).subset == "v1"
    assert decision.pick(0.8999).subset == "v1"
    assert decision.pick(0.9).subset == "v2"
    assert decision.pick(0.99999).subset == "v2"


def test_decisions_are_prebuilt(table: CompiledPolicy) -> None:
    first = table.match_route("payments", "GET", "/pay", {})
    assert first is not None and first is table.match_route("payments", "GET", "/other", {})
    assert first.timeout == 2.0 and first.retries is not None and first.retries.attempts == 3
    write = table.match_route("payments", "POST", "/pay", {})
    assert write is not None and write.rule_name == "writes" and write.timeout == 5.0


def test_fault_mirror_rewrite_and_balancer(table: CompiledPolicy) -> None:
    decision = table.match_route("checkout", "GET", "/", {})
    assert decision is not None and decision.fault is not None
    assert decision.fault.abort is not None and decision.fault.abort.http_status == 503
    assert decision.mirror is not None and decision.mirror.labels == (("version", "v2"),)
    assert decision.mirror_percentage == 20.0
    assert decision.rewrite is not None and decision.rewrite.uri == "/v1/checkout"
    assert table.load_balancer("checkout").consistent_hash_header == "x-session"
    assert table.load_balancer("payments").simple == "P2C_EWMA"
    assert table.load_balancer("nobody").simple == "P2C_EWMA"
    policy = table.destination_policy("payments")
    assert policy is not None and policy.spec.connection_pool is not None


def test_regex_is_a_full_match_and_presence_matching() -> None:
    table = compile_policy(
        objs(
            route(
                "items",
                "items",
                {"match": [{"uri": {"regex": "/item/[0-9]+"}}], "route": [to("by-id")]},
                {"match": [{"headers": {"x-debug": {"present": True}}}], "route": [to("debug")]},
                {"match": [{"headers": {"x-auth": {"present": False}}}], "route": [to("anon")]},
                {"route": [to("items")]},
            )
        )
    )

    def host(path: str, headers: dict[str, str]) -> str:
        decision = table.match_route("items", "GET", path, headers)
        assert decision is not None
        return decision.destinations[0].host

    assert host("/item/12", {"x-auth": "t"}) == "by-id"
    assert host("/item/12/more", {"x-auth": "t"}) == "items"
    assert host("/x", {"x-debug": "", "x-auth": "t"}) == "debug"
    assert host("/x", {}) == "anon"


def test_rules_of_routes_sharing_a_host_run_in_name_order() -> None:
    b = route("b", "svc", {"route": [to("from-b")]})
    a = route("a", "svc", {"match": [{"method": {"exact": "PUT"}}], "route": [to("from-a")]})
    table = compile_policy(objs(b, a))
    put = table.match_route("svc", "PUT", "/", {})
    get = table.match_route("svc", "GET", "/", {})
    assert put is not None and put.route == "a"
    assert get is not None and get.route == "b"


def test_unknown_subset_from_concurrent_edits_is_unresolved_not_dropped() -> None:
    table = compile_policy(objs(route("r", "svc", {"route": [to("svc", "gone")]})))
    decision = table.match_route("svc", "GET", "/", {})
    assert decision is not None and decision.destinations[0].labels is None
    assert "subset 'gone' of 'svc' is not defined" in table.warnings[0]


def test_compilation_is_order_independent(table: CompiledPolicy) -> None:
    objects = load_policy(EXAMPLES).objects
    assert compile_policy(reversed(objects)) == table
    assert compile_policy(reversed(objects)).describe() == table.describe()


# ---------------------------------------------------------------------------- authorization


def test_example_allow_and_deny(table: CompiledPolicy) -> None:
    ok = table.authorize("reviews", FRONTEND, "GET", "/api/books?x=1", 9080)
    assert (ok.allowed, ok.policy_name, ok.action) == (True, "reviews-allow", "ALLOW")
    post = table.authorize("reviews", FRONTEND, "POST", "/api/books", 9080)
    assert (post.allowed, post.policy_name, post.action) == (False, "reviews-allow", "ALLOW")
    internal = table.authorize(
        "reviews", ADMIN, "GET", "/internal/x", 9080, {"x-change-ticket": "CHG-9"}
    )
    assert (internal.allowed, internal.policy_name, internal.action) == (
        False,
        "reviews-deny-internal",
        "DENY",
    )
    admin = table.authorize(
        "reviews", ADMIN, "DELETE", "/api/x", 9080, {"x-change-ticket": "CHG-1"}
    )
    assert admin.allowed and admin.policy_name == "reviews-allow"
    no_ticket = table.authorize("reviews", ADMIN, "DELETE", "/api/x", 9080)
    assert not no_ticket.allowed
    stranger = table.authorize("reviews", OTHER, "GET", "/api/x", 9080)
    assert not stranger.allowed


def test_deny_beats_allow() -> None:
    table = compile_policy(
        objs(
            authz("allow-all", "svc", "ALLOW", [{}]),
            authz("deny-post", "svc", "DENY", [{"to": [{"operation": {"methods": ["POST"]}}]}]),
        )
    )
    assert table.authorize("svc", FRONTEND, "GET", "/").allowed
    denied = table.authorize("svc", FRONTEND, "POST", "/")
    assert (denied.allowed, denied.policy_name, denied.action) == (False, "deny-post", "DENY")
    assert "deny-post" in denied.reason


def test_mesh_default_applies_only_without_allow_policies(table: CompiledPolicy) -> None:
    authenticated = table.authorize("payments", OTHER, "GET", "/")
    assert (authenticated.allowed, authenticated.action) == (True, "DEFAULT")
    assert authenticated.policy_name == "MeshConfig/default"
    plaintext = table.authorize("payments", None, "GET", "/")
    assert (plaintext.allowed, plaintext.action) == (False, "DEFAULT")
    deny_default = compile_policy(
        objs({"kind": "MeshConfig", "name": "default", "spec": {"defaultInboundPolicy": "DENY"}})
    )
    assert not deny_default.authorize("payments", OTHER, "GET", "/").allowed
    nothing = compile_policy(())
    assert nothing.authorize("x", OTHER, "GET", "/").allowed
    assert nothing.authorize("x", OTHER, "GET", "/").policy_name is None


def test_allow_without_rules_allows_nothing_and_empty_rule_allows_all() -> None:
    nothing = compile_policy(objs(authz("lockdown", "svc", "ALLOW", [])))
    decision = nothing.authorize("svc", FRONTEND, "GET", "/")
    assert (decision.allowed, decision.policy_name) == (False, "lockdown")
    everything = compile_policy(objs(authz("open", "svc", "ALLOW", [{}])))
    assert everything.authorize("svc", None, "GET", "/").allowed
    deny_nothing = compile_policy(objs(authz("noop", "svc", "DENY", [])))
    assert deny_nothing.authorize("svc", FRONTEND, "GET", "/").action == "DEFAULT"


def test_mesh_wide_policies_wildcards_and_negations() -> None:
    table = compile_policy(
        objs(
            authz("no-plaintext", "*", "DENY", [{"from": [{"source": {"notPrincipals": ["*"]}}]}]),
            authz(
                "svc-allow",
                "svc",
                "ALLOW",
                [
                    {
                        "from": [{"source": {"principals": ["*/svc/frontend"]}}],
                        "to": [
                            {
                                "operation": {
                                    "notMethods": ["DELETE"],
                                    "paths": ["*.json", "/pub/*"],
                                    "notPaths": ["/pub/secret"],
                                    "ports": ["8080"],
                                }
                            }
                        ],
                        "when": [{"key": "request.headers[x-env]", "notValues": ["prod*"]}],
                    }
                ],
            ),
            authz("audit-all", "svc", "AUDIT", [{}]),
        )
    )

    def ok(principal: str | None, method: str, path: str, port: int, **headers: str) -> bool:
        return table.authorize("svc", principal, method, path, port, headers).allowed

    assert ok(FRONTEND, "GET", "/data.json", 8080)
    assert ok("spiffe://other.domain/svc/frontend", "PUT", "/pub/x", 8080)
    assert not ok(FRONTEND, "DELETE", "/pub/x", 8080)
    assert not ok(FRONTEND, "GET", "/pub/secret", 8080)
    assert not ok(FRONTEND, "GET", "/pub/x", 9090)
    assert not ok(FRONTEND, "GET", "/pub/x", 8080, **{"x-env": "production"})
    assert ok(FRONTEND, "GET", "/pub/x", 8080, **{"x-env": "staging"})
    assert not ok(OTHER, "GET", "/pub/x", 8080)
    plaintext = table.authorize("elsewhere", None, "GET", "/")
    assert (plaintext.allowed, plaintext.policy_name) == (False, "no-plaintext")
    audited = table.authorize("svc", FRONTEND, "GET", "/data.json", 8080)
    assert audited.audited == ("audit-all",) and audited.allowed


def test_revoked_identities_admins_and_mtls(table: CompiledPolicy) -> None:
    revoked = "spiffe://peermesh.local/svc/old-batch-job"
    decision = table.authorize("payments", revoked, "GET", "/")
    assert (decision.allowed, decision.action, decision.policy_name) == (
        False,
        "REVOKED",
        "MeshConfig/default",
    )
    # The example leaves admins commented out (setting it locks other editors out).
    assert not table.is_admin("spiffe://peermesh.local/svc/ops-console")
    admins = compile_policy(
        objs({"kind": "MeshConfig", "name": "default", "spec": {"admins": [ADMIN]}})
    )
    assert admins.is_admin(ADMIN)
    assert not admins.is_admin(FRONTEND) and not admins.is_admin(None)
    assert table.mtls_mode("legacy-billing") == "PERMISSIVE"
    assert table.mtls_mode("reviews") == "STRICT"


def test_incremental_compilation_equals_a_full_one() -> None:
    objects = list(load_policy(EXAMPLES).objects)
    first = compile_policy(objects)
    index = next(
        i for i, o in enumerate(objects) if o.kind == "TrafficPolicy" and o.name == "reviews"
    )
    relabelled = parse_object(
        {
            "kind": "TrafficPolicy",
            "name": "reviews",
            "spec": {
                "host": "reviews",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1", "zone": "a"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        }
    )
    objects[index] = relabelled
    again = compile_policy(objects, first)
    assert again == compile_policy(objects)
    decision = again.match_route("reviews", "GET", "/", {})
    assert decision is not None
    assert decision.destinations[0].labels == (("version", "v1"), ("zone", "a"))
    # Routes that do not depend on the changed policy keep their compiled rules.
    assert again.routes["payments"][0] is first.routes["payments"][0]
    assert again.routes["reviews"][0] is not first.routes["reviews"][0]
    assert again.authz["reviews"][0] is first.authz["reviews"][0]
