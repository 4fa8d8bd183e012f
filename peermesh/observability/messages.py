"""The mesh view's control messages: golden-signal snapshots, tap rows and check facts.

Each reply comes from another agent, so each is decoded field by field with bounds
before the fan-out merges it: a peer that sends the wrong shape is one error row in
the answer, not an exception in the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from peermesh.core.codec import WireMessage, wire
from peermesh.core.wire import Fields, WireError
from peermesh.net.rpc import Empty, RpcMethod

MAX_SNAPSHOT = 4096  # (direction, source, destination) keys one agent reports
MAX_TAP = 200
MAX_ROW_FIELDS = 40
MAX_ROW_TEXT = 8192
MAX_NAME = 253
MAX_BUCKETS = 64


def _histogram(raw: Any, where: str) -> dict[str, int]:
    """Latency buckets: a short map of bucket numbers (as text) to counts."""
    hist = Fields(raw, where)
    if len(hist.raw) > MAX_BUCKETS:
        raise WireError(f"{where}: {len(hist.raw)} buckets, over {MAX_BUCKETS}")
    buckets = {}
    for key in hist.raw:
        if not isinstance(key, str) or not key.lstrip("-").isdigit() or len(key) > 8:
            raise WireError(f"{where}: bucket {key!r} is not a number")
        buckets[key] = hist.integer(key, minimum=0)
    return buckets


class GoldenItem(WireMessage, what="golden item"):
    """Counts over the window for one (direction, source, destination)."""

    direction: str = wire(max_len=16, choices=("inbound", "outbound"))
    source: str = wire(max_len=MAX_NAME)
    destination: str = wire(max_len=MAX_NAME)
    count: int = wire(minimum=0)
    errors: int = wire(minimum=0)
    hist: Mapping[str, int] = wire(absent={}, decode=_histogram)
    window: int = wire(minimum=1, maximum=86_400)
    # 403s and 429s apart from errors: a policy refusal is not a 5xx. An agent of an
    # older version sends neither.
    denied: int = wire(default=0, minimum=0)
    limited: int = wire(default=0, minimum=0)


class GoldenReply(WireMessage, what="stats/golden reply"):
    """``stats/golden``: one agent's mergeable snapshot."""

    node: str = wire(max_len=MAX_NAME)
    service: str = wire(max_len=MAX_NAME)
    snapshot: tuple[GoldenItem, ...] = wire(absent=(), max_len=MAX_SNAPSHOT)


def _at_most_tap(limit: int, where: str) -> int:
    return min(limit, MAX_TAP)


class TapRequest(WireMessage, what="tap/subscribe"):
    """``tap/subscribe``: which recent requests to return (no body: the defaults)."""

    service: str | None = wire(default=None, max_len=MAX_NAME)
    path: str | None = wire(default=None, max_len=MAX_ROW_TEXT)
    limit: int = wire(default=50, minimum=1, check=_at_most_tap)

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return super().from_wire({} if raw is None else raw)


def _flat_row(raw: Any, where: str) -> dict[str, Any]:
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


class TapReply(WireMessage, what="tap/subscribe reply"):
    """Recent requests seen by one agent."""

    node: str = wire(max_len=MAX_NAME)
    requests: tuple[Mapping[str, Any], ...] = wire(absent=(), max_len=MAX_TAP, item=_flat_row)


_DIGEST = 128


class CheckInfo(WireMessage, what="check/info reply"):
    """``check/info``: what ``peermesh check`` compares across agents."""

    node: str = wire(max_len=MAX_NAME)
    service: str = wire(max_len=MAX_NAME)
    time: float
    bundle_sha256: str | None = wire(max_len=_DIGEST)
    member_digest: str | None = wire(max_len=_DIGEST)
    policy_digest: str = wire(max_len=_DIGEST)
    state_vector_digest: str | None = wire(max_len=_DIGEST)
    certificate_not_after: str | None = wire(max_len=64)


GOLDEN = RpcMethod("stats/golden", Empty, GoldenReply)
TAP = RpcMethod("tap/subscribe", TapRequest, TapReply)
CHECK_INFO = RpcMethod("check/info", Empty, CheckInfo)
