"""The whole compiled policy for one version, and :func:`compile_policy` that builds it."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from peermesh.policy.compiled.authz import (
    AuthzDecision,
    AuthzRequest,
    CompiledAuthzPolicy,
    _authz_policy,
)
from peermesh.policy.compiled.routing import (
    CompiledRule,
    DestinationPolicy,
    RouteDecision,
    _compile_route,
    _RouteParts,
)
from peermesh.policy.model import (
    ACTION_ALLOW,
    ACTION_AUDIT,
    ACTION_DENY,
    ALL_SERVICES,
    INBOUND_DENY,
    LB_P2C_EWMA,
    MESH_CONFIG,
    MESH_CONFIG_NAME,
    AuthorizationPolicy,
    JoinToken,
    JoinTokenSpec,
    LoadBalancer,
    MeshConfig,
    MeshConfigSpec,
    PolicyObject,
    Route,
    TrafficPolicy,
)


@dataclass(frozen=True)
class JoinTokenGrant:
    """A join token as signers check it: from a ``JoinToken`` object or the MeshConfig."""

    token_id: str
    token_sha256: str
    service: str | None
    expires: float | None  # unix seconds; None: never
    max_uses: int | None  # None: unlimited
    source: str  # "JoinToken/<id>" or "MeshConfig/default"

    @classmethod
    def from_spec(cls, token_id: str, spec: JoinTokenSpec, source: str) -> JoinTokenGrant:
        expires = None
        if spec.expires_at is not None:
            expires = _dt.datetime.fromisoformat(spec.expires_at.replace("Z", "+00:00")).timestamp()
        return cls(token_id, spec.token_sha256, spec.service, expires, spec.max_uses, source)


def _split_query(path: str) -> tuple[str, str]:
    bare, _, query = path.partition("?")
    return bare, query


@dataclass(frozen=True)
class CompiledPolicy:
    """Immutable routing and authorization tables for one version of the policy."""

    routes: Mapping[str, tuple[CompiledRule, ...]]
    destinations: Mapping[str, DestinationPolicy]
    authz: Mapping[str, tuple[CompiledAuthzPolicy, ...]]
    mesh: MeshConfigSpec
    mesh_config_name: str | None
    warnings: tuple[str, ...] = ()
    revoked: frozenset[str] = frozenset()
    join_tokens: Mapping[str, JoinTokenGrant] = field(default_factory=dict)
    # Compiled parts of each object, reused by the next compilation when the object is
    # unchanged (the store hands back the same instance), so a change costs little more
    # than re-linking. Not part of equality: two replicas' tables compare by content.
    _parts: Mapping[str, tuple[PolicyObject, object]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def match_route(
        self,
        service: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
    ) -> RouteDecision | None:
        """The first rule for ``service`` matching the request, or None if no rule does.

        ``headers`` must use lowercase names (HTTP/2 style). ``path`` may carry a query
        string; it is ignored for path matching and parsed for ``query`` if none is given.
        None means "no Route applies": send to any endpoint of ``service``.
        """
        rules = self.routes.get(service)
        if not rules:
            return None
        bare, raw_query = _split_query(path)
        if query is None:
            query = dict(parse_qsl(raw_query, keep_blank_values=True)) if raw_query else {}
        for rule in rules:
            if rule(method, bare, headers, query):
                return rule.decision
        return None

    def destination_policy(self, host: str) -> DestinationPolicy | None:
        return self.destinations.get(host)

    def load_balancer(self, host: str) -> LoadBalancer:
        policy = self.destinations.get(host)
        return policy.load_balancer if policy else LoadBalancer(simple=LB_P2C_EWMA)

    def mtls_mode(self, service: str) -> str:
        return self.mesh.mtls.mode_for(service)

    def is_revoked(self, principal: str | None) -> bool:
        return principal is not None and principal in self.revoked

    def is_admin(self, principal: str | None) -> bool:
        return principal is not None and principal in self.mesh.admins

    def may_tap(self, principal: str | None) -> bool:
        """Whether ``principal``'s agent may read this agent's tap rows (admins or listed)."""
        return principal is not None and (
            principal in self.mesh.admins or principal in self.mesh.tap_identities
        )

    def authorize(
        self,
        service: str,
        principal: str | None,
        method: str,
        path: str,
        port: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AuthzDecision:
        """Decide an inbound request: revoked, then DENY, then ALLOW, then the mesh default.

        ``principal`` is the caller's verified SPIFFE ID, None for a plaintext caller
        (PERMISSIVE mode). Once any ALLOW policy selects a service, requests no ALLOW policy
        matches are denied.
        """
        headers = headers or {}
        bare, _ = _split_query(path)
        mesh_ref = f"{MESH_CONFIG}/{self.mesh_config_name}" if self.mesh_config_name else None
        if self.is_revoked(principal):
            return AuthzDecision(
                False, mesh_ref, "REVOKED", f"identity {principal} is revoked by the MeshConfig"
            )
        policies = self.authz.get(service, ()) + (
            self.authz.get(ALL_SERVICES, ()) if service != ALL_SERVICES else ()
        )
        request = AuthzRequest(principal, method, bare, port, headers)
        audited = tuple(p.name for p in policies if p.action == ACTION_AUDIT and p.matches(request))
        for policy in policies:
            if policy.action == ACTION_DENY and policy.matches(request):
                return AuthzDecision(
                    False,
                    policy.name,
                    ACTION_DENY,
                    f"denied by AuthorizationPolicy {policy.name}",
                    audited,
                )
        allows = [p for p in policies if p.action == ACTION_ALLOW]
        for policy in allows:
            if policy.matches(request):
                return AuthzDecision(
                    True,
                    policy.name,
                    ACTION_ALLOW,
                    f"allowed by AuthorizationPolicy {policy.name}",
                    audited,
                )
        if allows:
            names = ",".join(p.name for p in allows)
            return AuthzDecision(
                False,
                names,
                ACTION_ALLOW,
                f"no rule of the ALLOW policies for {service} ({names}) matches",
                audited,
            )
        if self.mesh.default_inbound_policy == INBOUND_DENY:
            return AuthzDecision(
                False,
                mesh_ref,
                "DEFAULT",
                "no ALLOW policy selects this service and the mesh default inbound policy is DENY",
                audited,
            )
        if principal is None:
            return AuthzDecision(
                False,
                mesh_ref,
                "DEFAULT",
                "the mesh default allows authenticated callers only; this caller has no identity",
                audited,
            )
        return AuthzDecision(
            True, mesh_ref, "DEFAULT", "allowed by the mesh default (ALLOW_AUTHENTICATED)", audited
        )

    def describe(self) -> dict[str, object]:
        """A plain summary (rule order, resolved destinations, policy names) for comparing
        tables across replicas and for ``status`` output."""
        return {
            "routes": {
                host: [
                    [
                        r.decision.route,
                        r.decision.rule_index,
                        [(d.host, d.subset, d.weight, d.labels) for d in r.decision.destinations],
                    ]
                    for r in rules
                ]
                for host, rules in sorted(self.routes.items())
            },
            "destinations": {h: p.policy_name for h, p in sorted(self.destinations.items())},
            "authz": {s: [(p.name, p.action) for p in ps] for s, ps in sorted(self.authz.items())},
            "mesh": self.mesh.to_dict(),
            "warnings": list(self.warnings),
        }


def compile_policy(
    objects: Iterable[PolicyObject], previous: CompiledPolicy | None = None
) -> CompiledPolicy:
    """Build the tables from the current winning objects (in any order: output is sorted).

    Conflicting objects that can only arise from concurrent edits on different nodes are
    resolved deterministically (first by name wins) and reported in ``warnings``, so every
    replica compiles the same table from the same objects. Pass the ``previous`` table to
    reuse what was compiled for objects that did not change (the store keeps the same
    instance for an unchanged object), so a change costs little more than re-linking.
    """
    ordered = sorted(objects, key=lambda o: (o.kind, o.name))
    cache = previous._parts if previous is not None else {}
    parts: dict[str, tuple[PolicyObject, object]] = {}

    def cached(obj: PolicyObject) -> object | None:
        hit = cache.get(obj.key)
        return hit[1] if hit is not None and hit[0] is obj else None

    warnings: list[str] = []
    destinations: dict[str, DestinationPolicy] = {}
    mesh: MeshConfig | None = None
    tokens: list[JoinToken] = []
    for obj in ordered:
        if isinstance(obj, TrafficPolicy):
            host = obj.spec.host
            if host in destinations:
                warnings.append(
                    f"TrafficPolicy/{obj.name}: ignored, host '{host}' already has "
                    f"TrafficPolicy/{destinations[host].policy_name}"
                )
                continue
            policy = cached(obj)
            if not isinstance(policy, DestinationPolicy):
                policy = DestinationPolicy(
                    host=host,
                    policy_name=obj.name,
                    load_balancer=obj.spec.load_balancer or LoadBalancer(simple=LB_P2C_EWMA),
                    spec=obj.spec,
                )
            parts[obj.key] = (obj, policy)
            destinations[host] = policy
        elif isinstance(obj, MeshConfig) and obj.name == MESH_CONFIG_NAME:
            mesh = obj
        elif isinstance(obj, JoinToken):
            tokens.append(obj)
    routes: dict[str, list[CompiledRule]] = {}
    authz: dict[str, list[CompiledAuthzPolicy]] = {}
    for obj in ordered:
        if isinstance(obj, Route):
            previous_parts = cached(obj)
            route_parts = _compile_route(
                obj,
                destinations,
                previous_parts if isinstance(previous_parts, _RouteParts) else None,
            )
            parts[obj.key] = (obj, route_parts)
            routes.setdefault(obj.spec.host, []).extend(route_parts.rules)
            warnings.extend(route_parts.warnings)
        elif isinstance(obj, AuthorizationPolicy):
            compiled = cached(obj)
            if not isinstance(compiled, CompiledAuthzPolicy):
                compiled = _authz_policy(obj)
            parts[obj.key] = (obj, compiled)
            authz.setdefault(obj.spec.service, []).append(compiled)
    mesh_spec = mesh.spec if mesh else MeshConfigSpec()
    grants: dict[str, JoinTokenGrant] = {}
    mesh_ref = f"{MESH_CONFIG}/{mesh.name}" if mesh else ""
    for entry in mesh_spec.join_tokens:
        grants[entry.id] = JoinTokenGrant.from_spec(entry.id, entry.spec, mesh_ref)
    for token in tokens:
        if token.name in grants:
            warnings.append(
                f"{token.key}: the MeshConfig declares a token with the same id; this object"
                " is used"
            )
        grants[token.name] = JoinTokenGrant.from_spec(token.name, token.spec, token.key)
    return CompiledPolicy(
        routes={host: tuple(rules) for host, rules in routes.items()},
        destinations=destinations,
        authz={service: tuple(ps) for service, ps in authz.items()},
        mesh=mesh_spec,
        mesh_config_name=mesh.name if mesh else None,
        warnings=tuple(warnings),
        revoked=frozenset(r.identity for r in mesh_spec.revoked_identities),
        join_tokens=grants,
        _parts=parts,
    )


EMPTY_POLICY = compile_policy(())
