"""Checks across objects (subsets a route names, one TrafficPolicy per host) and whole batches."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from peermesh.policy.errors import PolicyError, PolicyWarning
from peermesh.policy.model import (
    ALL_SERVICES,
    ROUTE,
    AuthorizationPolicy,
    Destination,
    PolicyObject,
    Route,
    TrafficPolicy,
)
from peermesh.policy.validate.objects import check_object


@dataclass(frozen=True)
class SetCheck:
    """Cross-object problems: ``errors`` refuse an edit, ``warnings`` are only reported."""

    errors: tuple[PolicyError, ...]
    warnings: tuple[PolicyWarning, ...]


def hosts_of(obj: PolicyObject) -> frozenset[str]:
    """Every service an object names, so cross-checks can be limited to related objects."""
    if isinstance(obj, Route):
        hosts = {obj.spec.host}
        for rule in obj.spec.http:
            hosts.update(d.destination.host for d in rule.route)
            if rule.mirror is not None:
                hosts.add(rule.mirror.host)
        return frozenset(hosts)
    if isinstance(obj, TrafficPolicy):
        return frozenset({obj.spec.host})
    if isinstance(obj, AuthorizationPolicy):
        return frozenset({obj.spec.service})
    return frozenset()


class _SetChecker:
    def __init__(self, objects: Iterable[PolicyObject], known: Collection[str] | None) -> None:
        self.objects = sorted(objects, key=lambda o: (o.kind, o.name))
        self.known = known
        self.errors: list[PolicyError] = []
        self.warnings: list[PolicyWarning] = []
        self.policies: dict[str, TrafficPolicy] = {}

    def warn(self, obj: PolicyObject, path: str, message: str, code: str) -> None:
        self.warnings.append(PolicyWarning(obj.kind, obj.name, path, message, code))

    def fail(self, obj: PolicyObject, path: str, reason: str, hint: str | None = None) -> None:
        self.errors.append(PolicyError(reason, kind=obj.kind, name=obj.name, path=path, hint=hint))

    def unknown_service(self, obj: PolicyObject, path: str, host: str) -> None:
        if self.known is not None and host != ALL_SERVICES and host not in self.known:
            self.warn(obj, path, f"no agent fronts service '{host}'", "unknown-service")

    def run(self) -> SetCheck:
        seen: set[str] = set()
        routes_by_host: dict[str, list[str]] = {}
        for obj in self.objects:
            if obj.key in seen:
                self.fail(obj, "name", "is given more than once in the same input")
            seen.add(obj.key)
            if isinstance(obj, TrafficPolicy):
                first = self.policies.setdefault(obj.spec.host, obj)
                if first.name != obj.name:
                    self.fail(
                        obj,
                        "spec.host",
                        f"host '{obj.spec.host}' already has TrafficPolicy '{first.name}'",
                        f"edit TrafficPolicy/{first.name}; a host has one traffic policy",
                    )
            elif isinstance(obj, Route):
                routes_by_host.setdefault(obj.spec.host, []).append(obj.name)
        for obj in self.objects:
            if isinstance(obj, Route):
                self.route(obj)
            elif isinstance(obj, TrafficPolicy):
                self.unknown_service(obj, "spec.host", obj.spec.host)
            elif isinstance(obj, AuthorizationPolicy):
                self.unknown_service(obj, "spec.service", obj.spec.service)
        for host, names in routes_by_host.items():
            for name in names[1:]:
                self.warnings.append(
                    PolicyWarning(
                        ROUTE,
                        name,
                        "spec.host",
                        f"host '{host}' is also routed by Route '{names[0]}'; "
                        "their rules are evaluated in name order",
                        "shared-host",
                    )
                )
        return SetCheck(errors=tuple(self.errors), warnings=tuple(self.warnings))

    def route(self, obj: Route) -> None:
        self.unknown_service(obj, "spec.host", obj.spec.host)
        catch_all: int | None = None
        for i, rule in enumerate(obj.spec.http):
            rule_path = f"spec.http[{i}]"
            if catch_all is not None:
                self.warn(
                    obj,
                    rule_path,
                    f"is never reached: rule {catch_all} matches every request",
                    "unreachable-rule",
                )
            elif not rule.match:
                catch_all = i
            targets = [
                (f"{rule_path}.route[{j}].destination", d.destination)
                for j, d in enumerate(rule.route)
            ]
            if rule.mirror is not None:
                targets.append((f"{rule_path}.mirror", rule.mirror))
            for path, dest in targets:
                self.unknown_service(obj, f"{path}.host", dest.host)
                if dest.subset is not None:
                    self.subset(obj, f"{path}.subset", dest)

    def subset(self, obj: Route, path: str, dest: Destination) -> None:
        policy = self.policies.get(dest.host)
        if policy is None:
            self.fail(
                obj,
                path,
                f"subset '{dest.subset}' is unknown: no TrafficPolicy defines subsets for "
                f"host '{dest.host}'",
                f"apply a TrafficPolicy for '{dest.host}' defining it in the same change",
            )
        elif dest.subset is not None and policy.spec.subset(dest.subset) is None:
            defined = ", ".join(s.name for s in policy.spec.subsets) or "none"
            self.fail(
                obj,
                path,
                f"subset '{dest.subset}' is not defined for host '{dest.host}' "
                f"(TrafficPolicy '{policy.name}' defines: {defined})",
            )


def check_set(
    objects: Iterable[PolicyObject], known_services: Collection[str] | None = None
) -> SetCheck:
    """Check references between objects: subsets must exist, one TrafficPolicy per host.

    ``known_services`` (for example from membership) turns references to services nobody
    fronts into warnings; pass None to skip that check.
    """
    return _SetChecker(objects, known_services).run()


@dataclass(frozen=True)
class ValidationReport:
    objects: tuple[PolicyObject, ...]
    warnings: tuple[PolicyWarning, ...]


def validate_documents(
    documents: Iterable[object], *, known_services: Collection[str] | None = None
) -> ValidationReport:
    """Validate a batch (e.g. one ``policy apply -f DIR``) as a whole, all or nothing.

    Raises :class:`PolicyError` carrying every problem of every document.
    """
    objects: list[PolicyObject] = []
    errors: list[PolicyError] = []
    for doc in documents:
        obj, problems = check_object(doc)
        errors.extend(problems)
        if obj is not None:
            objects.append(obj)
    if errors:
        raise PolicyError.collect(errors)
    cross = check_set(objects, known_services)
    if cross.errors:
        raise PolicyError.collect(cross.errors)
    return ValidationReport(objects=tuple(objects), warnings=cross.warnings)
