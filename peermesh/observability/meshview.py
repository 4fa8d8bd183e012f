"""Seeing the whole mesh from one agent: control RPCs and the admin routes behind
``peermesh top``, ``peermesh tap``, ``peermesh check`` and the ``/ui`` dashboard.

Every agent answers ``stats/golden``, ``tap/subscribe`` and ``check/info`` over mTLS;
the admin routes fan out to every reachable peer, merge, and answer the operator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trio

from peermesh.core.endpoint import Endpoint
from peermesh.net.admin import AdminResponse
from peermesh.net.rpc import ControlRequest, RpcError
from peermesh.observability.golden import merge
from peermesh.observability.ui import DASHBOARD_HTML

if TYPE_CHECKING:
    from peermesh.agent import Agent

FANOUT_TIMEOUT = 3.0
MAX_TAP = 200
MAX_SKEW = 2.0  # seconds of clock difference `check` tolerates (beyond half the RTT)
NEAR_EXPIRY = 0.1  # fail when less than this share of the certificate lifetime is left


class MeshView:
    """Registers the control RPCs and admin routes on an agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        agent.control.register("stats/golden", self._rpc_golden)
        agent.control.register("tap/subscribe", self._rpc_tap)
        agent.control.register("check/info", self._rpc_info)
        agent.admin.route("/v1/mesh/stats", self._admin_stats)
        agent.admin.route("/v1/mesh/tap", self._admin_tap)
        agent.admin.route("/v1/mesh/check", self._admin_check)
        agent.admin.route("/ui", self._admin_ui)

    @property
    def hub(self) -> Any:
        return self.agent.observability

    # --- control RPCs ----------------------------------------------------------------
    def golden(self) -> dict[str, Any]:
        return {
            "node": self.agent.config.name,
            "service": self.agent.config.service.name,
            "snapshot": self.hub.golden.snapshot(time.monotonic()),
        }

    async def _rpc_golden(self, request: ControlRequest) -> Any:
        return self.golden()

    def tap(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            body = {}
        self.hub.tap_activate(trio.current_time())
        limit = min(int(body.get("limit") or 50), MAX_TAP)
        return self.hub.tap_matching(body.get("service"), body.get("path"), limit)

    async def _rpc_tap(self, request: ControlRequest) -> Any:
        try:
            return {"node": self.agent.config.name, "requests": self.tap(request.body)}
        except (TypeError, ValueError) as exc:
            raise RpcError(400, f"tap/subscribe: bad request: {exc}") from None

    def info(self) -> dict[str, Any]:
        agent = self.agent
        tls = agent.tls
        try:
            bundle = hashlib.sha256(tls.bundle_path.read_bytes()).hexdigest()[:16]
        except OSError:
            bundle = None
        membership = agent.membership
        replicator = agent.replicator
        return {
            "node": agent.config.name,
            "service": agent.config.service.name,
            "time": time.time() + self.hub.clock_offset,
            "bundle_sha256": bundle,
            "member_digest": (
                membership.status()["digest"]
                if membership is not None and membership.running
                else None
            ),
            "policy_digest": agent.policy.digest(),
            "state_vector_digest": (
                replicator.local_status()["state_vector_digest"] if replicator else None
            ),
            "certificate_not_after": tls.not_after.isoformat() if tls.loaded else None,
        }

    async def _rpc_info(self, request: ControlRequest) -> Any:
        return self.info()

    # --- fan-out ---------------------------------------------------------------------
    def peers(self) -> list[Endpoint]:
        return [Endpoint(service="", host=p.host, port=p.port) for p in self.agent._policy_peers()]

    async def fan_out(self, method: str, body: Any) -> tuple[list[Any], list[dict[str, str]]]:
        """Call ``method`` on every peer concurrently; replies and per-peer errors."""
        replies: list[Any] = []
        errors: list[dict[str, str]] = []
        if not self.agent.tls.loaded:
            return replies, [{"peer": "*", "error": "no certificate loaded: cannot reach peers"}]
        client = self.agent.control_client

        async def one(endpoint: Endpoint) -> None:
            started = trio.current_time()
            try:
                reply = await client.call_untyped(endpoint, method, body, timeout=FANOUT_TIMEOUT)
            except (RpcError, OSError) as exc:
                errors.append({"peer": endpoint.address, "error": str(exc)})
                return
            if isinstance(reply, dict):
                reply["_rtt"] = trio.current_time() - started
                reply["_address"] = endpoint.address
            replies.append(reply)

        async with trio.open_nursery() as nursery:
            for endpoint in self.peers():
                nursery.start_soon(one, endpoint)
        return replies, errors

    # --- admin routes ------------------------------------------------------------------
    async def mesh_stats(self) -> dict[str, Any]:
        replies, errors = await self.fan_out("stats/golden", None)
        mine = self.golden()
        nodes = [mine] + [r for r in replies if isinstance(r, dict)]
        merged = merge([n.get("snapshot", []) for n in nodes])
        return {
            "node": self.agent.config.name,
            "nodes": sorted({str(n.get("node")) for n in nodes}),
            "errors": errors,
            **merged,
        }

    async def _admin_stats(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.json(200, await self.mesh_stats())

    async def _admin_tap(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        request = {
            "service": query.get("service"),
            "path": query.get("path"),
            "limit": int(query.get("limit", "50") or 50),
        }
        replies, errors = await self.fan_out("tap/subscribe", request)
        rows = self.tap(request)
        for reply in replies:
            if isinstance(reply, dict):
                rows.extend(reply.get("requests") or [])
        rows.sort(key=lambda r: str(r.get("time")))
        return AdminResponse.json(200, {"requests": rows[-MAX_TAP:], "errors": errors})

    async def _admin_ui(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse(200, DASHBOARD_HTML.encode(), b"text/html; charset=utf-8")

    async def _admin_check(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        checks = await self.checks()
        return AdminResponse.json(200, {"ok": all(c["ok"] for c in checks), "checks": checks})

    async def checks(self) -> list[dict[str, Any]]:
        """``peermesh check``: each check with ok, detail and what to do."""
        agent = self.agent
        out: list[dict[str, Any]] = []

        def add(name: str, ok: bool, detail: str, fix: str = "") -> None:
            out.append({"name": name, "ok": ok, "detail": detail, "fix": "" if ok else fix})

        agent.tls.maybe_reload()
        add(
            "agent ready",
            agent.ready,
            "listeners up, certificate loaded" if agent.ready else "agent is not ready",
            "see /readyz on the admin port for the reason",
        )
        add(*self._certificate_check())
        mine = self.info()
        replies, errors = await self.fan_out("check/info", None)
        peers = self.peers()
        # Told where the mesh is (--join seeds) yet knowing nobody: not a one-node mesh but
        # a cut-off one (firewall, wrong gossip key, or TLS refused on every handshake).
        alone = not peers and bool(agent.config.join)
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
        odd = [r["node"] for r in replies if r.get("bundle_sha256") != mine["bundle_sha256"]]
        add(
            "trust bundle consistent",
            not odd and mine["bundle_sha256"] is not None,
            f"bundle {mine['bundle_sha256']}"
            + (f"; differs on {', '.join(sorted(odd))}" if odd else " on every peer"),
            "distribute the same bundle.pem to every agent (or finish the CA rotation)",
        )
        skewed = []
        now = time.time() + self.hub.clock_offset
        for r in replies:
            rtt = float(r.get("_rtt", 0.0))
            # The reply was stamped somewhere within the round trip that ended now.
            skew = float(r.get("time", now)) - (now - rtt / 2)
            if abs(skew) > MAX_SKEW + rtt / 2:
                skewed.append(f"{r['node']} {skew:+.1f}s")
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
        if mine["member_digest"] is None:
            add("gossip converged", True, "gossip is off (static endpoints)")
        else:
            diff = sorted(
                r["node"] for r in replies if r.get("member_digest") != mine["member_digest"]
            )
            add(
                "gossip converged",
                not diff,
                f"member digest {mine['member_digest']}"
                + (f"; differs on {', '.join(diff)}" if diff else " on every peer"),
                "wait a few gossip rounds; if it persists check UDP gossip ports and the key",
            )
        diff = sorted(r["node"] for r in replies if r.get("policy_digest") != mine["policy_digest"])
        add(
            "policy converged",
            not diff,
            f"policy digest {mine['policy_digest'][:16]}"
            + (f"; differs on {', '.join(diff)}" if diff else " on every peer"),
            "run 'peermesh policy status' on those nodes; anti-entropy repairs reachable peers",
        )
        add(*await self._quorum_check())
        return out

    def _certificate_check(self) -> tuple[str, bool, str, str]:
        tls = self.agent.tls
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
        ca = getattr(self.agent, "ca", None)
        if ca is None or getattr(ca, "committee", None) is None:
            return ("signer quorum", True, "no threshold CA committee (dev CA)", "")
        status = await ca.status()
        reachable, threshold = status.get("reachable_signers", 0), status.get("threshold", 0)
        return (
            "signer quorum",
            reachable >= threshold,
            f"{reachable} signers reachable, threshold {threshold}",
            "bring signers back or re-share the key to a new committee (see docs/security.md)",
        )
