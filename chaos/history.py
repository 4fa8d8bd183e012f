"""What a chaos run records: requests, edits, CA attempts, fault windows, samples, kills."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    t: float  # start, wall clock
    lat: float  # seconds
    status: int  # 0 = no reply
    src: str  # source host
    svc: str  # destination service
    error: str = ""


@dataclass(frozen=True)
class Edit:
    t: float
    host: str
    name: str
    acked: bool
    detail: str = ""


@dataclass(frozen=True)
class CaAttempt:
    t: float
    host: str
    ok: bool
    message: str
    reachable_min: int  # signers reachable from host (alive, same side) during the attempt
    reachable_max: int
    threshold: int


@dataclass(frozen=True)
class Window:
    """A fault in force from ``start`` to ``end`` (None: until the end of the run)."""

    kind: str  # partition | loss | flaky | delay | kill | stop | clock-skew | restart
    start: float
    end: float | None
    hosts: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()  # partition groups (cut links)
    label: str = ""
    offset: float = 0.0  # clock-skew: seconds the host's wall clock is ahead (< 0: behind)


@dataclass(frozen=True)
class Sample:
    t: float
    host: str
    members_digest: str | None
    policy_digest: str | None
    alive: tuple[str, ...]  # node names this host sees alive
    suspect: tuple[str, ...] = ()  # ... and suspect (still used when no alive one is left)


@dataclass(frozen=True)
class ClockCheck:
    """One agent's ``/v1/mesh/check`` answer: whom its "clock skew" check named."""

    t: float  # request sent (wall clock of the lab, never skewed)
    t_end: float  # reply received
    host: str  # the viewer
    answered: bool
    skewed: tuple[tuple[str, float], ...] = ()  # (node, seconds it is ahead of the viewer)
    unreachable: tuple[str, ...] = ()  # peer nodes that did not answer the viewer's fan-out
    detail: str = ""


@dataclass(frozen=True)
class Kill:
    host: str
    node: str
    t: float
    removed_at: float | None  # when no survivor listed the node alive any more
    restarted_at: float | None


@dataclass
class Limits:
    convergence_s: float = 60.0  # bound on digest agreement after the final heal
    detect_s: float = 12.0  # failure-detection grace after a fault starts
    availability_min: float = 0.95  # same-side success rate per phase
    fail_fast_s: float = 1.0  # a cross-partition failure must answer within this
    fail_fast_min: float = 0.99  # share of cross-partition requests that fail fast
    retry_min: float = 0.99  # success of idempotent requests after a kill
    # Policy digests are "DIGEST/STATE_VECTOR_DIGEST" after the final heal. The content
    # digest must always agree; the state-vector digest too unless this is False (then
    # a disagreement is reported, not failed: see docs/chaos.md, known findings).
    state_vector_must_agree: bool = True
    # After a clock is skewed or restored (the agent restarts), `peermesh check` on
    # every agent must name exactly the skewed peers within this many seconds.
    skew_detect_s: float = 15.0


@dataclass
class History:
    start: float
    end: float
    final_heal: float
    hosts: dict[str, str]  # host -> node
    services: dict[str, str]  # host -> service
    requests: list[Request] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    ca: list[CaAttempt] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    final_policy: dict[str, list[str] | None] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    clock_checks: list[ClockCheck] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> History:
        d = dict(data)
        return cls(
            start=d["start"],
            end=d["end"],
            final_heal=d["final_heal"],
            hosts=dict(d["hosts"]),
            services=dict(d["services"]),
            requests=[Request(**r) for r in d.get("requests", [])],
            edits=[Edit(**e) for e in d.get("edits", [])],
            ca=[CaAttempt(**c) for c in d.get("ca", [])],
            windows=[
                Window(
                    **{
                        **w,
                        "hosts": tuple(w.get("hosts", ())),
                        "groups": tuple(tuple(g) for g in w.get("groups", ())),
                    }
                )
                for w in d.get("windows", [])
            ],
            samples=[Sample(**{**s, "alive": tuple(s["alive"])}) for s in d.get("samples", [])],
            final_policy=dict(d.get("final_policy", {})),
            kills=[Kill(**k) for k in d.get("kills", [])],
            limits=Limits(**d.get("limits", {})),
            clock_checks=[
                ClockCheck(
                    **{
                        **c,
                        "skewed": tuple((str(n), float(v)) for n, v in c.get("skewed", ())),
                        "unreachable": tuple(c.get("unreachable", ())),
                    }
                )
                for c in d.get("clock_checks", [])
            ],
        )


@dataclass
class Verdict:
    name: str
    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
