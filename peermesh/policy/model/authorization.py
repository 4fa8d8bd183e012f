"""``AuthorizationPolicy``: who may call a service, and how (Istio semantics)."""

from __future__ import annotations

from dataclasses import dataclass

from peermesh.policy.model.common import JSON, _drop_empty

ACTION_ALLOW = "ALLOW"
ACTION_DENY = "DENY"
ACTION_AUDIT = "AUDIT"
AUTHZ_ACTIONS: tuple[str, ...] = (ACTION_ALLOW, ACTION_DENY, ACTION_AUDIT)
#: ``service: "*"`` makes an AuthorizationPolicy apply to every service in the mesh.
ALL_SERVICES = "*"


@dataclass(frozen=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()

    def to_dict(self) -> JSON:
        return {
            "source": _drop_empty(
                {"principals": list(self.principals), "notPrincipals": list(self.not_principals)}
            )
        }


@dataclass(frozen=True)
class Operation:
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()

    def to_dict(self) -> JSON:
        return {
            "operation": _drop_empty(
                {
                    "methods": list(self.methods),
                    "notMethods": list(self.not_methods),
                    "paths": list(self.paths),
                    "notPaths": list(self.not_paths),
                    "ports": list(self.ports),
                    "notPorts": list(self.not_ports),
                }
            )
        }


@dataclass(frozen=True)
class Condition:
    """``key`` is ``request.headers[<name>]``; ``header`` holds the lowercased name."""

    key: str
    header: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {"key": self.key, "values": list(self.values), "notValues": list(self.not_values)}
        )


@dataclass(frozen=True)
class AuthzRule:
    """``from``, ``to`` and ``when`` are ANDed; entries inside each list are ORed."""

    from_: tuple[Source, ...] = ()
    to: tuple[Operation, ...] = ()
    when: tuple[Condition, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "from": [s.to_dict() for s in self.from_],
                "to": [o.to_dict() for o in self.to],
                "when": [c.to_dict() for c in self.when],
            }
        )


@dataclass(frozen=True)
class AuthorizationPolicySpec:
    service: str
    action: str = ACTION_ALLOW
    rules: tuple[AuthzRule, ...] = ()

    def to_dict(self) -> JSON:
        # ``rules`` is kept even when empty: an ALLOW policy without rules denies everything,
        # which is different from a policy that omits the key by accident.
        return {
            "service": self.service,
            "action": self.action,
            "rules": [r.to_dict() for r in self.rules],
        }


__all__ = [
    "ACTION_ALLOW",
    "ACTION_AUDIT",
    "ACTION_DENY",
    "ALL_SERVICES",
    "AUTHZ_ACTIONS",
    "AuthorizationPolicySpec",
    "AuthzRule",
    "Condition",
    "Operation",
    "Source",
]
