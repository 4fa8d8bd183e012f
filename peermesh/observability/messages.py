"""The mesh view's control messages: golden-signal snapshots, tap rows and check facts.

Each reply comes from another agent, so each is decoded field by field with bounds
before the fan-out merges it: a peer that sends the wrong shape is one error row in
the answer, not an exception in the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from peermesh.core.wire import Fields, WireError
from peermesh.net.rpc import Empty, RpcMethod

MAX_SNAPSHOT = 4096  # (direction, source, destination) keys one agent reports
MAX_TAP = 200
MAX_ROW_FIELDS = 40
MAX_ROW_TEXT = 8192
MAX_NAME = 253
MAX_BUCKETS = 64


@dataclass(frozen=True)
class GoldenItem:
    """Counts over the window for one (direction, source, destination)."""

    direction: str
    source: str
    destination: str
    count: int
    errors: int
    hist: Mapping[str, int]
    window: int
    denied: int = 0  # 403s, apart from errors: a policy refusal is not a 5xx
    limited: int = 0  # 429s

    def to_wire(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "source": self.source,
            "destination": self.destination,
            "count": self.count,
            "errors": self.errors,
            "hist": dict(self.hist),
            "window": self.window,
            "denied": self.denied,
            "limited": self.limited,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "golden item")
        direction = f.text("direction", max_len=16)
        if direction not in ("inbound", "outbound"):
            raise WireError(f"golden item.direction: {direction!r} is not inbound or outbound")
        hist = f.fields("hist", default={})
        if len(hist.raw) > MAX_BUCKETS:
            raise WireError(f"golden item.hist: {len(hist.raw)} buckets, over {MAX_BUCKETS}")
        buckets = {}
        for key in hist.raw:
            if not isinstance(key, str) or not key.lstrip("-").isdigit() or len(key) > 8:
                raise WireError(f"golden item.hist: bucket {key!r} is not a number")
            buckets[key] = hist.integer(key, minimum=0)
        return cls(
            direction=direction,
            source=f.text("source", max_len=MAX_NAME),
            destination=f.text("destination", max_len=MAX_NAME),
            count=f.integer("count", minimum=0),
            errors=f.integer("errors", minimum=0),
            hist=buckets,
            window=f.integer("window", minimum=1, maximum=86_400),
            # An agent of an older version sends neither.
            denied=f.integer("denied", minimum=0, default=0),
            limited=f.integer("limited", minimum=0, default=0),
        )


@dataclass(frozen=True)
class GoldenReply:
    """``stats/golden``: one agent's mergeable snapshot."""

    node: str
    service: str
    snapshot: tuple[GoldenItem, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "service": self.service,
            "snapshot": [item.to_wire() for item in self.snapshot],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "stats/golden reply")
        return cls(
            node=f.text("node", max_len=MAX_NAME),
            service=f.text("service", max_len=MAX_NAME),
            snapshot=tuple(
                GoldenItem.from_wire(item)
                for item in f.items("snapshot", max_items=MAX_SNAPSHOT, default=[])
            ),
        )


@dataclass(frozen=True)
class TapRequest:
    """``tap/subscribe``: which recent requests to return."""

    service: str | None = None
    path: str | None = None
    limit: int = 50

    def to_wire(self) -> dict[str, Any]:
        return {"service": self.service, "path": self.path, "limit": self.limit}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields({} if raw is None else raw, "tap/subscribe")
        return cls(
            service=f.opt_text("service", max_len=MAX_NAME),
            path=f.opt_text("path", max_len=MAX_ROW_TEXT),
            limit=min(f.integer("limit", minimum=1, default=50), MAX_TAP),
        )


def _flat_row(raw: Any) -> dict[str, Any]:
    """A tap row: a map of short scalars (the access-log view of one request)."""
    f = Fields(raw, "tap row")
    if len(f.raw) > MAX_ROW_FIELDS:
        raise WireError(f"tap row: {len(f.raw)} fields, over {MAX_ROW_FIELDS}")
    row: dict[str, Any] = {}
    for key, value in f.raw.items():
        if not isinstance(key, str) or len(key) > 64:
            raise WireError(f"tap row: field name {key!r} is not a short text")
        if isinstance(value, str) and len(value) > MAX_ROW_TEXT:
            raise WireError(f"tap row.{key}: {len(value)} characters, over {MAX_ROW_TEXT}")
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise WireError(f"tap row.{key}: expected a scalar, got {type(value).__name__}")
        row[key] = value
    return row


@dataclass(frozen=True)
class TapReply:
    """Recent requests seen by one agent."""

    node: str
    requests: tuple[Mapping[str, Any], ...]

    def to_wire(self) -> dict[str, Any]:
        return {"node": self.node, "requests": [dict(r) for r in self.requests]}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "tap/subscribe reply")
        return cls(
            node=f.text("node", max_len=MAX_NAME),
            requests=tuple(
                _flat_row(r) for r in f.items("requests", max_items=MAX_TAP, default=[])
            ),
        )


@dataclass(frozen=True)
class CheckInfo:
    """``check/info``: what ``peermesh check`` compares across agents."""

    node: str
    service: str
    time: float
    bundle_sha256: str | None
    member_digest: str | None
    policy_digest: str
    state_vector_digest: str | None
    certificate_not_after: str | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "service": self.service,
            "time": self.time,
            "bundle_sha256": self.bundle_sha256,
            "member_digest": self.member_digest,
            "policy_digest": self.policy_digest,
            "state_vector_digest": self.state_vector_digest,
            "certificate_not_after": self.certificate_not_after,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "check/info reply")
        return cls(
            node=f.text("node", max_len=MAX_NAME),
            service=f.text("service", max_len=MAX_NAME),
            time=f.number("time"),
            bundle_sha256=f.opt_text("bundle_sha256", max_len=128),
            member_digest=f.opt_text("member_digest", max_len=128),
            policy_digest=f.text("policy_digest", max_len=128),
            state_vector_digest=f.opt_text("state_vector_digest", max_len=128),
            certificate_not_after=f.opt_text("certificate_not_after", max_len=64),
        )


GOLDEN = RpcMethod("stats/golden", Empty, GoldenReply)
TAP = RpcMethod("tap/subscribe", TapRequest, TapReply)
CHECK_INFO = RpcMethod("check/info", Empty, CheckInfo)
