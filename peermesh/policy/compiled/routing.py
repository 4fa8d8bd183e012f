"""Route tables: compiled matchers, rules with prebuilt decisions, resolved subsets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from peermesh.policy.model import (
    Destination,
    Fault,
    Headers,
    HTTPMatch,
    HTTPRoute,
    LoadBalancer,
    Pairs,
    Retries,
    Rewrite,
    Route,
    StringMatch,
    TrafficPolicySpec,
)
from peermesh.policy.safe_regex import CompiledRegex, compile_regex


@dataclass(frozen=True)
class Matcher:
    """A compiled StringMatch. ``present``/``absent`` test only whether a value exists."""

    mode: str  # "exact" | "prefix" | "regex" | "present" | "absent"
    value: str = ""
    pattern: CompiledRegex | None = None

    @staticmethod
    def of(match: StringMatch) -> Matcher:
        if match.exact is not None:
            return Matcher("exact", match.exact)
        if match.prefix is not None:
            return Matcher("prefix", match.prefix)
        if match.regex is not None:
            return Matcher("regex", match.regex, compile_regex(match.regex))
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
