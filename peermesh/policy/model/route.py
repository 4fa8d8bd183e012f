"""``Route`` (Istio VirtualService): how requests to one service are matched and sent."""

from __future__ import annotations

from dataclasses import dataclass

from peermesh.policy.model.common import JSON, Pairs, _drop_empty, format_duration


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
                "uri": self.uri,
                "method": self.method,
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
                "request": self.request,
                "response": self.response,
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
                "delay": self.delay,
                "abort": self.abort,
            }
        )


@dataclass(frozen=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None

    def to_dict(self) -> JSON:
        return _drop_empty({"uri": self.uri, "authority": self.authority})


#: The fields an ``http`` rule of a Route document may carry (HTTPRoute's, as spelled there).
HTTP_ROUTE_FIELDS: tuple[str, ...] = (
    "name",
    "match",
    "route",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercentage",
    "headers",
    "rewrite",
)


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
                "retries": self.retries,
                "fault": self.fault,
                "mirror": self.mirror,
                "mirrorPercentage": (
                    {"value": self.mirror_percentage}
                    if self.mirror_percentage is not None
                    else None
                ),
                "headers": self.headers,
                "rewrite": self.rewrite,
            }
        )


@dataclass(frozen=True)
class RouteSpec:
    host: str
    http: tuple[HTTPRoute, ...]

    def to_dict(self) -> JSON:
        return {"host": self.host, "http": [r.to_dict() for r in self.http]}


__all__ = [
    "HTTP_ROUTE_FIELDS",
    "RETRY_ON_CONDITIONS",
    "Destination",
    "Fault",
    "FaultAbort",
    "FaultDelay",
    "HTTPMatch",
    "HTTPRoute",
    "HeaderOperations",
    "Headers",
    "Retries",
    "Rewrite",
    "RouteDestination",
    "RouteSpec",
    "StringMatch",
]
