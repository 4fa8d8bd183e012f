"""The policy model: five kinds of objects as frozen dataclasses.

Field names follow Istio's VirtualService / DestinationRule / AuthorizationPolicy (and
Linkerd's retry budget) so a mesh user recognises them. Objects are built by
:mod:`peermesh.policy.validate`, never by hand from user input, so every instance here
has already passed validation. ``to_dict()`` gives the canonical document form (camelCase
keys, durations as strings, empty fields omitted); parsing that form again yields an equal
object, which is what makes content hashes and round trips stable.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

API_VERSION = "peermesh.io/v1"
ROUTE = "Route"
TRAFFIC_POLICY = "TrafficPolicy"
AUTHORIZATION_POLICY = "AuthorizationPolicy"
MESH_CONFIG = "MeshConfig"
JOIN_TOKEN = "JoinToken"
KINDS: tuple[str, ...] = (ROUTE, TRAFFIC_POLICY, AUTHORIZATION_POLICY, MESH_CONFIG, JOIN_TOKEN)
#: MeshConfig is a singleton: exactly one name is accepted, so replicas cannot disagree
#: about which of several mesh configurations applies.
MESH_CONFIG_NAME = "default"

Pairs: TypeAlias = tuple[tuple[str, str], ...]
JSON: TypeAlias = dict[str, Any]

# ---------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go/Istio style duration (``"250ms"``, ``"2s"``, ``"1m30s"``) into seconds.

    Raises ``ValueError`` with a message that says what a valid duration looks like,
    because a bare number is the most common mistake and its unit would be a guess.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '250ms' or '2s', got {text!r}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty duration; write e.g. '250ms', '2s' or '1m30s'")
    if stripped.startswith("-"):
        raise ValueError(f"negative duration {text!r} is not allowed")
    pos = 0
    parts: list[tuple[str, str]] = []
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None:
            if re.fullmatch(r"\d+(\.\d*)?", stripped[pos:]):
                raise ValueError(f"duration {text!r} has no unit; write e.g. '{stripped}s'")
            raise ValueError(
                f"invalid duration {text!r}; use numbers with units ns, us, ms, s, m, h "
                "such as '250ms', '2s' or '1m30s'"
            )
        parts.append((match.group(1), match.group(2)))
        pos = match.end()
    if len(parts) == 1:
        number, unit = parts[0]
        # Integer milliseconds are divided, not multiplied, so "100ms" is exactly 0.1.
        if unit == "ms" and number.isdigit():
            return int(number) / 1000
        return float(number) * _UNIT_SECONDS[unit]
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest duration string that parses back to the same float."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds.is_integer():
        whole = int(seconds)
        if whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    millis = round(seconds * 1000)
    if millis > 0 and millis / 1000 == seconds:
        return f"{millis}ms"
    # Shortest repr, written without an exponent ("1e-06" is not a duration).
    return f"{format(decimal.Decimal(repr(seconds)), 'f')}s"


def _drop_empty(data: JSON) -> JSON:
    """Omit unset fields so the canonical form (and thus the content hash) has one spelling."""
    return {k: v for k, v in data.items() if v is not None and v != [] and v != {}}


# ---------------------------------------------------------------------------- Route


@dataclass(frozen=True)
class StringMatch:
    """One of exact / prefix / regex (or, for headers, presence): Istio's StringMatch."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "exact": self.exact,
                "prefix": self.prefix,
                "regex": self.regex,
                "present": self.present,
            }
        )


@dataclass(frozen=True)
class HTTPMatch:
    """Conditions ANDed together; a rule's list of matches is ORed."""

    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "name": self.name,
                "uri": self.uri.to_dict() if self.uri else None,
                "method": self.method.to_dict() if self.method else None,
                "headers": {k: m.to_dict() for k, m in self.headers},
                "queryParams": {k: m.to_dict() for k, m in self.query_params},
            }
        )


@dataclass(frozen=True)
class Destination:
    """A service, optionally narrowed to a subset (labels defined by its TrafficPolicy)."""

    host: str
    subset: str | None = None
    port: int | None = None

    def to_dict(self) -> JSON:
        return _drop_empty({"host": self.host, "subset": self.subset, "port": self.port})


@dataclass(frozen=True)
class RouteDestination:
    destination: Destination
    weight: int = 100

    def to_dict(self) -> JSON:
        return {"destination": self.destination.to_dict(), "weight": self.weight}


@dataclass(frozen=True)
class HeaderOperations:
    set: Pairs = ()
    add: Pairs = ()
    remove: tuple[str, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {"set": dict(self.set), "add": dict(self.add), "remove": list(self.remove)}
        )


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "request": self.request.to_dict() if self.request else None,
                "response": self.response.to_dict() if self.response else None,
            }
        )


#: retryOn conditions understood by the proxy (Envoy/Istio names plus gRPC status names).
RETRY_ON_CONDITIONS: frozenset[str] = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


@dataclass(frozen=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "attempts": self.attempts,
                "perTryTimeout": (
                    format_duration(self.per_try_timeout) if self.per_try_timeout else None
                ),
                "retryOn": ",".join(self.retry_on) if self.retry_on else None,
            }
        )


@dataclass(frozen=True)
class FaultDelay:
    fixed_delay: float
    percentage: float = 100.0

    def to_dict(self) -> JSON:
        return {
            "fixedDelay": format_duration(self.fixed_delay),
            "percentage": {"value": self.percentage},
        }


@dataclass(frozen=True)
class FaultAbort:
    http_status: int
    percentage: float = 100.0

    def to_dict(self) -> JSON:
        return {"httpStatus": self.http_status, "percentage": {"value": self.percentage}}


@dataclass(frozen=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "delay": self.delay.to_dict() if self.delay else None,
                "abort": self.abort.to_dict() if self.abort else None,
            }
        )


@dataclass(frozen=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None

    def to_dict(self) -> JSON:
        return _drop_empty({"uri": self.uri, "authority": self.authority})


@dataclass(frozen=True)
class HTTPRoute:
    """One ordered rule of a Route: the first rule whose ``match`` fits wins."""

    route: tuple[RouteDestination, ...]
    name: str | None = None
    match: tuple[HTTPMatch, ...] = ()
    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: Destination | None = None
    mirror_percentage: float | None = None
    headers: Headers | None = None
    rewrite: Rewrite | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "name": self.name,
                "match": [m.to_dict() for m in self.match],
                "route": [r.to_dict() for r in self.route],
                "timeout": format_duration(self.timeout) if self.timeout is not None else None,
                "retries": self.retries.to_dict() if self.retries else None,
                "fault": self.fault.to_dict() if self.fault else None,
                "mirror": self.mirror.to_dict() if self.mirror else None,
                "mirrorPercentage": (
                    {"value": self.mirror_percentage}
                    if self.mirror_percentage is not None
                    else None
                ),
                "headers": self.headers.to_dict() if self.headers else None,
                "rewrite": self.rewrite.to_dict() if self.rewrite else None,
            }
        )


@dataclass(frozen=True)
class RouteSpec:
    host: str
    http: tuple[HTTPRoute, ...]

    def to_dict(self) -> JSON:
        return {"host": self.host, "http": [r.to_dict() for r in self.http]}


# ---------------------------------------------------------------------------- TrafficPolicy

LB_ROUND_ROBIN = "ROUND_ROBIN"
LB_LEAST_REQUEST = "LEAST_REQUEST"
LB_P2C_EWMA = "P2C_EWMA"
LB_SIMPLE: tuple[str, ...] = (LB_ROUND_ROBIN, LB_LEAST_REQUEST, LB_P2C_EWMA)


@dataclass(frozen=True)
class LoadBalancer:
    """Either a ``simple`` algorithm or consistent hashing on a request header."""

    simple: str | None = LB_P2C_EWMA
    consistent_hash_header: str | None = None

    def to_dict(self) -> JSON:
        if self.consistent_hash_header is not None:
            return {"consistentHash": {"httpHeaderName": self.consistent_hash_header}}
        return {"simple": self.simple}


@dataclass(frozen=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    idle_timeout: float | None = None

    def to_dict(self) -> JSON:
        tcp = _drop_empty(
            {
                "maxConnections": self.max_connections,
                "connectTimeout": (
                    format_duration(self.connect_timeout) if self.connect_timeout else None
                ),
            }
        )
        http = _drop_empty(
            {
                "http1MaxPendingRequests": self.http1_max_pending_requests,
                "http2MaxRequests": self.http2_max_requests,
                "maxRequestsPerConnection": self.max_requests_per_connection,
                "idleTimeout": format_duration(self.idle_timeout) if self.idle_timeout else None,
            }
        )
        return _drop_empty({"tcp": tcp, "http": http})


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "consecutive5xxErrors": self.consecutive_5xx_errors,
                "consecutiveGatewayErrors": self.consecutive_gateway_errors,
                "interval": format_duration(self.interval),
                "baseEjectionTime": format_duration(self.base_ejection_time),
                "maxEjectionPercent": self.max_ejection_percent,
            }
        )


@dataclass(frozen=True)
class RateLimit:
    """Local token bucket (Envoy local_ratelimit shape); per source identity if asked."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    per_source: bool = False

    def to_dict(self) -> JSON:
        return {
            "maxTokens": self.max_tokens,
            "tokensPerFill": self.tokens_per_fill,
            "fillInterval": format_duration(self.fill_interval),
            "perSource": self.per_source,
        }


@dataclass(frozen=True)
class RetryBudget:
    """Linkerd-style cap on retries: a ratio of live requests plus a per-second floor."""

    retry_ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0

    def to_dict(self) -> JSON:
        return {
            "retryRatio": self.retry_ratio,
            "minRetriesPerSecond": self.min_retries_per_second,
            "ttl": format_duration(self.ttl),
        }


@dataclass(frozen=True)
class Subset:
    name: str
    labels: Pairs

    def to_dict(self) -> JSON:
        return {"name": self.name, "labels": dict(self.labels)}


@dataclass(frozen=True)
class TrafficPolicySpec:
    host: str
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    rate_limit: RateLimit | None = None
    retry_budget: RetryBudget | None = None
    subsets: tuple[Subset, ...] = ()

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "host": self.host,
                "loadBalancer": self.load_balancer.to_dict() if self.load_balancer else None,
                "connectionPool": self.connection_pool.to_dict() if self.connection_pool else None,
                "outlierDetection": (
                    self.outlier_detection.to_dict() if self.outlier_detection else None
                ),
                "rateLimit": self.rate_limit.to_dict() if self.rate_limit else None,
                "retryBudget": self.retry_budget.to_dict() if self.retry_budget else None,
                "subsets": [s.to_dict() for s in self.subsets],
            }
        )

    def subset(self, name: str) -> Subset | None:
        for subset in self.subsets:
            if subset.name == name:
                return subset
        return None


# ---------------------------------------------------------------------------- AuthorizationPolicy

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


# ---------------------------------------------------------------------------- MeshConfig

MTLS_STRICT = "STRICT"
MTLS_PERMISSIVE = "PERMISSIVE"
MTLS_MODES: tuple[str, ...] = (MTLS_STRICT, MTLS_PERMISSIVE)
INBOUND_ALLOW_AUTHENTICATED = "ALLOW_AUTHENTICATED"
INBOUND_DENY = "DENY"
INBOUND_POLICIES: tuple[str, ...] = (INBOUND_ALLOW_AUTHENTICATED, INBOUND_DENY)


@dataclass(frozen=True)
class MTLSSettings:
    mode: str = MTLS_STRICT
    #: Per-service overrides (service -> mode), e.g. PERMISSIVE while migrating one service.
    services: Pairs = ()

    def to_dict(self) -> JSON:
        return _drop_empty({"mode": self.mode, "services": dict(self.services)})

    def mode_for(self, service: str) -> str:
        return dict(self.services).get(service, self.mode)


@dataclass(frozen=True)
class JoinTokenSpec:
    """What a join token admits; the token is stored only as its SHA-256.

    ``token_sha256`` is the hex SHA-256 of the whole token string as printed by
    ``peermesh token create`` (``printf %s "$TOKEN" | sha256sum``), so replicating policy
    never leaks a token.
    """

    token_sha256: str
    #: The only service the token may enrol (its SPIFFE ID); None: any service.
    service: str | None = None
    #: RFC 3339; None: never expires (delete the object to revoke it).
    expires_at: str | None = None
    #: How many distinct agents (keys) it admits; None: unlimited until it expires.
    max_uses: int | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "tokenSha256": self.token_sha256,
                "service": self.service,
                "expiresAt": self.expires_at,
                "maxUses": self.max_uses,
            }
        )


@dataclass(frozen=True)
class JoinTokenEntry:
    """A join token declared inside the MeshConfig (``spec.joinTokens[]``), e.g. by GitOps."""

    id: str
    token_sha256: str
    expires_at: str | None = None
    max_uses: int | None = None
    service: str | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "id": self.id,
                "tokenSha256": self.token_sha256,
                "service": self.service,
                "expiresAt": self.expires_at,
                "maxUses": self.max_uses,
            }
        )

    @property
    def spec(self) -> JoinTokenSpec:
        return JoinTokenSpec(self.token_sha256, self.service, self.expires_at, self.max_uses)


@dataclass(frozen=True)
class RevokedIdentity:
    identity: str
    reason: str | None = None

    def to_dict(self) -> JSON:
        return _drop_empty({"identity": self.identity, "reason": self.reason})


DEFAULT_CERTIFICATE_LIFETIME = 24 * 3600.0


@dataclass(frozen=True)
class TelemetrySettings:
    """Mesh-wide telemetry (Istio's Telemetry API); None: each agent's own flag decides."""

    #: Access logs on every agent (True), off everywhere (False).
    access_log: bool | None = None
    #: Percentage (0 to 100) of new traces sampled; a caller's decision is still honoured.
    random_sampling_percentage: float | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "accessLog": _drop_empty({"enabled": self.access_log}),
                "tracing": _drop_empty(
                    {"randomSamplingPercentage": self.random_sampling_percentage}
                ),
            }
        )


@dataclass(frozen=True)
class MeshConfigSpec:
    mtls: MTLSSettings = field(default_factory=MTLSSettings)
    default_inbound_policy: str = INBOUND_ALLOW_AUTHENTICATED
    certificate_lifetime: float = DEFAULT_CERTIFICATE_LIFETIME
    join_tokens: tuple[JoinTokenEntry, ...] = ()
    revoked_identities: tuple[RevokedIdentity, ...] = ()
    #: SPIFFE IDs of peers allowed to edit policy through the control API.
    admins: tuple[str, ...] = ()
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "mtls": self.mtls.to_dict(),
                "defaultInboundPolicy": self.default_inbound_policy,
                "certificateLifetime": format_duration(self.certificate_lifetime),
                "joinTokens": [t.to_dict() for t in self.join_tokens],
                "revokedIdentities": [r.to_dict() for r in self.revoked_identities],
                "admins": list(self.admins),
                "telemetry": self.telemetry.to_dict(),
            }
        )


# ---------------------------------------------------------------------------- the kinds


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


PolicyObject: TypeAlias = Route | TrafficPolicy | AuthorizationPolicy | MeshConfig | JoinToken


def object_key(kind: str, name: str) -> str:
    """The store key for ``kind``/``name``."""
    return f"{kind}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`object_key`; raises ``ValueError`` for keys without a kind."""
    kind, sep, name = key.partition("/")
    if not sep or kind not in KINDS or not name:
        raise ValueError(f"{key!r} is not KIND/NAME with KIND one of {', '.join(KINDS)}")
    return kind, name
