"""Routing and authorization tables compiled once per policy change.

The proxy asks two questions per request, "where does this go?" and "may this caller do
this?". Both are answered here from immutable tables built by :func:`compile_policy`:
regexes are compiled, subsets are resolved to label selectors, rules of several Routes for
one host are concatenated in name order, and every :class:`RouteDecision` is prebuilt, so a
request costs a few comparisons and no allocation of policy objects. A new table is built
on every change and swapped in whole; requests in flight keep the table they started with.
:func:`compile_policy` is a pure function of immutable inputs, so for very large policies
it can run off the event-loop thread (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

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
    AuthzRule,
    Destination,
    Fault,
    Headers,
    HTTPMatch,
    HTTPRoute,
    JoinToken,
    JoinTokenSpec,
    LoadBalancer,
    MeshConfig,
    MeshConfigSpec,
    Pairs,
    PolicyObject,
    Retries,
    Rewrite,
    Route,
    StringMatch,
    TrafficPolicy,
    TrafficPolicySpec,
)

# ---------------------------------------------------------------------------- matchers


@dataclass(frozen=True)
class Matcher:
    """A compiled StringMatch. ``present``/``absent`` test only whether a value exists."""

    mode: str  # "exact" | "prefix" | "regex" | "present" | "absent"
    value: str = ""
    pattern: re.Pattern[str] | None = None

    @staticmethod
    def of(match: StringMatch) -> Matcher:
        if match.exact is not None:
            return Matcher("exact", match.exact)
        if match.prefix is not None:
            return Matcher("prefix", match.prefix)
        if match.regex is not None:
            return Matcher("regex", match.regex, re.compile(match.regex))
        return Matcher("present" if match.present else "absent")

    def __call__(self, text: str | None) -> bool:
        if self.mode == "absent":
            return text is None
        if text is None:
            return False
        if self.mode == "exact":
            return text == self.value
        if self.mode == "prefix":
            return text.startswith(self.value)
        if self.mode == "regex":
            assert self.pattern is not None
            return self.pattern.fullmatch(text) is not None
        return True  # present


@dataclass(frozen=True)
class CompiledMatch:
    """One ``match`` entry: every condition must hold."""

    uri: Matcher | None
    method: Matcher | None
    headers: tuple[tuple[str, Matcher], ...]
    query: tuple[tuple[str, Matcher], ...]

    @staticmethod
    def of(match: HTTPMatch) -> CompiledMatch:
        return CompiledMatch(
            uri=Matcher.of(match.uri) if match.uri else None,
            method=Matcher.of(match.method) if match.method else None,
            headers=tuple((name, Matcher.of(m)) for name, m in match.headers),
            query=tuple((name, Matcher.of(m)) for name, m in match.query_params),
        )

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> bool:
        if self.uri is not None and not self.uri(path):
            return False
        if self.method is not None and not self.method(method):
            return False
        for name, matcher in self.headers:
            if not matcher(headers.get(name)):
                return False
        return all(matcher(query.get(name)) for name, matcher in self.query)


# ---------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class ResolvedDestination:
    """A destination with its subset resolved to labels.

    ``labels`` is ``()`` for "every endpoint of the host" and ``None`` when the subset is
    not defined (possible after concurrent edits on two nodes): the proxy must then answer
    503 for this share of traffic, as Istio does for an unknown subset.
    """

    host: str
    subset: str | None
    port: int | None
    weight: int
    labels: Pairs | None


@dataclass(frozen=True)
class RouteDecision:
    """Everything the proxy needs for a request that matched one rule."""

    route: str
    rule_index: int
    rule_name: str | None
    destinations: tuple[ResolvedDestination, ...]
    timeout: float | None
    retries: Retries | None
    fault: Fault | None
    mirror: ResolvedDestination | None
    mirror_percentage: float
    headers: Headers | None
    rewrite: Rewrite | None
    _cumulative: tuple[int, ...] = field(default=(), repr=False)

    def pick(self, r: float) -> ResolvedDestination:
        """Weighted choice; ``r`` in [0, 1) comes from the caller's RNG (sans-IO)."""
        target = r * 100
        for dest, upto in zip(self.destinations, self._cumulative, strict=True):
            if target < upto:
                return dest
        return next(d for d in reversed(self.destinations) if d.weight > 0)


@dataclass(frozen=True)
class CompiledRule:
    matches: tuple[CompiledMatch, ...]
    decision: RouteDecision

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> bool:
        if not self.matches:
            return True
        return any(m(method, path, headers, query) for m in self.matches)


@dataclass(frozen=True)
class DestinationPolicy:
    """A host's TrafficPolicy with defaults filled in, as the balancer and pools use it."""

    host: str
    policy_name: str | None
    load_balancer: LoadBalancer
    spec: TrafficPolicySpec

    def subset_labels(self, subset: str) -> Pairs | None:
        found = self.spec.subset(subset)
        return None if found is None else found.labels


# ---------------------------------------------------------------------------- authorization


@dataclass(frozen=True)
class Wildcard:
    """Istio string matching for authorization: exact, ``prefix*``, ``*suffix`` or ``*``."""

    mode: str  # "any" | "exact" | "prefix" | "suffix"
    value: str

    @staticmethod
    def of(text: str) -> Wildcard:
        if text == "*":
            return Wildcard("any", "")
        if text.endswith("*"):
            return Wildcard("prefix", text[:-1])
        if text.startswith("*"):
            return Wildcard("suffix", text[1:])
        return Wildcard("exact", text)

    def __call__(self, text: str) -> bool:
        if self.mode == "exact":
            return text == self.value
        if self.mode == "prefix":
            return text.startswith(self.value)
        if self.mode == "suffix":
            return text.endswith(self.value)
        return True


def _any(patterns: tuple[Wildcard, ...], text: str | None) -> bool:
    return text is not None and any(p(text) for p in patterns)


@dataclass(frozen=True)
class CompiledAuthzRule:
    """``from``/``to``/``when`` ANDed; entries inside each ORed; ``not*`` fields exclude."""

    sources: tuple[tuple[tuple[Wildcard, ...], tuple[Wildcard, ...]], ...]
    operations: tuple[
        tuple[
            frozenset[str],
            frozenset[str],
            tuple[Wildcard, ...],
            tuple[Wildcard, ...],
            frozenset[int],
            frozenset[int],
        ],
        ...,
    ]
    conditions: tuple[tuple[str, tuple[Wildcard, ...], tuple[Wildcard, ...]], ...]

    @staticmethod
    def of(rule: AuthzRule) -> CompiledAuthzRule:
        def wild(items: Iterable[str]) -> tuple[Wildcard, ...]:
            return tuple(Wildcard.of(i) for i in items)

        return CompiledAuthzRule(
            sources=tuple((wild(s.principals), wild(s.not_principals)) for s in rule.from_),
            operations=tuple(
                (
                    frozenset(o.methods),
                    frozenset(o.not_methods),
                    wild(o.paths),
                    wild(o.not_paths),
                    frozenset(o.ports),
                    frozenset(o.not_ports),
                )
                for o in rule.to
            ),
            conditions=tuple((c.header, wild(c.values), wild(c.not_values)) for c in rule.when),
        )

    def __call__(
        self,
        principal: str | None,
        method: str,
        path: str,
        port: int | None,
        headers: Mapping[str, str],
    ) -> bool:
        if self.sources and not any(
            (not principals or _any(principals, principal)) and not _any(nots, principal)
            for principals, nots in self.sources
        ):
            return False
        if self.operations and not any(
            (not methods or method in methods)
            and method not in not_methods
            and (not paths or _any(paths, path))
            and not _any(not_paths, path)
            and (not ports or port in ports)
            and port not in not_ports
            for methods, not_methods, paths, not_paths, ports, not_ports in self.operations
        ):
            return False
        for header, values, not_values in self.conditions:
            value = headers.get(header)
            if values and not _any(values, value):
                return False
            if _any(not_values, value):
                return False
        return True


@dataclass(frozen=True)
class CompiledAuthzPolicy:
    name: str
    action: str
    rules: tuple[CompiledAuthzRule, ...]

    def matches(
        self,
        principal: str | None,
        method: str,
        path: str,
        port: int | None,
        headers: Mapping[str, str],
    ) -> bool:
        # No rules: an ALLOW policy then allows nothing, a DENY policy denies nothing.
        return any(rule(principal, method, path, port, headers) for rule in self.rules)


@dataclass(frozen=True)
class AuthzDecision:
    """The verdict and who made it, for the 403 body and the access log.

    ``action`` is the deciding policy's action (``ALLOW``/``DENY``), ``DEFAULT`` when the
    MeshConfig default decided, or ``REVOKED`` for a revoked identity.
    """

    allowed: bool
    policy_name: str | None
    action: str
    reason: str
    audited: tuple[str, ...] = ()


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


# ---------------------------------------------------------------------------- the table


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
        audited = tuple(
            p.name
            for p in policies
            if p.action == ACTION_AUDIT and p.matches(principal, method, bare, port, headers)
        )
        for policy in policies:
            if policy.action == ACTION_DENY and policy.matches(
                principal, method, bare, port, headers
            ):
                return AuthzDecision(
                    False,
                    policy.name,
                    ACTION_DENY,
                    f"denied by AuthorizationPolicy {policy.name}",
                    audited,
                )
        allows = [p for p in policies if p.action == ACTION_ALLOW]
        for policy in allows:
            if policy.matches(principal, method, bare, port, headers):
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


def _resolve(
    dest: Destination,
    weight: int,
    policies: Mapping[str, DestinationPolicy],
    warnings: list[str],
    where: str,
) -> ResolvedDestination:
    labels: Pairs | None = ()
    if dest.subset is not None:
        policy = policies.get(dest.host)
        labels = policy.subset_labels(dest.subset) if policy else None
        if labels is None:
            warnings.append(
                f"{where}: subset '{dest.subset}' of '{dest.host}' is not defined; "
                "its share of traffic will fail with 503"
            )
    return ResolvedDestination(
        host=dest.host, subset=dest.subset, port=dest.port, weight=weight, labels=labels
    )


def _authz_policy(policy: AuthorizationPolicy) -> CompiledAuthzPolicy:
    return CompiledAuthzPolicy(
        name=policy.name,
        action=policy.spec.action,
        rules=tuple(CompiledAuthzRule.of(r) for r in policy.spec.rules),
    )


@dataclass(frozen=True)
class _RouteParts:
    """A Route's compiled rules and the destination policies their subsets resolved
    against: still valid while the Route and those policies are the same instances."""

    rules: tuple[CompiledRule, ...]
    subset_hosts: tuple[str, ...]
    depends_on: tuple[DestinationPolicy | None, ...]
    warnings: tuple[str, ...]


def _subset_hosts(route: Route) -> tuple[str, ...]:
    hosts = {d.destination.host for r in route.spec.http for d in r.route if d.destination.subset}
    hosts.update(r.mirror.host for r in route.spec.http if r.mirror and r.mirror.subset)
    return tuple(sorted(hosts))


def _compile_route(
    route: Route, destinations: Mapping[str, DestinationPolicy], cached: _RouteParts | None
) -> _RouteParts:
    hosts = cached.subset_hosts if cached is not None else _subset_hosts(route)
    depends_on = tuple(destinations.get(h) for h in hosts)
    if cached is not None and all(
        a is b for a, b in zip(cached.depends_on, depends_on, strict=True)
    ):
        return cached
    warnings: list[str] = []
    rules = tuple(
        CompiledRule(
            matches=tuple(CompiledMatch.of(m) for m in rule.match),
            decision=_decision(
                route.name, i, rule, destinations, warnings, f"Route/{route.name} spec.http[{i}]"
            ),
        )
        for i, rule in enumerate(route.spec.http)
    )
    return _RouteParts(rules, hosts, depends_on, tuple(warnings))


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


def _decision(
    route: str,
    index: int,
    rule: HTTPRoute,
    destinations: Mapping[str, DestinationPolicy],
    warnings: list[str],
    where: str,
) -> RouteDecision:
    dests = tuple(
        _resolve(d.destination, d.weight, destinations, warnings, where) for d in rule.route
    )
    cumulative: list[int] = []
    running = 0
    for d in dests:
        running += d.weight
        cumulative.append(running)
    mirror = (
        _resolve(rule.mirror, 100, destinations, warnings, where + " mirror")
        if rule.mirror
        else None
    )
    mirror_percentage = 0.0
    if mirror is not None:
        mirror_percentage = 100.0 if rule.mirror_percentage is None else rule.mirror_percentage
    return RouteDecision(
        route=route,
        rule_index=index,
        rule_name=rule.name,
        destinations=dests,
        timeout=rule.timeout,
        retries=rule.retries,
        fault=rule.fault,
        mirror=mirror,
        mirror_percentage=mirror_percentage,
        headers=rule.headers,
        rewrite=rule.rewrite,
        _cumulative=tuple(cumulative),
    )


EMPTY_POLICY = compile_policy(())
