"""Seeing the whole mesh from one agent: control RPCs and the admin routes behind
``peermesh top``, ``peermesh tap``, ``peermesh check`` and the ``/ui`` dashboard.

Every agent answers ``stats/golden``, ``tap/subscribe`` and ``check/info`` over mTLS;
the admin routes fan out to every reachable peer, merge, and answer the operator.

Tap rows are request paths other teams' traffic carries, so an agent hands its rows only
to callers the policy lets tap (MeshConfig admins and ``tapIdentities``) or running as
its own service, and always with query strings redacted (Linkerd's tap RBAC, Envoy's
access-log redaction); the local operator's own agent rows are shown in full only when
asked for (``?query=1``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol
from urllib.parse import parse_qs, urlsplit

import trio

from peermesh.core.endpoint import Endpoint
from peermesh.core.errors import PeermeshError
from peermesh.net.admin import AdminResponse, AdminServer
from peermesh.net.rpc import ControlRequest, Empty, RpcError
from peermesh.net.rpc.client import ControlClient
from peermesh.net.rpc.method import Req, Resp, RpcMethod
from peermesh.net.rpc.router import ControlRouter
from peermesh.net.tls import MeshTls
from peermesh.observability.golden import merge
from peermesh.observability.hub import Observability
from peermesh.observability.messages import (
    CHECK_INFO,
    GOLDEN,
    MAX_TAP,
    TAP,
    CheckInfo,
    GoldenReply,
    TapReply,
    TapRequest,
)
from peermesh.observability.ui import (
    HEADERS,
    PAGE_HTML,
    SCRIPT,
    SCRIPT_PATH,
    STYLE_CSS,
    STYLE_PATH,
)
from peermesh.observability.ui_graph import GraphQuery, GraphQueryError, mesh_graph

GRAPH_ROUTE = "/v1/mesh/graph"
FANOUT_TIMEOUT = 3.0
MAX_SKEW = 2.0  # seconds of clock difference `check` tolerates (beyond half the RTT)
NEAR_EXPIRY = 0.1  # fail when less than this share of the certificate lifetime is left
# A member that died or left is named this long afterwards: the digests agree again
# seconds after a failure, and "all checks passed" would hide it.
DEPARTURE_WINDOW = 600.0


def redact_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its path's query string replaced (tokens and ids ride in queries)."""
    path = row.get("path")
    if isinstance(path, str) and "?" in path:
        return {**row, "path": path.split("?", 1)[0] + "?<redacted>"}
    return row


class MeshSources(Protocol):
    """What the mesh view reads of its agent, live at each call."""

    @property
    def node(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def has_join_seeds(self) -> bool: ...
    def recent_departures(self, since: float) -> list[tuple[str, str, float]]:
        """(member, "dead"|"left", wall-clock time) of members gone since ``since``."""

    def member_digest(self) -> str | None: ...
    def policy_digest(self) -> str: ...
    def state_vector_digest(self) -> str | None: ...
    def peer_endpoints(self) -> list[Endpoint]: ...
    async def signer_quorum(self) -> tuple[int, int] | None:
        """(reachable signers, threshold), or None without a threshold CA."""


@dataclass(frozen=True)
class PeerReply(Generic[Resp]):
    """One peer's answer in a fan-out, with where it came from and the round trip."""

    address: str
    rtt: float
    reply: Resp


class MeshView:
    """The control RPCs and admin routes behind ``top``, ``tap``, ``check`` and ``/ui``."""

    def __init__(
        self,
        sources: MeshSources,
        hub: Observability,
        tls: MeshTls,
        client: Callable[[], ControlClient],
        *,
        may_tap: Callable[[str], bool],
    ) -> None:
        self.sources = sources
        self.hub = hub
        self.tls = tls
        self.client = client
        self.may_tap = may_tap
        self.tap_refusals = 0
        self.graph_refusals = 0

    def register(self, router: ControlRouter, admin: AdminServer) -> None:
        router.serve(GOLDEN, self._rpc_golden)
        router.serve(TAP, self._rpc_tap)
        router.serve(CHECK_INFO, self._rpc_info)
        admin.route("/v1/mesh/stats", self._admin_stats)
        admin.route("/v1/mesh/tap", self._admin_tap)
        admin.route("/v1/mesh/check", self._admin_check)
        admin.route(GRAPH_ROUTE, self._admin_graph)
        admin.route("/ui", self._admin_ui)
        admin.route(SCRIPT_PATH, self._admin_ui)
        admin.route(STYLE_PATH, self._admin_ui)

    # --- control RPCs ----------------------------------------------------------------
    def golden(self) -> GoldenReply:
        return GoldenReply.from_wire(
            {
                "node": self.sources.node,
                "service": self.sources.service,
                "snapshot": self.hub.golden.snapshot(time.monotonic()),
            }
        )

    async def _rpc_golden(self, request: ControlRequest[Empty]) -> GoldenReply:
        return self.golden()

    def tap(self, request: TapRequest, *, redact: bool = True) -> list[dict[str, Any]]:
        self.hub.tap_activate(trio.current_time())
        rows = self.hub.tap_matching(request.service, request.path, request.limit)
        return [redact_row(row) for row in rows] if redact else rows

    async def _rpc_tap(self, request: ControlRequest[TapRequest]) -> TapReply:
        caller = str(request.peer)
        if caller != str(self.tls.identity) and not self.may_tap(caller):
            self.tap_refusals += 1
            self.hub.metrics.admin_refusals.labels(TAP.name, "tap-forbidden").inc()
            raise PeermeshError(
                f"{caller} may not tap {self.sources.node}: list it in MeshConfig"
                " spec.tapIdentities (or admins)",
                status=403,
                code="tap-forbidden",
            )
        return TapReply(node=self.sources.node, requests=tuple(self.tap(request.body)))

    def info(self) -> CheckInfo:
        tls = self.tls
        try:
            bundle = hashlib.sha256(tls.bundle_path.read_bytes()).hexdigest()[:16]
        except OSError:
            bundle = None
        return CheckInfo(
            node=self.sources.node,
            service=self.sources.service,
            time=time.time() + self.hub.clock_offset,
            bundle_sha256=bundle,
            member_digest=self.sources.member_digest(),
            policy_digest=self.sources.policy_digest(),
            state_vector_digest=self.sources.state_vector_digest(),
            certificate_not_after=tls.not_after.isoformat() if tls.loaded else None,
        )

    async def _rpc_info(self, request: ControlRequest[Empty]) -> CheckInfo:
        return self.info()

    # --- fan-out ---------------------------------------------------------------------
    def peers(self) -> list[Endpoint]:
        return self.sources.peer_endpoints()

    async def fan_out(
        self, method: RpcMethod[Req, Resp], body: Req
    ) -> tuple[list[PeerReply[Resp]], list[dict[str, str]]]:
        """Call ``method`` on every peer concurrently; replies and per-peer errors."""
        replies: list[PeerReply[Resp]] = []
        errors: list[dict[str, str]] = []
        if not self.tls.loaded:
            return replies, [{"peer": "*", "error": "no certificate loaded: cannot reach peers"}]
        client = self.client()

        async def one(endpoint: Endpoint) -> None:
            started = trio.current_time()
            try:
                reply = await client.call(endpoint, method, body, timeout=FANOUT_TIMEOUT)
            except (RpcError, OSError) as exc:
                errors.append({"peer": endpoint.address, "error": str(exc)})
                return
            replies.append(PeerReply(endpoint.address, trio.current_time() - started, reply))

        async with trio.open_nursery() as nursery:
            for endpoint in self.peers():
                nursery.start_soon(one, endpoint)
        return replies, errors

    # --- admin routes ------------------------------------------------------------------
    async def mesh_stats(self) -> dict[str, Any]:
        stats, _ = await self._gather_stats()
        return stats

    async def _gather_stats(self) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """The merged golden metrics, and the agents (nodes) running each service."""
        replies, errors = await self.fan_out(GOLDEN, Empty())
        nodes = [self.golden()] + [r.reply for r in replies]
        merged = merge([[item.to_wire() for item in n.snapshot] for n in nodes])
        agents: dict[str, set[str]] = {}
        for n in nodes:
            agents.setdefault(n.service, set()).add(n.node)
        stats = {
            "node": self.sources.node,
            "nodes": sorted({n.node for n in nodes}),
            "errors": errors,
            **merged,
        }
        return stats, {service: sorted(names) for service, names in agents.items()}

    async def _admin_stats(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.json(200, await self.mesh_stats())

    async def _admin_tap(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        request = TapRequest(
            service=query.get("service"),
            path=query.get("path"),
            limit=min(int(query.get("limit", "50") or 50), MAX_TAP),
        )
        replies, errors = await self.fan_out(TAP, request)
        rows = self.tap(request, redact=query.get("query") != "1")
        for peer in replies:
            rows.extend(dict(row) for row in peer.reply.requests)
        rows.sort(key=lambda r: str(r.get("time")))
        return AdminResponse.json(200, {"requests": rows[-MAX_TAP:], "errors": errors})

    async def _admin_graph(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        """``/v1/mesh/graph?width=N``: the mesh laid out for a page N pixels wide."""
        if method not in (b"GET", b"HEAD"):
            self.graph_refusals += 1
            self.hub.metrics.admin_refusals.labels(GRAPH_ROUTE, "method-not-allowed").inc()
            return AdminResponse.json(
                405, GraphQueryError("the graph is read-only: GET it").to_dict()
            )
        try:
            query = GraphQuery.from_path(path)
        except GraphQueryError as exc:
            self.graph_refusals += 1
            self.hub.metrics.admin_refusals.labels(GRAPH_ROUTE, exc.code).inc()
            return AdminResponse.json(exc.status, exc.to_dict())
        stats, agents = await self._gather_stats()
        return AdminResponse.json(200, mesh_graph(stats, agents, query.width))

    async def _admin_ui(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        """The page, its script and its style sheet, each under the strict CSP."""
        assets = {
            "/ui": (PAGE_HTML, b"text/html; charset=utf-8"),
            SCRIPT_PATH: (SCRIPT, b"text/javascript; charset=utf-8"),
            STYLE_PATH: (STYLE_CSS, b"text/css; charset=utf-8"),
        }
        found = assets.get(urlsplit(path).path)
        if found is None:
            return AdminResponse.json(404, {"error": f"no page at {path[:100]}"})
        text, content_type = found
        return AdminResponse(200, text.encode(), content_type, HEADERS)

    async def _admin_check(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        checks = await self.checks()
        return AdminResponse.json(200, {"ok": all(c["ok"] for c in checks), "checks": checks})

    async def checks(self) -> list[dict[str, Any]]:
        """``peermesh check``: each check with ok, detail and what to do."""
        out: list[dict[str, Any]] = []

        def add(name: str, ok: bool, detail: str, fix: str = "") -> None:
            out.append({"name": name, "ok": ok, "detail": detail, "fix": "" if ok else fix})

        def agrees(name: str, odd: list[str], detail: str, fix: str, *, ok: bool = True) -> None:
            """A value every peer should share: ``odd`` names the peers where it differs."""
            where = f"; differs on {', '.join(sorted(odd))}" if odd else " on every peer"
            add(name, ok and not odd, detail + where, fix)

        self.tls.maybe_reload()
        ready = self.sources.ready
        add(
            "agent ready",
            ready,
            "listeners up, certificate loaded" if ready else "agent is not ready",
            "see /readyz on the admin port for the reason",
        )
        add(*self._certificate_check())
        mine = self.info()
        answers, errors = await self.fan_out(CHECK_INFO, Empty())
        replies = [a.reply for a in answers]
        peers = self.peers()
        # Told where the mesh is (--join seeds) yet knowing nobody: not a one-node mesh but
        # a cut-off one (firewall, wrong gossip key, or TLS refused on every handshake).
        alone = not peers and self.sources.has_join_seeds
        add(
            "peers reachable",
            not errors and not alone,
            f"{len(replies)}/{len(peers)} peer agents answered over mTLS"
            + "".join(f"; {e['peer']}: {e['error']}" for e in errors)
            + ("; no peer agent known although --join names seeds" if alone else ""),
            "check that peers' inbound ports are open and their certificates are valid"
            " (run 'peermesh check' on them); TLS failures by reason are in"
            " peermesh_tls_handshake_failures_total on /metrics",
        )
        agrees(
            "trust bundle consistent",
            [r.node for r in replies if r.bundle_sha256 != mine.bundle_sha256],
            f"bundle {mine.bundle_sha256}",
            "distribute the same bundle.pem to every agent (or finish the CA rotation)",
            ok=mine.bundle_sha256 is not None,
        )
        skewed = []
        now = time.time() + self.hub.clock_offset
        for answer in answers:
            rtt = answer.rtt
            # The reply was stamped somewhere within the round trip that ended now.
            skew = answer.reply.time - (now - rtt / 2)
            if abs(skew) > MAX_SKEW + rtt / 2:
                skewed.append(f"{answer.reply.node} {skew:+.1f}s")
        add(
            "clock skew",
            not skewed,
            "clock skew with " + ", ".join(skewed)
            if skewed
            else f"clocks agree within ±{MAX_SKEW:.0f}s"
            if replies
            else "no peer answered: nothing to compare the clock with",
            "run NTP/chrony on every node; certificates and tokens fail when clocks drift",
        )
        if mine.member_digest is None:
            add("gossip converged", True, "gossip is off (static endpoints)")
        else:
            agrees(
                "gossip converged",
                [r.node for r in replies if r.member_digest != mine.member_digest],
                f"member digest {mine.member_digest}",
                "wait a few gossip rounds; if it persists check UDP gossip ports and the key",
            )
        add(*self._departures_check())
        agrees(
            "policy converged",
            [r.node for r in replies if r.policy_digest != mine.policy_digest],
            f"policy digest {mine.policy_digest[:16]}",
            "run 'peermesh policy status' on those nodes; anti-entropy repairs reachable peers",
        )
        add(*await self._quorum_check())
        return out

    def _departures_check(self) -> tuple[str, bool, str, str]:
        """Members that died (a failure) or left (on purpose) in the last few minutes."""
        now = time.time()
        gone = self.sources.recent_departures(now - DEPARTURE_WINDOW)
        minutes = DEPARTURE_WINDOW / 60
        if not gone:
            return ("recent departures", True, f"no member died or left in {minutes:.0f} min", "")
        latest: dict[str, tuple[str, float]] = {}
        for name, state, at in gone:
            latest[name] = (state, at)
        named = [
            f"{name} {state} {now - at:.0f}s ago ({_utc(at)})"
            for name, (state, at) in sorted(latest.items(), key=lambda kv: kv[1][1])
        ]
        died = any(state == "dead" for state, _ in latest.values())
        return (
            "recent departures",
            not died,
            f"in the last {minutes:.0f} min: " + ", ".join(named),
            "a dead member failed without leaving: look at that host (process, network);"
            " it is named here for 10 minutes",
        )

    def _certificate_check(self) -> tuple[str, bool, str, str]:
        tls = self.tls
        fix = "renew it: 'peermesh ca renew' (threshold CA) or reissue with the dev CA"
        if not tls.loaded:
            return ("certificate", False, f"no usable certificate: {tls.last_reload_error}", fix)
        cert = tls.certificate
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.hub.clock_offset)
        if now < cert.not_valid_before_utc:
            early = (cert.not_valid_before_utc - now).total_seconds()
            return (
                "certificate",
                False,
                f"not valid for another {early:.0f}s"
                f" (from {cert.not_valid_before_utc.isoformat()}): this node's clock is behind"
                " the signers', so peers' certificates look not yet valid to it too",
                "fix the clock (NTP/chrony); certificates are back-dated by only 1 minute",
            )
        left = (tls.not_after - now).total_seconds()
        lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
        if left <= 0:
            return ("certificate", False, f"expired at {tls.not_after.isoformat()}", fix)
        if left < NEAR_EXPIRY * lifetime:
            return ("certificate", False, f"expires in {left:.0f}s (near expiry)", fix)
        return ("certificate", True, f"{tls.identity} valid for {left / 3600:.1f}h", "")

    async def _quorum_check(self) -> tuple[str, bool, str, str]:
        quorum = await self.sources.signer_quorum()
        if quorum is None:
            return ("signer quorum", True, "no threshold CA committee (dev CA)", "")
        reachable, threshold = quorum
        return (
            "signer quorum",
            reachable >= threshold,
            f"{reachable} signers reachable, threshold {threshold}",
            "bring signers back or re-share the key to a new committee (see docs/security.md)",
        )


def _utc(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))
