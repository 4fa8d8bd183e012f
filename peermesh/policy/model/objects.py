"""The six kinds as objects (kind, name, spec), the union of them, and their store keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeAlias, TypeVar

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


class _Spec(Protocol):
    def to_dict(self) -> JSON: ...


SpecT = TypeVar("SpecT", bound=_Spec)


@dataclass(frozen=True)
class _Object(Generic[SpecT]):
    """What every kind is: a name and a spec of that kind's type, in one document form."""

    kind: ClassVar[str]
    name: str
    spec: SpecT

    @property
    def key(self) -> str:
        """``Kind/name``: the identity under which the store keeps versions of an object."""
        return f"{self.kind}/{self.name}"

    def to_dict(self) -> JSON:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "spec": self.spec.to_dict(),
        }


@dataclass(frozen=True)
class Route(_Object[RouteSpec]):
    """How requests to one service are routed (Istio VirtualService)."""

    kind: ClassVar[str] = ROUTE


@dataclass(frozen=True)
class TrafficPolicy(_Object[TrafficPolicySpec]):
    """What happens to traffic after routing: balancing, limits, subsets (DestinationRule)."""

    kind: ClassVar[str] = TRAFFIC_POLICY


@dataclass(frozen=True)
class AuthorizationPolicy(_Object[AuthorizationPolicySpec]):
    """Who may call a service, and how (Istio AuthorizationPolicy)."""

    kind: ClassVar[str] = AUTHORIZATION_POLICY


@dataclass(frozen=True)
class MeshConfig(_Object[MeshConfigSpec]):
    """Mesh-wide settings: mTLS mode, default inbound policy, certificates, admins."""

    kind: ClassVar[str] = MESH_CONFIG


@dataclass(frozen=True)
class JoinToken(_Object[JoinTokenSpec]):
    """One join token (name = token id), written by ``peermesh token create``.

    Each token is its own object so that tokens created at the same time on different
    agents never conflict (a MeshConfig edit is last-writer-wins as a whole).
    """

    kind: ClassVar[str] = JOIN_TOKEN


@dataclass(frozen=True)
class CommitteeChange(_Object[CommitteeChangeSpec]):
    """The record of one committee change (name ``epoch-N``), written by its coordinator.

    Its author and time are the version's own (the signature), so the spec says only
    what changed; no component reads it to decide anything.
    """

    kind: ClassVar[str] = COMMITTEE_CHANGE


PolicyObject: TypeAlias = (
    Route | TrafficPolicy | AuthorizationPolicy | MeshConfig | JoinToken | CommitteeChange
)


#: Each kind's class, by kind name.
OBJECT_TYPES: dict[str, type[PolicyObject]] = {
    cls.kind: cls
    for cls in (Route, TrafficPolicy, AuthorizationPolicy, MeshConfig, JoinToken, CommitteeChange)
}


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
    "OBJECT_TYPES",
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
