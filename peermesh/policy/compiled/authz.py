"""Authorization tables: Istio wildcards, compiled rules and policies, the verdict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from peermesh.policy.model import AuthorizationPolicy, AuthzRule


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


class AuthzRequest(NamedTuple):
    """What a rule looks at in one inbound request (``path`` without its query)."""

    principal: str | None
    method: str
    path: str
    port: int | None
    headers: Mapping[str, str]


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

    def __call__(self, request: AuthzRequest) -> bool:
        principal, method, path, port, headers = request
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

    def matches(self, request: AuthzRequest) -> bool:
        # No rules: an ALLOW policy then allows nothing, a DENY policy denies nothing.
        return any(rule(request) for rule in self.rules)


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


def _authz_policy(policy: AuthorizationPolicy) -> CompiledAuthzPolicy:
    return CompiledAuthzPolicy(
        name=policy.name,
        action=policy.spec.action,
        rules=tuple(CompiledAuthzRule.of(r) for r in policy.spec.rules),
    )
