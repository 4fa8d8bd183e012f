"""The agent: one trio nursery owning the proxy listeners, the peer pool and the admin API.

Shutdown is graceful: stop accepting (listening sockets closed, so new connections
are refused), GOAWAY every HTTP/2 connection and close idle HTTP/1.1 keep-alives,
let in-flight streams finish up to ``drain_timeout``, then cancel what is left.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from functools import partial
from typing import Any

import trio

from gossip.messages import MemberState
from peermesh.agent.health import not_ready_reasons, status_document
from peermesh.agent.state import AgentSources, CaHandles
from peermesh.agent.wiring import (
    admin_ping,
    bound,
    ca_settings,
    listen,
    listener_guards,
    serve,
    threshold_ca_configured,
)
from peermesh.ca.ports import CaPorts
from peermesh.ca.service import CaService
from peermesh.capture.vips import ServiceVips
from peermesh.config import AgentConfig
from peermesh.core.endpoint import CompositeEndpoints
from peermesh.membership.gossip import GossipSettings, Membership, default_advertise_address
from peermesh.net.admin import AdminResponse, AdminServer
from peermesh.net.http import h2select
from peermesh.net.pool import PeerPool
from peermesh.net.rpc import ControlRequest
from peermesh.net.rpc.client import ControlClient
from peermesh.net.rpc.ping import PING, PingReply, PingRequest
from peermesh.net.rpc.router import ControlRouter
from peermesh.net.tls import MeshTls
from peermesh.observability.metrics import AgentMetrics
from peermesh.policy.api import PolicyAdmin
from peermesh.policy.replicator import Peer, PolicyReplicator
from peermesh.proxy.endpoints import StaticEndpoints
from peermesh.proxy.inbound import InboundProxy
from peermesh.proxy.localapp import LocalApp
from peermesh.proxy.outbound import OutboundProxy
from peermesh.proxy.tracker import ConnectionTracker, close_revoked

log = logging.getLogger(__name__)

# A member in one of these states gets no new requests: stop waiting on connections to it.
_GONE = (MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT)


class Agent:
    """A running ``peermesh agent``; ``run()`` owns every task it starts."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        self.tls = MeshTls(config.data_dir, config.trust_domain, require=False)
        self.static_endpoints = StaticEndpoints(config.proxy.peers, config.proxy.endpoints_file)
        self.endpoints = CompositeEndpoints([self.static_endpoints])
        self.membership: Membership | None = None
        self.mdns: Any = None  # MdnsDiscovery when --mdns
        self._keyring = None
        if config.gossip.listen is not None and config.gossip.key_file is not None:
            from gossip.codec import load_keyring

            self._keyring = load_keyring(config.gossip.key_file)
        self.control = ControlRouter(on_internal_error=self.metrics.internal_error)
        self.control.serve(PING, self._ping)
        self.admin = AdminServer(
            admin_hosts=(config.admin.listen[0],), on_internal_error=self.metrics.internal_error
        )
        self.admin.route("/healthz", self._healthz)
        self.admin.route("/readyz", self._readyz)
        self.admin.route("/metrics", self._metrics)
        self.admin.route("/v1/status", self._status)
        self.admin.route("/v1/ping", self._admin_ping)
        self.admin.route("/v1/members", self._members)
        # Replicated policy: store, anti-entropy, admin /v1/policy.
        from peermesh.policy.anchor import RootKeyAnchor
        from peermesh.policy.authorship import (
            RecordSigner,
            RecordVerifier,
            tls_credentials,
            trust_bundle_file,
        )
        from peermesh.policy.persistence import DiskPersistence
        from peermesh.policy.store import PolicyStore

        # Records are signed by our TLS identity and checked against our trust bundle; in
        # threshold-CA mode admin-set changes must be endorsed by the root (group) key.
        bundle = trust_bundle_file(self.tls.bundle_path)
        anchored = threshold_ca_configured(config)
        self.policy = PolicyStore(
            DiskPersistence.in_data_dir(config.data_dir),
            node=config.name,
            signer=RecordSigner(tls_credentials(self.tls)),
            verifier=RecordVerifier(bundle),
            anchor=RootKeyAnchor(config.trust_domain, bundle) if anchored else None,
        )
        self.policy_changes = 0
        self.policy.subscribe(self._on_policy_change)
        self.replicator: PolicyReplicator | None = None
        self.policy_admin: PolicyAdmin | None = None
        self.admin.route("/v1/policy", self._policy_route)
        # Threshold CA: control methods ca/*, admin /v1/ca/*, bootstrap.
        self.ca = self._threshold_ca()
        if self.ca.enabled:
            self.tls.missing_hint = "the threshold CA writes it once this agent has joined"
        if (
            self._keyring is None
            and config.gossip.listen is not None
            and not config.gossip.insecure
        ):
            self._keyring = self.ca.initial_keyring()
        # Observability: request records, collectors, mesh view, /ui.
        from peermesh.observability.collectors import AgentStateCollector
        from peermesh.observability.hub import Observability
        from peermesh.observability.meshview import MeshView

        self.observability = Observability(
            service=config.service.name,
            node=config.name,
            trust_domain=config.trust_domain,
            metrics=self.metrics,
            access_log=config.telemetry.access_log,
            otlp_endpoint=config.telemetry.otlp_endpoint,
            trace_sampling=config.telemetry.trace_sampling,
        )
        sources = AgentSources(self)
        self.metrics.registry.register(AgentStateCollector(sources, self.observability))
        self.mesh_view = MeshView(
            sources,
            self.observability,
            self.tls,
            lambda: self.control_client,
            may_tap=lambda principal: self.policy.compiled().may_tap(principal),
        )
        self.mesh_view.register(self.control, self.admin)
        self._apply_mesh_telemetry()  # from a MeshConfig already on disk
        self.outbound_tracker = ConnectionTracker("outbound")
        self.inbound_tracker = ConnectionTracker("inbound")
        self.addresses: dict[str, tuple[str, int]] = {}
        self.listening = False
        self.draining = False
        # Members seen dead or leaving, with when: 'peermesh check' names them for a while.
        self.departures: deque[tuple[str, str, float]] = deque(maxlen=64)
        self._shutdown = trio.Event()
        self._pool: PeerPool | None = None
        self._started_at = 0.0

    def _threshold_ca(self) -> CaService:
        """The CA with the handles it needs of this agent (never the agent itself)."""
        handles = CaHandles(self)
        ports = CaPorts(
            control=lambda: self.control_client,
            policy=self.policy,
            policy_writer=lambda: self.policy_admin,
            tls=self.tls,
            installer=handles,
            gossip=handles,
            background=handles,
            listeners=handles,
            discovery=handles,
        )
        return CaService(ca_settings(self.config), ports, self.control, self.admin)

    # lifecycle -----------------------------------------------------------------------
    @property
    def pool(self) -> PeerPool:
        assert self._pool is not None, "agent is not running"
        return self._pool

    @property
    def running_pool(self) -> PeerPool | None:
        """The peer pool while the agent runs, else None."""
        return self._pool

    @property
    def control_client(self) -> ControlClient:
        return ControlClient(self.pool)

    def request_shutdown(self) -> None:
        """Begin the graceful drain (what SIGTERM/SIGINT do)."""
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        self._started_at = trio.current_time()
        # One engine per process: every H2Session (app h2c, peer mTLS, h2c to the app).
        if cfg.proxy.h2_engine is not None:
            h2select.set_default(cfg.proxy.h2_engine)
        async with trio.open_nursery() as root:
            self._pool = PeerPool(
                self.tls,
                root,
                connect_timeout=cfg.proxy.connect_timeout,
                on_tls_failure=lambda why: self.metrics.tls_failures.labels("client", why).inc(),
            )
            app = LocalApp(cfg.service.host, cfg.service.port, cfg.service.protocol, root)
            guards = listener_guards(cfg, self.metrics)
            outbound = OutboundProxy(
                local_service=cfg.service.name,
                trust_domain=cfg.trust_domain,
                endpoints=self.endpoints,
                pool=self._pool,
                metrics=self.metrics,
                tracker=self.outbound_tracker,
                policy=self.policy.compiled,
                background=root,
                guard=guards["outbound"],
            )
            inbound = InboundProxy(
                service=cfg.service.name,
                tls=self.tls,
                app=app,
                control=self.control,
                metrics=self.metrics,
                tracker=self.inbound_tracker,
                policy=self.policy.compiled,
                guard=guards["inbound"],
                plain_guard=guards["plaintext"],
            )
            out_listeners = await listen(cfg.proxy.outbound, "outbound")
            in_listeners = await listen(cfg.proxy.inbound, "inbound")
            plain_listeners = (
                await listen(cfg.proxy.plaintext, "plaintext")
                if cfg.proxy.plaintext is not None
                else []
            )
            admin_listeners = await listen(cfg.admin.listen, "admin")
            vips = ServiceVips(self.endpoints.services)
            outbound.vips = vips.table
            self.outbound = outbound
            outbound.tcp_ports = frozenset(cfg.proxy.tcp_ports)
            self.addresses = {
                "outbound": bound(out_listeners),
                "inbound": bound(in_listeners),
                "admin": bound(admin_listeners),
            }
            inbound.port = self.addresses["inbound"][1]
            if self.observability.enabled:
                outbound.observer = inbound.observer = self.observability
            await root.start(self.observability.run)
            if plain_listeners:
                self.addresses["plaintext"] = bound(plain_listeners)
            if cfg.proxy.dns is not None:
                from peermesh.capture.dnsserver import MeshDnsServer, host_resolvers  # dnspython

                dns = MeshDnsServer(
                    cfg.proxy.dns,
                    vips.table,
                    upstreams=cfg.proxy.dns_upstreams or host_resolvers(),
                    bare_names=cfg.proxy.dns_bare_names,
                    on_count=lambda what: self.metrics.dns_queries.labels(what.value).inc(),
                )
                self.addresses["dns"] = await root.start(dns.run)
            root.start_soon(trio.serve_listeners, self.admin.serve_connection, admin_listeners)
            await self._start_policy(root)
            if cfg.gossip.listen is not None:
                await self._start_membership(root)
            # Threshold CA: bootstrap listener, first certificate, renewal.
            await root.start(self.ca.run)
            async with trio.open_nursery() as connections:
                accept_scope = trio.CancelScope()

                async def accept() -> None:
                    with accept_scope:
                        async with trio.open_nursery() as acceptors:
                            serve_app = partial(serve, per_address=True)
                            acceptors.start_soon(
                                serve_app,
                                outbound.serve_connection,
                                out_listeners,
                                connections,
                                guards["outbound"],
                            )
                            # Per peer on the inbound is per SPIFFE ID, after the handshake.
                            acceptors.start_soon(
                                serve,
                                inbound.serve_connection,
                                in_listeners,
                                connections,
                                guards["inbound"],
                            )
                            if plain_listeners:
                                acceptors.start_soon(
                                    serve_app,
                                    inbound.serve_plaintext,
                                    plain_listeners,
                                    connections,
                                    guards["plaintext"],
                                )

                connections.start_soon(accept)
                self.listening = True
                log.info("agent %s up: %s", cfg.name, self.addresses)
                task_status.started(self)
                await self._shutdown.wait()

                # Graceful drain: leave the mesh first so peers stop routing to us.
                self.draining = True
                log.info("agent %s draining (up to %.1fs)", cfg.name, cfg.proxy.drain_timeout)
                if self.membership is not None:
                    await self.membership.leave()
                accept_scope.cancel()
                for listener in out_listeners + in_listeners + plain_listeners:
                    await listener.aclose()
                self.outbound_tracker.drain()
                self.inbound_tracker.drain()
                self._pool.drain()
                with trio.move_on_after(cfg.proxy.drain_timeout):
                    # Connections end on their own tasks; a short poll is simplest here.
                    while self._open_connections():  # noqa: ASYNC110
                        await trio.sleep(0.02)
                connections.cancel_scope.cancel()
            root.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self.observability.aclose()
        self.policy.close()
        log.info("agent %s stopped", cfg.name)

    async def _start_membership(self, nursery: trio.Nursery) -> None:
        cfg = self.config
        assert cfg.gossip.listen is not None
        from gossip.profiles import LAN, LOCAL, WAN

        profile = {"lan": LAN, "wan": WAN, "local": LOCAL}[cfg.gossip.profile]
        advertise = cfg.gossip.advertise or default_advertise_address(self.addresses["inbound"][0])
        services = {cfg.service.name: dict(cfg.labels)}
        self.membership = Membership(
            GossipSettings(
                name=cfg.name,
                bind=cfg.gossip.listen,
                advertise=advertise,
                inbound_port=self.addresses["inbound"][1],
                services=services,
                profile=profile,
                keyring=self._keyring,
                join=cfg.gossip.join,
                key_file=cfg.gossip.key_file,
                epoch_file=cfg.data_dir / "gossip.epoch",
            ),
            ControlClient(self.pool),
            self.control,
            on_event=self._on_member_event,
            on_internal_error=self.metrics.internal_error,
        )
        await nursery.start(self.membership.run)
        self.addresses["gossip"] = self.membership.bound
        self.endpoints.sources.append(self.membership)
        if cfg.gossip.mdns:
            from peermesh.membership.mdns import MdnsDiscovery  # zeroconf only when used

            self.mdns = MdnsDiscovery(
                node=cfg.name,
                address=advertise,
                gossip_port=self.membership.bound[1],
                inbound_port=self.addresses["inbound"][1],
                trust_domain=cfg.trust_domain,
                on_candidate=self._on_mdns_candidate,
            )
            nursery.start_soon(self._run_mdns)
        if cfg.gossip.seeds:
            from peermesh.membership.seeds import DnsSeeds, system_nameserver

            nameserver = cfg.gossip.seeds_resolver or system_nameserver()
            for seed in cfg.gossip.seeds:
                seeds = DnsSeeds(
                    seed,
                    nameserver,
                    self._on_dns_seed,
                    on_refused=lambda r: self.metrics.dns_seed_refusals.labels(r.value).inc(),
                )
                nursery.start_soon(seeds.run)

    def _on_member_event(self, event: Any) -> None:
        """A member stopped being alive: stop waiting on our connections to it (or drain them)."""
        state = getattr(event.member, "state", None)
        if state not in _GONE:
            return
        if state in (MemberState.DEAD, MemberState.LEFT) and event.member.name != self.config.name:
            self.departures.append((event.member.name, state.name.lower(), time.time()))
        meta = event.member.meta
        if self._pool is None or not meta.addresses or event.member.name == self.config.name:
            return
        host, port = meta.addresses[0], meta.inbound_port
        if state is MemberState.LEFT:
            # A leaving member drains: its in-flight streams finish, new requests go elsewhere.
            drained = self._pool.drain_peer(host, port)
            if drained:
                log.info("draining %d connection(s) to %s (left)", drained, event.member.name)
            return
        closed = self._pool.close_peer(host, port, f"member {event.member.name} is {state.name}")
        if closed:
            log.info("closed %d connection(s) to %s (%s)", closed, event.member.name, state.name)

    async def _run_mdns(self) -> None:
        assert self.mdns is not None
        try:
            await self.mdns.run()
        except OSError as exc:
            # No multicast-capable interface (e.g. loopback only): seeds still work.
            log.warning("mDNS discovery unavailable: %s; use --join seeds", exc)

    async def _on_mdns_candidate(self, candidate: Any) -> None:
        membership = self.membership
        if membership is None:
            return
        known = membership.swim.member(candidate.node)
        if known is not None and known.state in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        log.info("mDNS found %s at %s; joining", candidate.node, candidate.address)
        assert self._pool is not None
        self._pool.nursery.start_soon(
            lambda: membership.join_via((candidate.address, candidate.inbound_port), attempts=3)
        )

    async def _on_dns_seed(self, candidate: Any) -> None:
        membership = self.membership
        if membership is None or self._pool is None:
            return
        endpoint = (candidate.address, candidate.inbound_port)
        own = {self.addresses["inbound"][0], self.config.gossip.advertise}
        if candidate.address in own and candidate.inbound_port == self.addresses["inbound"][1]:
            return  # the Service lists this pod too
        if any(
            m.meta.addresses[:1] == (candidate.address,)
            and m.meta.inbound_port == candidate.inbound_port
            and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            for m in membership.swim.members()
        ):
            return
        log.info("DNS seeds list %s:%d; joining", *endpoint)
        self._pool.nursery.start_soon(lambda: membership.join_via(endpoint, attempts=3))

    async def _members(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if self.membership is None:
            return AdminResponse.json(200, {"running": False, "reason": "gossip is off"})
        status = self.membership.status()
        if self.mdns is not None:
            status["mdns"] = {
                "running": self.mdns.running,
                "discovered": sorted(self.mdns.discovered),
            }
        return AdminResponse.json(200, status)

    async def _start_policy(self, nursery: trio.Nursery) -> None:
        self.replicator = PolicyReplicator(
            self.policy,
            ControlClient(self.pool),
            self.control,
            self.policy_peers,
            edit_authorizer=lambda principal: self.policy.compiled().is_admin(principal),
            on_remote_edit=lambda objects, who: self._admin_for_policy().apply_from_peer(
                objects, who
            ),
            on_internal_error=self.metrics.internal_error,
        )
        self.policy_admin = PolicyAdmin(
            self.policy,
            self.replicator,
            self._known_services,
            endorser=self.ca if self.policy.anchor is not None else None,
        )
        await nursery.start(self.replicator.run)

    def _admin_for_policy(self) -> PolicyAdmin:
        assert self.policy_admin is not None
        return self.policy_admin

    def policy_peers(self) -> list[Peer]:
        """Every other agent we can reach: gossip members, else the static endpoints."""
        peers: dict[tuple[str, int], Peer] = {}
        if self.membership is not None and self.membership.running:
            for member in self.membership.swim.members():
                if member.name == self.config.name or member.state is not MemberState.ALIVE:
                    continue
                host = member.meta.addresses[0] if member.meta.addresses else ""
                peers[(host, member.meta.inbound_port)] = Peer(
                    member.name, host, member.meta.inbound_port
                )
        for service in self.static_endpoints.services():
            for e in self.static_endpoints.endpoints(service) or []:
                peers.setdefault((e.host, e.port), Peer(e.node or e.address, e.host, e.port))
        return list(peers.values())

    def _known_services(self) -> set[str]:
        return {self.config.service.name, *self.endpoints.services()}

    def _on_policy_change(self, changed: frozenset[str]) -> None:
        # Runs synchronously inside the store: only note it; never write to the store here.
        self.policy_changes += 1
        self.metrics.policy_changes.inc()
        self.observability.policy_applied_at = time.time()
        if any(key.startswith("MeshConfig/") for key in changed):
            self._apply_mesh_telemetry()
            self._close_revoked()

    def _close_revoked(self) -> None:
        """End open connections (both directions) of identities MeshConfig now revokes."""
        compiled = self.policy.compiled()
        if not compiled.revoked:
            return
        closed = close_revoked(self.inbound_tracker.h2, compiled.is_revoked)
        pool = self.running_pool
        if pool is not None:
            closed += close_revoked(pool.sessions(), compiled.is_revoked)
        if closed:
            log.info("closed %d connection(s) of revoked identities", closed)

    def _apply_mesh_telemetry(self) -> None:
        """MeshConfig ``spec.telemetry`` over this agent's own flags (absent: the flags)."""
        from peermesh.policy.model import MESH_CONFIG, MESH_CONFIG_NAME, MeshConfig

        mesh = self.policy.get(MESH_CONFIG, MESH_CONFIG_NAME)
        telemetry = mesh.spec.telemetry if isinstance(mesh, MeshConfig) else None
        percentage = telemetry.random_sampling_percentage if telemetry else None
        self.observability.configure(
            access_log=telemetry.access_log if telemetry else None,
            trace_sampling=None if percentage is None else percentage / 100,
        )

    async def _policy_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if self.policy_admin is None:
            return AdminResponse.json(503, {"error": "policy is not running yet"})
        return await self.policy_admin.handle(method, path, body)

    def _open_connections(self) -> int:
        return self.outbound_tracker.connections + self.inbound_tracker.connections

    # control RPCs ----------------------------------------------------------------------
    async def _ping(self, request: ControlRequest[PingRequest]) -> PingReply:
        return PingReply(
            node=self.config.name,
            service=self.config.service.name,
            caller=str(request.peer),
            echo=request.body.echo,
        )

    # admin routes ----------------------------------------------------------------------
    async def _healthz(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.text(200, "ok")

    @property
    def ready(self) -> bool:
        return self.listening and not self.draining and self.tls.loaded

    async def _readyz(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        self.tls.maybe_reload()
        if self.ready:
            return AdminResponse.text(200, "ready")
        return AdminResponse.text(503, "not ready: " + "; ".join(not_ready_reasons(self)))

    async def _metrics(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse(200, self.metrics.exposition(), b"text/plain; version=0.0.4")

    def status(self) -> dict[str, Any]:
        """The JSON behind ``/v1/status``."""
        return status_document(self)

    async def _status(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.json(200, self.status())

    async def _admin_ping(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return await admin_ping(self.control_client, method, body)
