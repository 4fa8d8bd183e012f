"""The six kinds as objects (kind, name, spec), the union of them, and their store keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from peermesh.policy.model.authorization import AuthorizationPolicySpec
from peermesh.policy.model.committee_change import CommitteeChangeSpec
from peermesh.policy.model.common import (
    API_VERSION,
    AUTHORIZATION_POLICY,
    COMMITTEE_CHANGE,
    JOIN_TOKEN,
    JSON,
    KINDS,
    MESH_CONFIG,
    ROUTE,
    TRAFFIC_POLICY,
)
from peermesh.policy.model.join_token import JoinTokenSpec
from peermesh.policy.model.mesh_config import MeshConfigSpec
from peermesh.policy.model.route import RouteSpec
from peermesh.policy.model.traffic_policy import TrafficPolicySpec


@dataclass(frozen=True)
class _Object:
    kind: ClassVar[str]
    name: str

    @property
    def key(self) -> str:
        """``Kind/name``: the identity under which the store keeps versions of an object."""
        return f"{self.kind}/{self.name}"

    def _spec_dict(self) -> JSON:
        raise NotImplementedError

    def to_dict(self) -> JSON:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "spec": self._spec_dict(),
        }


@dataclass(frozen=True)
class Route(_Object):
    """How requests to one service are routed (Istio VirtualService)."""

    kind: ClassVar[str] = ROUTE
    spec: RouteSpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


@dataclass(frozen=True)
class TrafficPolicy(_Object):
    """What happens to traffic after routing: balancing, limits, subsets (DestinationRule)."""

    kind: ClassVar[str] = TRAFFIC_POLICY
    spec: TrafficPolicySpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


@dataclass(frozen=True)
class AuthorizationPolicy(_Object):
    """Who may call a service, and how (Istio AuthorizationPolicy)."""

    kind: ClassVar[str] = AUTHORIZATION_POLICY
    spec: AuthorizationPolicySpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


@dataclass(frozen=True)
class MeshConfig(_Object):
    """Mesh-wide settings: mTLS mode, default inbound policy, certificates, admins."""

    kind: ClassVar[str] = MESH_CONFIG
    spec: MeshConfigSpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


@dataclass(frozen=True)
class JoinToken(_Object):
    """One join token (name = token id), written by ``peermesh token create``.

    Each token is its own object so that tokens created at the same time on different
    agents never conflict (a MeshConfig edit is last-writer-wins as a whole).
    """

    kind: ClassVar[str] = JOIN_TOKEN
    spec: JoinTokenSpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


@dataclass(frozen=True)
class CommitteeChange(_Object):
    """The record of one committee change (name ``epoch-N``), written by its coordinator.

    Its author and time are the version's own (the signature), so the spec says only
    what changed; no component reads it to decide anything.
    """

    kind: ClassVar[str] = COMMITTEE_CHANGE
    spec: CommitteeChangeSpec

    def _spec_dict(self) -> JSON:
        return self.spec.to_dict()


PolicyObject: TypeAlias = (
    Route | TrafficPolicy | AuthorizationPolicy | MeshConfig | JoinToken | CommitteeChange
)


def object_key(kind: str, name: str) -> str:
    """The store key for ``kind``/``name``."""
    return f"{kind}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`object_key`; raises ``ValueError`` for keys without a kind."""
    kind, sep, name = key.partition("/")
    if not sep or kind not in KINDS or not name:
        raise ValueError(f"{key!r} is not KIND/NAME with KIND one of {', '.join(KINDS)}")
    return kind, name


__all__ = [
    "AuthorizationPolicy",
    "CommitteeChange",
    "JoinToken",
    "MeshConfig",
    "PolicyObject",
    "Route",
    "TrafficPolicy",
    "object_key",
    "split_key",
]
