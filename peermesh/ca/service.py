"""The agent's CA: bootstrap, join, issuance, renewal and committee changes, wired to trio.

Decisions live in sans-IO modules (``signer``, ``tokens``, ``bootstrap``, ``renewal``,
``certs/``); this module owns the agent-facing plumbing: control handlers over mTLS
(``/peermesh.v1/ca/*``), the bootstrap listener, admin routes (``/v1/ca/*``) and the
background tasks. The service is inert for agents without CA flags or CA state (a
dev-CA mesh behaves exactly as before).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from certs import frost
from certs.devca import install_identity
from certs.spiffe import IdentityError, SpiffeId, validate_node_name
from certs.x509 import (
    TbsRefused,
    assemble_certificate,
    build_leaf_tbs,
    build_root_tbs,
    certificate_signature_valid,
)
from gossip.codec import Keyring, generate_gossip_key, load_keyring, save_keyring
from peermesh.ca import channel
from peermesh.ca.bootstrap import Roster, RosterEntry, RosterError, default_threshold, root_validity
from peermesh.ca.dkgrelay import ParticipantSessions, RelayError, RunSpec, relay_run
from peermesh.ca.issuance import (
    IssuanceResult,
    QuorumError,
    SignerRefused,
    SignerUnavailable,
    threshold_sign,
)
from peermesh.ca.renewal import renewal_delay, retry_delay
from peermesh.ca.signer import Signer, SigningPolicy
from peermesh.ca.state import CaState, CaStateError, Committee, CommitteeMember
from peermesh.ca.tokens import JoinToken, TokenError, check_token, token_sha256
from peermesh.core.endpoint import Endpoint
from peermesh.membership.gossip import Membership, default_advertise_address, sync_keyring
from peermesh.net.admin import AdminResponse
from peermesh.net.rpc import ControlRequest, RpcError
from peermesh.net.tls import TlsError
from peermesh.policy.compiled import JoinTokenGrant
from peermesh.policy.model import JOIN_TOKEN
from peermesh.policy.store import UpdateRefused

if TYPE_CHECKING:
    from peermesh.agent import Agent

log = logging.getLogger(__name__)

CLOCK_BACKDATE = dt.timedelta(minutes=1)
#: The longest a join token may live (kubeadm's default is 24 h; a week covers rollouts).
MAX_TOKEN_TTL = 7 * 86400.0


def root_fingerprint(root_der: bytes) -> str:
    """SHA-256 of the root certificate (DER), hex: what a join token pins."""
    return hashlib.sha256(root_der).hexdigest()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CaService:
    """One agent's part of the threshold CA."""

    def __init__(self, agent: Agent) -> None:
        cfg = agent.config
        self.agent = agent
        self.name = cfg.name
        self.trust_domain = cfg.trust_domain
        self.state = CaState(cfg.data_dir)
        self.bootstrap_token: bytes | None = None
        if cfg.bootstrap_token_file is not None:
            self.bootstrap_token = Path(cfg.bootstrap_token_file).read_bytes().strip()
            if len(self.bootstrap_token) < 16:
                raise ValueError(
                    f"{cfg.bootstrap_token_file}: the bootstrap token must be at least 16 bytes;"
                    " make one with 'peermesh keygen bootstrap-token --out FILE'"
                )
        self.mac_key = (
            channel.bootstrap_mac_key(self.bootstrap_token) if self.bootstrap_token else None
        )
        self.join_token = JoinToken.parse(cfg.join_token) if cfg.join_token else None
        self.committee: Committee | None = self.state.load_committee()
        self.signer: Signer | None = None
        self._load_signer()
        # Keys each join token admitted through this signer (its durable use ledger).
        self.token_uses: dict[str, tuple[str, ...]] = _load_uses(self.state.load_tokens())
        self.sessions = ParticipantSessions()
        self.roster: Roster | None = None
        self.phase = "idle"
        self.last_error: str | None = None
        self.issued: list[IssuanceResult] = []
        self.renewals = 0
        self.root_ready = trio.Event()
        self.identity_ready = trio.Event()
        self.bootstrap_address: tuple[str, int] | None = None
        self.rng = random.Random()
        self._boot_server_ctx: tuple[int, ssl.SSLContext] | None = None
        self._ephemeral_ctx: ssl.SSLContext | None = None
        self._newer_committee_at: CommitteeMember | None = None
        self._pending_enrolment: Committee | None = None
        self.dkg_seconds: float | None = None  # how long the relayed DKG took (coordinator)
        self._register()

    # -- setup ---------------------------------------------------------------------------------
    @property
    def policy(self) -> SigningPolicy:
        """The limits this signer applies: its flag, lowered by MeshConfig certificateLifetime."""
        limit = self.agent.config.max_cert_lifetime
        compiled = self.agent.policy.compiled()
        if compiled.mesh_config_name is not None:
            limit = min(limit, compiled.mesh.certificate_lifetime)
        return SigningPolicy(self.trust_domain, max_leaf_lifetime=dt.timedelta(seconds=limit))

    @property
    def leaf_lifetime(self) -> dt.timedelta:
        """What this agent asks for: its flag, capped by what signers will sign."""
        asked = dt.timedelta(seconds=self.agent.config.cert_lifetime)
        return min(asked, self.policy.max_leaf_lifetime)

    def change_authorized(self, peer: SpiffeId | str | None) -> str | None:
        """Why ``principal`` may not coordinate a committee change or mint tokens, or None.

        With MeshConfig ``spec.admins`` set, only those identities may; without, any
        identity a committee member runs as (the open default of a fresh mesh).
        """
        if peer is None:
            return "an unauthenticated caller may not change the CA"
        principal = str(peer)
        admins = self.agent.policy.compiled().mesh.admins
        if admins:
            if principal in admins:
                return None
            return f"{principal} is not a MeshConfig admin (admins: {', '.join(admins)})"
        committee = self.committee
        allowed = (
            {str(SpiffeId.for_service(self.trust_domain, m.service)) for m in committee.members}
            if committee is not None
            else set()
        )
        if principal in allowed:
            return None
        return (
            f"{principal} is neither a MeshConfig admin nor a committee member's identity;"
            " list operators' identities in MeshConfig spec.admins"
        )

    @property
    def enabled(self) -> bool:
        """Does this agent take part in the threshold CA at all?"""
        return bool(self.bootstrap_token or self.join_token or self.committee)

    def _load_signer(self) -> None:
        loaded = self.state.load_share()
        if loaded is None or self.committee is None:
            self.signer = None
            return
        _epoch, share = loaded
        self.signer = Signer(share, self.committee.public, self.state.nonces)

    def initial_keyring(self) -> Keyring | None:
        """The gossip keyring when no --gossip-key-file was given (bootstrap or join mode)."""
        if self.state.gossip_key_path.exists():
            return load_keyring(self.state.gossip_key_path)
        if self.bootstrap_token:
            return Keyring([channel.gossip_key_from_token(self.bootstrap_token)])
        if self.join_token:
            # A placeholder until the mesh hands us its keyring with our certificate.
            return Keyring([generate_gossip_key()])
        return None

    def _register(self) -> None:
        control = self.agent.control
        for method, handler in {
            "ca/commit": self._rpc_commit,
            "ca/sign": self._rpc_sign,
            "ca/token/check": self._rpc_token_check,
            "ca/committee": self._rpc_committee,
            "ca/committee/update": self._rpc_committee_update,
            "ca/info": self._rpc_info,
            "ca/dkg/begin": self._rpc_dkg_begin,
            "ca/dkg/deliver": self._rpc_dkg_deliver,
            "ca/dkg/finish": self._rpc_dkg_finish,
        }.items():
            control.register(method, handler)
        admin = self.agent.admin
        admin.route("/v1/ca/status", self._admin_status)
        admin.route("/v1/ca/token", self._admin_token)
        admin.route("/v1/ca/tokens", self._admin_tokens)
        admin.route("/v1/ca/enroll", self._admin_enroll)
        admin.route("/v1/ca/refresh", self._admin_refresh)
        admin.route("/v1/ca/renew", self._admin_renew)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the bootstrap listener and get/keep a certificate; returns only if disabled."""
        if not self.enabled:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            await self._start_listener(nursery)
            task_status.started()
            try:
                await self._obtain_identity()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("threshold CA: cannot obtain an identity")
                return
            nursery.start_soon(self._renewal_loop)

    async def _start_listener(self, nursery: trio.Nursery) -> None:
        cfg = self.agent.config
        inbound_host, inbound_port = self.agent.addresses["inbound"]
        if cfg.bootstrap_listen is not None:
            host, port = cfg.bootstrap_listen
        else:
            host, port = inbound_host, inbound_port + 1
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        self.bootstrap_address = (str(bound[0]), int(bound[1]))
        self.agent.addresses["bootstrap"] = self.bootstrap_address
        server = channel.BootstrapServer(
            {
                "ca/bootstrap/hello": self._boot_hello,
                "ca/bootstrap/pushpull": self._boot_pushpull,
                "ca/bootstrap/dkg/begin": self._boot_dkg_begin,
                "ca/bootstrap/dkg/deliver": self._boot_dkg_deliver,
                "ca/bootstrap/dkg/finish": self._boot_dkg_finish,
                "ca/bootstrap/commit": self._boot_commit,
                "ca/bootstrap/sign": self._boot_sign,
                "ca/bootstrap/root": self._boot_root,
                "ca/join/info": self._join_info,
                "ca/join": self._join,
            },
            mac_key=self.mac_key,
            context=self._server_context,
        )
        nursery.start_soon(trio.serve_listeners, server.serve_connection, listeners)

    def _server_context(self) -> ssl.SSLContext:
        tls = self.agent.tls
        tls.maybe_reload()
        if tls.loaded:
            cached = self._boot_server_ctx
            if cached is None or cached[0] != tls.generation:
                try:
                    ctx = channel.server_context(tls.cert_path, tls.key_path)
                except (ssl.SSLError, OSError):
                    if cached is not None:
                        return cached[1]
                    raise
                self._boot_server_ctx = (tls.generation, ctx)
            assert self._boot_server_ctx is not None
            return self._boot_server_ctx[1]
        if self._ephemeral_ctx is None:
            self._ephemeral_ctx = channel.ephemeral_server_context(self.name)
        return self._ephemeral_ctx

    async def _obtain_identity(self) -> None:
        tls = self.agent.tls
        committee = self.committee
        if committee is not None and committee.root_der is not None:
            self.root_ready.set()
        if tls.loaded and committee is not None and committee.root_der is not None:
            self.phase = "ready"
            self.identity_ready.set()
            return
        if self.bootstrap_token and (committee is None or committee.member(self.name)):
            await self._bootstrap()
        elif self.join_token:
            await self._join_mesh()
        elif not tls.loaded:
            self.phase = "no identity"
            self.last_error = (
                "no certificate and no way to get one: pass --join-token (from 'peermesh token"
                " create' on a member) with --join HOST:PORT"
            )
            log.warning("threshold CA: %s", self.last_error)
            return
        self.phase = "ready"
        self.last_error = None
        self.identity_ready.set()

    # -- identity installation -----------------------------------------------------------------
    def _install(self, cert: x509.Certificate, key: Ed25519PrivateKey) -> None:
        assert self.committee is not None
        install_identity(self.agent.config.data_dir, cert, key, [self.committee.root])
        self.agent.tls.reload()
        membership = self.agent.membership
        if membership is not None:
            membership.transport = membership._mtls_exchange

    def _leaf_tbs(self, key: Ed25519PrivateKey, service: str, node: str) -> bytes:
        assert self.committee is not None
        now = _utcnow()
        return build_leaf_tbs(
            key.public_key(),
            str(SpiffeId.for_service(self.trust_domain, service)),
            node,
            self.committee.root,
            now - CLOCK_BACKDATE,
            now - CLOCK_BACKDATE + self.leaf_lifetime,
        )

    # -- bootstrap -----------------------------------------------------------------------------
    def _my_entry(self) -> RosterEntry:
        cfg = self.agent.config
        assert cfg.bootstrap_expect is not None and self.bootstrap_address is not None
        host = cfg.advertise or default_advertise_address(self.agent.addresses["inbound"][0])
        n = cfg.bootstrap_expect
        return RosterEntry(
            node=self.name,
            service=cfg.service.name,
            identity_key=self.state.identity_public,
            bootstrap=(host, self.bootstrap_address[1]),
            inbound=(host, self.agent.addresses["inbound"][1]),
            expect=n,
            threshold=cfg.threshold or default_threshold(n),
            trust_domain=self.trust_domain,
        )

    async def _boot_call(
        self, address: tuple[str, int], method: str, body: Any, timeout: float = 5.0
    ) -> Any:
        return await channel.call(
            address,
            "ca/bootstrap/" + method,
            body,
            context=channel.bootstrap_client_context(),
            mac_key=self.mac_key,
            timeout=timeout,
        )

    async def _bootstrap(self) -> None:
        cfg = self.agent.config
        if cfg.bootstrap_expect is None:
            raise CaStateError(
                "this agent was a bootstrap member but --bootstrap-expect is missing; start it"
                " with the flags it was bootstrapped with"
            )
        self.roster = Roster(self._my_entry())
        if self.committee is None or self.committee.root_der is None:
            self.phase = f"bootstrap: waiting for {cfg.bootstrap_expect} agents"
            await self._gather_roster()
            self._gossip_over_bootstrap()
            if self.committee is None:
                if self.roster.coordinator == self.name:
                    await self._coordinate_dkg()
                else:
                    self.phase = "bootstrap: DKG"
            await self._wait_or_make_root()
        self.phase = "bootstrap: first certificate"
        key = Ed25519PrivateKey.generate()
        tbs = self._leaf_tbs(key, cfg.service.name, self.name)
        result = await self._retry(
            lambda: self._sign(
                tbs, {"kind": "bootstrap", "node": self.name}, self._boot_signer_call
            )
        )
        self._install(assemble_certificate(tbs, result.signature), key)
        log.info(
            "threshold CA: %s has its first certificate (signers %s)", self.name, result.signers
        )

    async def _retry(self, attempt: Callable[[], Awaitable[IssuanceResult]]) -> IssuanceResult:
        delay = 0.1
        while True:
            try:
                return await attempt()
            except QuorumError as exc:
                self.last_error = str(exc)
                log.info("threshold CA: %s; retrying", exc)
            await trio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    async def _gather_roster(self) -> None:
        assert self.roster is not None
        roster = self.roster
        seeds = {(h, p + 1) for h, p in self.agent.config.join}
        while not roster.complete:
            targets = seeds | {e.bootstrap for e in roster.entries.values() if e.node != self.name}
            if self.agent.mdns is not None:  # mDNS candidates: their default bootstrap port
                targets |= {
                    (c.address, c.inbound_port + 1)
                    for c in self.agent.mdns.discovered.values()
                    if c.trust_domain == self.trust_domain
                }
            async with trio.open_nursery() as nursery:
                for address in targets:
                    nursery.start_soon(self._hello, address)
            if roster.problems:
                self.last_error = "; ".join(roster.problems)
            if not roster.complete:
                await trio.sleep(0.2)
        if len(roster.entries) > roster.me.expect:
            self.last_error = (
                f"saw {len(roster.entries)} agents with our bootstrap token but"
                f" --bootstrap-expect is {roster.me.expect}: {', '.join(sorted(roster.entries))}"
            )
            raise RosterError(self.last_error)

    async def _hello(self, address: tuple[str, int]) -> None:
        assert self.roster is not None
        try:
            reply = await self._boot_call(
                address, "hello", {"roster": self.roster.wire()}, timeout=2
            )
        except channel.ChannelError as exc:
            log.debug("bootstrap hello to %s: %s", address, exc)
            return
        if isinstance(reply, dict):
            self.roster.merge(reply.get("roster") or [])

    async def _boot_hello(self, body: Any) -> Any:
        if self.roster is None:
            raise RpcError(503, f"{self.name} is not bootstrapping (no --bootstrap-expect)")
        if isinstance(body, dict):
            self.roster.merge(body.get("roster") or [])
        return {"roster": self.roster.wire()}

    def _gossip_over_bootstrap(self) -> None:
        """Until we have a certificate, push-pull gossip state over the bootstrap channel."""
        membership = self.agent.membership
        if membership is None or self.roster is None or self.agent.tls.loaded:
            return
        by_inbound = {e.inbound: e.bootstrap for e in self.roster.entries.values()}

        async def transport(address: tuple[str, int], state: bytes) -> Any:
            target = by_inbound.get(address, (address[0], address[1] + 1))
            try:
                return await self._boot_call(target, "pushpull", state)
            except channel.ChannelError as exc:
                raise RpcError(502, str(exc)) from exc

        membership.transport = transport
        for entry in self.roster.entries.values():
            if entry.node != self.name:
                self.agent.pool.nursery.start_soon(_join_soon, membership, entry.inbound)

    async def _boot_pushpull(self, body: Any) -> Any:
        membership = self.agent.membership
        if membership is None:
            raise RpcError(503, "gossip is off on this agent")
        return membership.answer_push_pull(body)

    async def _coordinate_dkg(self) -> None:
        assert self.roster is not None
        self.phase = "bootstrap: DKG (relaying)"
        roster = self.roster
        members = {m.node: m for m in roster.members()}

        async def call(node: str, step: str, body: Any) -> Any:
            if node == self.name:
                return await {"begin": self._boot_dkg_begin, "deliver": self._boot_dkg_deliver,
                              "finish": self._boot_dkg_finish}[step](body)  # fmt: skip
            member = members[node]
            assert member.bootstrap is not None
            return await self._boot_call(member.bootstrap, "dkg/" + step, body, timeout=20)

        delay = 0.2
        while self.committee is None:
            spec = RunSpec(
                "dkg", secrets.token_bytes(32), roster.me.threshold, roster.participants()
            )
            try:
                started = trio.current_time()
                report = await relay_run(spec, call)
                self.dkg_seconds = trio.current_time() - started
                log.info("threshold CA: DKG done in %d rounds", report.rounds)
                return
            except (RelayError, RpcError) as exc:
                self.last_error = f"DKG: {exc}"
                log.info("threshold CA: DKG attempt failed (%s); retrying", exc)
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _check_bootstrap_spec(self, spec: RunSpec) -> None:
        if self.roster is None or not self.roster.complete:
            raise RpcError(503, f"{self.name} has not seen every bootstrap agent yet; retry")
        if self.committee is not None:
            raise RpcError(409, f"{self.name} already holds a committee; no second DKG")
        if spec.purpose != "dkg" or spec.threshold != self.roster.me.threshold:
            raise RpcError(403, "run is not the DKG our roster implies (purpose/threshold)")
        if dict(spec.participants) != dict(self.roster.participants()):
            raise RpcError(403, "run's participants differ from the roster we saw")

    async def _boot_dkg_begin(self, body: Any) -> Any:
        try:
            spec = RunSpec.from_wire(body)
            self._check_bootstrap_spec(spec)
            return self.sessions.begin(
                spec, self.name, self.state.identity_key, share=None, public=None
            )
        except RelayError as exc:
            raise RpcError(400, str(exc)) from None

    async def _boot_dkg_deliver(self, body: Any) -> Any:
        try:
            return self.sessions.deliver(bytes(body["session"]), body.get("messages") or [])
        except (RelayError, KeyError, TypeError) as exc:
            raise RpcError(400, f"deliver: {exc}") from None

    async def _boot_dkg_finish(self, body: Any) -> Any:
        assert self.roster is not None
        try:
            output = self.sessions.finish(bytes(body["session"]))
        except (RelayError, KeyError, TypeError) as exc:
            raise RpcError(400, f"finish: {exc}") from None
        assert output.share is not None
        committee = Committee(1, self.trust_domain, output.public, self.roster.members(), None)
        self.state.save_share(1, output.share)
        self.state.save_committee(committee)
        self.committee = committee
        self._load_signer()
        self.phase = "bootstrap: root"
        return {"ok": True}

    async def _wait_or_make_root(self) -> None:
        assert self.roster is not None
        if self.roster.coordinator != self.name:
            self.phase = "bootstrap: waiting for the root"
            await self.root_ready.wait()
            return
        assert self.committee is not None
        self.phase = "bootstrap: signing the root"
        not_before, not_after = root_validity(_utcnow())
        tbs = build_root_tbs(
            self.committee.public.group_public_key.to_bytes(),
            self.trust_domain,
            not_before,
            not_after,
        )
        result = await self._retry(
            lambda: self._sign(
                tbs, {"kind": "root"}, self._boot_signer_call, committee=self.committee
            )
        )
        root = assemble_certificate(tbs, result.signature)
        await self._boot_root({"root": root.public_bytes(serialization.Encoding.DER)})
        pending = {m.node: m for m in self.committee.members if m.node != self.name}
        delay = 0.1
        while pending:
            async with trio.open_nursery() as nursery:
                for member in list(pending.values()):

                    async def push(m: CommitteeMember = member) -> None:
                        assert m.bootstrap is not None
                        try:
                            await self._boot_call(
                                m.bootstrap,
                                "root",
                                {"root": root.public_bytes(serialization.Encoding.DER)},
                            )
                            pending.pop(m.node, None)
                        except channel.ChannelError as exc:
                            log.debug("root to %s: %s", m.node, exc)

                    nursery.start_soon(push)
            if pending:
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _boot_root(self, body: Any) -> Any:
        committee = self.committee
        if committee is None:
            raise RpcError(503, f"{self.name} has no share yet; retry")
        try:
            root = x509.load_der_x509_certificate(bytes(body["root"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcError(400, f"root is not a DER certificate: {exc}") from None
        if committee.root_der is not None:
            if committee.root_der == root.public_bytes(serialization.Encoding.DER):
                return {"ok": True}
            raise RpcError(409, "a different root is already installed here")
        group_key = committee.public.group_public_key.to_bytes()
        if not certificate_signature_valid(root, group_key):
            raise RpcError(403, "root is not signed by the committee's group key")
        try:
            from peermesh.ca.signer import root_decision

            root_decision(
                root.tbs_certificate_bytes,
                group_public_key=group_key,
                policy=self.policy,
                now=_utcnow(),
            )
        except TbsRefused as exc:
            raise RpcError(403, f"root refused: {exc}") from None
        der = root.public_bytes(serialization.Encoding.DER)
        self.committee = Committee(
            committee.epoch, committee.trust_domain, committee.public, committee.members, der
        )
        self.state.save_committee(self.committee)
        self.root_ready.set()
        return {"ok": True}

    async def _boot_signer_call(self, member: CommitteeMember, method: str, body: Any) -> Any:
        if member.node == self.name:
            handler = self._boot_commit if method == "commit" else self._boot_sign
            try:
                return await handler(body)
            except RpcError as exc:
                raise _signer_error(exc.status, exc.message) from None
        if member.bootstrap is None:
            raise SignerUnavailable("no bootstrap address known")
        try:
            return await self._boot_call(member.bootstrap, method, body)
        except channel.ChannelRefused as exc:
            raise _signer_error(exc.status, exc.message) from None
        except channel.ChannelError as exc:
            raise SignerUnavailable(str(exc)) from None

    async def _boot_commit(self, body: Any) -> Any:
        return self._commit()

    async def _boot_sign(self, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
            raise RpcError(400, "sign needs {package, auth}")
        auth = body["auth"]
        signer, committee = self._need_signer()
        now = _utcnow()
        try:
            if auth.get("kind") == "root":
                if committee.root_der is not None:
                    raise TbsRefused("the root is already signed; no second root")
                share = signer.sign_root(body.get("package"), policy=self.policy, now=now)
            elif auth.get("kind") == "bootstrap":
                member = committee.member(str(auth.get("node")))
                if member is None:
                    raise TbsRefused(f"{auth.get('node')!r} is not an initial agent")
                identity = str(SpiffeId.for_service(self.trust_domain, member.service))
                share = signer.sign_leaf(
                    body.get("package"),
                    identity=identity,
                    root=committee.root,
                    policy=self.policy,
                    now=now,
                )
            else:
                raise TbsRefused(f"{auth.get('kind')!r} requests are not served before mTLS")
        except (TbsRefused, CaStateError) as exc:
            raise RpcError(403, f"{self.name} refuses to sign: {exc}") from None
        return {"share": share.to_wire()}

    # -- signer side over mTLS ----------------------------------------------------------------
    def _need_signer(self) -> tuple[Signer, Committee]:
        if self.signer is None or self.committee is None:
            raise RpcError(503, f"{self.name} is not a signer")
        return self.signer, self.committee

    def _commit(self) -> dict[str, Any]:
        signer, committee = self._need_signer()
        return {"commitments": signer.commit().to_wire(), "epoch": committee.epoch}

    async def _rpc_commit(self, request: ControlRequest) -> Any:
        return self._commit()

    async def _rpc_sign(self, request: ControlRequest) -> Any:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
            raise RpcError(400, "sign needs {package, auth}")
        signer, committee = self._need_signer()
        auth = body["auth"]
        now = _utcnow()
        kind = auth.get("kind")
        try:
            if kind == "renew":
                identity = str(request.peer)
                share = signer.sign_leaf(
                    body.get("package"),
                    identity=identity,
                    root=committee.root,
                    policy=self.policy,
                    now=now,
                )
            elif kind == "join":
                share = self._sign_join(signer, committee, body.get("package"), auth, now)
            else:
                raise TbsRefused(f"{kind!r} requests are not accepted over mTLS")
        except (TbsRefused, TokenError, CaStateError) as exc:
            log.info("refused to sign for %s: %s", request.peer, exc)
            raise RpcError(403, f"{self.name} refuses to sign: {exc}") from None
        return {"share": share.to_wire()}

    def _sign_join(
        self,
        signer: Signer,
        committee: Committee,
        package: Any,
        auth: dict[str, Any],
        now: dt.datetime,
    ) -> frost.SignatureShare:
        token_id, secret, service = (
            str(auth.get("token_id")),
            str(auth.get("secret")),
            str(auth.get("service")),
        )
        message = package.get("message") if isinstance(package, dict) else None
        if not isinstance(message, bytes):
            raise TbsRefused("signing package has no message")
        try:
            subject = x509.load_der_x509_certificate(channel_wrap(message)).public_key()
        except ValueError as exc:
            raise TbsRefused(f"not a TBSCertificate: {exc}") from None
        if not isinstance(subject, Ed25519PublicKey):
            raise TbsRefused("subject public key is not Ed25519")
        assert committee.root_der is not None
        try:
            token = JoinToken.parse(
                f"pmjt1.{token_id}.{secret}.{root_fingerprint(committee.root_der)}"
            )
        except TokenError:
            raise TokenError("join token is malformed: copy it whole") from None
        grants = self.agent.policy.compiled().join_tokens
        used = self.token_uses.get(token_id, ())
        updated = check_token(
            grants.get(token_id),
            used,
            token=token,
            service=service,
            subject_key=subject.public_bytes_raw().hex(),
            now=now.timestamp(),
        )
        identity = str(SpiffeId.for_service(self.trust_domain, service))
        checked = signer.check_leaf(
            package, identity=identity, root=committee.root, policy=self.policy, now=now
        )
        if updated != used:
            # Count the use durably before the share can leave (like the nonce).
            self.token_uses[token_id] = updated
            self._save_uses(grants)
        return signer.sign_checked(checked)

    def _save_uses(self, grants: Mapping[str, JoinTokenGrant]) -> None:
        """Persist the ledger, dropping tokens gone from policy or expired a day ago."""
        now = time.time()
        self.token_uses = {
            k: v
            for k, v in self.token_uses.items()
            if k in grants and _still_counted(grants[k].expires, now)
        }
        self.state.save_tokens({k: {"used_by": list(v)} for k, v in self.token_uses.items()})

    async def _rpc_token_check(self, request: ControlRequest) -> Any:
        """Does this signer's policy hold join token ``id``? Merges ``update`` first if given.

        ``peermesh token create`` uses it to hand the new token straight to the signers
        instead of waiting for anti-entropy, so the token works as soon as it is printed.
        """
        self._need_signer()
        body = request.body if isinstance(request.body, dict) else {}
        token_id = body.get("id")
        if not isinstance(token_id, str):
            raise RpcError(400, "ca/token/check needs {id, update?}")
        update = body.get("update")
        if isinstance(update, bytes) and update:
            try:
                self.agent.policy.apply_update(update, source=f"token create by {request.peer}")
            except UpdateRefused as exc:
                raise RpcError(400, f"policy update refused: {exc.reason}") from None
        return {
            "known": token_id in self.agent.policy.compiled().join_tokens,
            "sv": self.agent.policy.state_vector(),
        }

    async def _rpc_committee(self, request: ControlRequest) -> Any:
        if self.committee is None:
            raise RpcError(503, f"{self.name} has no committee state")
        return self.committee.to_wire()

    def _adopt_committee(self, wire: Any) -> bool:
        """Take a newer committee if it is for the same root and group key."""
        try:
            new = Committee.from_wire(wire)
        except CaStateError:
            return False
        old = self.committee
        if old is None or new.epoch <= old.epoch:
            return False
        if (
            new.public.group_public_key != old.public.group_public_key
            or new.root_der != old.root_der
        ):
            log.warning("refused a committee update with another group key or root")
            return False
        self.committee = new
        self.state.save_committee(new)
        loaded = self.state.load_share()
        if loaded is not None and (loaded[0] < new.epoch) and new.member(self.name) is None:
            self.state.drop_share()  # we were left out of a refresh: our share is useless
        self._load_signer()
        return True

    async def _rpc_committee_update(self, request: ControlRequest) -> Any:
        refusal = self.change_authorized(request.peer)
        if refusal is not None:
            raise RpcError(403, f"{self.name} refuses the committee update: {refusal}")
        return {"adopted": self._adopt_committee(request.body)}

    async def _rpc_info(self, request: ControlRequest) -> Any:
        return {
            "node": self.name,
            "service": self.agent.config.service.name,
            "identity_key": self.state.identity_public,
            "signer": self.signer is not None,
            "epoch": self.committee.epoch if self.committee else None,
        }

    # -- issuance over mTLS ---------------------------------------------------------------------
    def _address_of(self, member: CommitteeMember) -> tuple[str, int]:
        membership = self.agent.membership
        if membership is not None and membership.running:
            known = membership.swim.member(member.node)
            if (
                known is not None
                and known.state.name in ("ALIVE", "SUSPECT")
                and known.meta.addresses
            ):
                return known.meta.addresses[0], known.meta.inbound_port
        return member.address

    async def _mtls_signer_call(self, member: CommitteeMember, method: str, body: Any) -> Any:
        if member.node == self.name:
            identity = self.agent.tls.identity
            request = ControlRequest(method=f"ca/{method}", peer=identity, body=body)
            try:
                reply = await (self._rpc_commit if method == "commit" else self._rpc_sign)(request)
            except RpcError as exc:
                raise _signer_error(exc.status, exc.message) from None
            return reply
        host, port = self._address_of(member)
        try:
            reply = await self.agent.control_client.call_untyped(
                Endpoint(service="", host=host, port=port), f"ca/{method}", body, timeout=5.0
            )
        except RpcError as exc:
            text = str(exc)
            if "(403): " in text:
                raise SignerRefused(text.split("(403): ", 1)[1]) from None
            raise SignerUnavailable(text) from None
        committee = self.committee
        if (
            method == "commit"
            and committee is not None
            and isinstance(reply, dict)
            and int(reply.get("epoch") or 0) > committee.epoch
        ):
            self._newer_committee_at = member
        return reply

    async def _sign(
        self,
        tbs: bytes,
        auth: dict[str, Any],
        call: Callable[[CommitteeMember, str, Any], Awaitable[Any]],
        *,
        committee: Committee | None = None,
    ) -> IssuanceResult:
        committee = committee or self.committee
        if committee is None:
            raise QuorumError(f"{self.name} knows no signer committee yet")
        prefer = [self.name] if committee.member(self.name) and self.signer else []
        result = await threshold_sign(tbs, committee, call, auth, prefer=prefer, rng=self.rng)
        self.issued.append(result)
        del self.issued[:-100]
        return result

    async def issue_mtls(self, tbs: bytes, auth: dict[str, Any]) -> IssuanceResult:
        """Threshold-sign over mTLS; syncs the committee once if a signer reports a newer one."""
        for _ in range(2):
            self._newer_committee_at = None
            try:
                return await self._sign(tbs, auth, self._mtls_signer_call)
            except QuorumError:
                newer = self._newer_committee_at
                if newer is None or not await self._sync_committee(newer):
                    raise
        raise QuorumError("committee changed twice during one issuance; retry")

    async def _sync_committee(self, member: CommitteeMember) -> bool:
        host, port = self._address_of(member)
        try:
            wire = await self.agent.control_client.call_untyped(
                Endpoint(service="", host=host, port=port), "ca/committee", None, timeout=5.0
            )
        except RpcError:
            return False
        return self._adopt_committee(wire)

    # -- renewal -------------------------------------------------------------------------------
    async def renew(self) -> IssuanceResult:
        """A fresh key and certificate for our current identity, authorized by the current one."""
        tls = self.agent.tls
        identity = tls.identity
        service = identity.service
        if service is None:
            raise QuorumError(f"our identity {identity} is not a /svc/ identity; cannot renew")
        key = Ed25519PrivateKey.generate()
        tbs = self._leaf_tbs(key, service, self.name)
        result = await self.issue_mtls(tbs, {"kind": "renew"})
        self._install(assemble_certificate(tbs, result.signature), key)
        self.renewals += 1
        log.info("threshold CA: renewed %s (signers %s)", identity, result.signers)
        return result

    async def _renewal_loop(self) -> None:
        failures = 0
        while True:
            tls = self.agent.tls
            if not tls.loaded or self.committee is None or self.committee.root_der is None:
                await trio.sleep(1.0)
                continue
            cert = tls.certificate
            if failures:
                delay = retry_delay(cert.not_valid_after_utc, _utcnow(), failures)
            else:
                delay = renewal_delay(
                    cert.not_valid_before_utc, cert.not_valid_after_utc, _utcnow(), self.rng
                )
            await trio.sleep(delay)
            try:
                await self.renew()
                failures = 0
                self.last_error = None
            except (QuorumError, TlsError, OSError) as exc:
                failures += 1
                self.last_error = f"renewal failed: {exc}"
                log.warning("threshold CA: %s", self.last_error)

    # -- joining (the new agent) ---------------------------------------------------------------
    async def _join_mesh(self) -> None:
        assert self.join_token is not None
        cfg = self.agent.config
        token = self.join_token
        if not cfg.join:
            raise CaStateError("--join-token needs --join HOST:PORT (any member's address)")
        key = Ed25519PrivateKey.generate()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(
                            str(SpiffeId.for_service(self.trust_domain, cfg.service.name))
                        ),
                        x509.DNSName(self.name),
                    ]
                ),
                critical=False,
            )
            .sign(key, None)
        )
        self.phase = "joining"
        delay = 0.2
        while True:
            for host, port in cfg.join:
                for address in ((host, port), (host, port + 1)):
                    try:
                        await self._join_via(address, token, key, csr)
                        return
                    except channel.ChannelRefused as exc:
                        self.last_error = exc.message
                        log.warning("join via %s:%d refused: %s", *address, exc.message)
                        break  # a refusal is an answer: do not try the other port
                    except (channel.ChannelError, JoinError) as exc:
                        self.last_error = str(exc)
                        log.info("join via %s:%d: %s", address[0], address[1], exc)
            await trio.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, 5.0)

    async def _join_via(
        self,
        address: tuple[str, int],
        token: JoinToken,
        key: Ed25519PrivateKey,
        csr: x509.CertificateSigningRequest,
    ) -> None:
        info = await channel.call(
            address, "ca/join/info", None, context=channel.bootstrap_client_context(), timeout=3
        )
        root_der = bytes(info["root"])
        if root_fingerprint(root_der) != token.root_fingerprint:
            raise JoinError(
                f"{address[0]}:{address[1]} serves root {root_fingerprint(root_der)[:16]}…, not"
                f" the {token.root_fingerprint[:16]}… our token pins: wrong mesh or an impostor"
            )
        root = x509.load_der_x509_certificate(root_der)
        context = channel.pinned_client_context(_pem(root))
        reply = await channel.call(
            address,
            "ca/join",
            {
                "token_id": token.token_id,
                "secret": token.secret,
                "csr": csr.public_bytes(serialization.Encoding.DER),
            },
            context=context,
            timeout=30,
        )
        cert = x509.load_der_x509_certificate(bytes(reply["cert"]))
        if not certificate_signature_valid(cert, _raw_key(root)):
            raise JoinError("the certificate we got is not signed by the pinned root")
        if cert.public_key() != key.public_key():
            raise JoinError("the certificate we got is not for our key")
        committee = Committee.from_wire(reply["committee"])
        if committee.root_der != root_der:
            raise JoinError("the committee we got is for another root")
        if committee.public.group_public_key.to_bytes() != _raw_key(root):
            raise JoinError("the committee's group key is not the root key")
        self.committee = committee
        self.state.save_committee(committee)
        self.root_ready.set()
        keys = reply.get("gossip_keys")
        membership = self.agent.membership
        if keys:
            save_keyring(self.state.gossip_key_path, [bytes(k) for k in keys])
            if membership is not None and membership.settings.keyring is not None:
                sync_keyring(membership.settings.keyring, [bytes(k) for k in keys])
        self._install(cert, key)
        if membership is not None:
            for seed in self.agent.config.join:
                self.agent.pool.nursery.start_soon(_join_soon, membership, seed)
        log.info("threshold CA: joined through %s:%d as %s", address[0], address[1], cert.subject)

    # -- joining (the member that helps) -------------------------------------------------------
    async def _join_info(self, body: Any) -> Any:
        committee = self.committee
        if committee is None or committee.root_der is None or not self.agent.tls.loaded:
            raise RpcError(503, f"{self.name} is not a member with a certificate yet")
        return {"root": committee.root_der, "trust_domain": committee.trust_domain}

    async def _join(self, body: Any) -> Any:
        committee = self.committee
        if committee is None or committee.root_der is None or not self.agent.tls.loaded:
            raise RpcError(503, f"{self.name} is not a member with a certificate yet")
        if not isinstance(body, dict):
            raise RpcError(400, "join needs {token_id, secret, csr}")
        try:
            csr = x509.load_der_x509_csr(bytes(body["csr"]))
            service, node, key = self._csr_identity(csr)
        except (KeyError, TypeError, ValueError, IdentityError) as exc:
            raise RpcError(400, f"CSR refused: {exc}") from None
        now = _utcnow()
        tbs = build_leaf_tbs(
            key,
            str(SpiffeId.for_service(self.trust_domain, service)),
            node,
            committee.root,
            now - CLOCK_BACKDATE,
            now - CLOCK_BACKDATE + self.leaf_lifetime,
        )
        auth = {
            "kind": "join",
            "token_id": str(body.get("token_id")),
            "secret": str(body.get("secret")),
            "service": service,
        }
        try:
            result = await self.issue_mtls(tbs, auth)
        except QuorumError as exc:
            raise RpcError(503, f"cannot issue: {exc}") from None
        membership = self.agent.membership
        keyring = membership.settings.keyring if membership is not None else None
        assert self.committee is not None
        return {
            "cert": assemble_certificate(tbs, result.signature).public_bytes(
                serialization.Encoding.DER
            ),
            "committee": self.committee.to_wire(),
            "gossip_keys": list(keyring.keys) if keyring is not None else None,
        }

    def _csr_identity(
        self, csr: x509.CertificateSigningRequest
    ) -> tuple[str, str, Ed25519PublicKey]:
        if not csr.is_signature_valid:
            raise ValueError("CSR signature does not verify (no proof of key possession)")
        key = csr.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("CSR key is not Ed25519")
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
        if len(uris) != 1 or len(dns) != 1:
            raise ValueError("CSR must carry exactly one URI SAN and one DNS SAN (node name)")
        spiffe = SpiffeId.parse(uris[0])
        if spiffe.trust_domain != self.trust_domain or spiffe.service is None:
            raise ValueError(f"{spiffe} is not spiffe://{self.trust_domain}/svc/<service>")
        return spiffe.service, validate_node_name(dns[0]), key

    # -- tokens --------------------------------------------------------------------------------
    async def create_token(self, service: str | None, ttl: float, uses: int | None) -> JoinToken:
        """Write a ``JoinToken`` policy object and hand it to the signers; print-ready token.

        Refused up front when fewer than t signers are reachable (the token could not be
        honoured now) or when MeshConfig admins exist and this agent is not one of them.
        """
        committee = self.committee
        if committee is None or committee.root_der is None:
            raise QuorumError("this agent has no threshold CA state; bootstrap or join first")
        admins = self.agent.policy.compiled().mesh.admins
        me = str(self.agent.tls.identity)
        if admins and me not in admins:
            raise CaForbidden(
                f"this agent runs as {me}, which is not a MeshConfig admin; create tokens on"
                f" an agent running as one of: {', '.join(admins)}"
            )
        reachable = await self._reachable_signers(committee)
        if len(reachable) < committee.threshold:
            raise QuorumError(self._quorum_message(committee, reachable))
        token = JoinToken.generate(root_fingerprint(committee.root_der))
        expires = _utcnow() + dt.timedelta(seconds=ttl)
        spec: dict[str, Any] = {
            "tokenSha256": token_sha256(str(token)),
            "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        if service is not None:
            spec["service"] = service
        if uses is not None:
            spec["maxUses"] = uses
        admin = self.agent.policy_admin
        if admin is None:
            raise QuorumError("policy is not running yet on this agent; try again in a moment")
        written = admin.apply(
            [{"kind": JOIN_TOKEN, "name": token.token_id, "spec": spec}], source="token create"
        )
        if written.status != 200:
            detail = json.loads(written.body)
            raise CaForbidden(f"token not written to policy: {detail.get('error', detail)}")
        confirmed: list[str] = []
        failed: dict[str, str] = {}

        async def hand(member: CommitteeMember) -> None:
            if member.node == self.name:
                if token.token_id in self.agent.policy.compiled().join_tokens:
                    confirmed.append(member.node)
                return
            address = self._address_of(member)
            try:
                reply = await self._call_node(
                    member.node, address, "ca/token/check", {"id": token.token_id}, timeout=5
                )
                if not reply.get("known"):
                    update = self.agent.policy.diff_since(bytes(reply.get("sv") or b""))
                    reply = await self._call_node(
                        member.node,
                        address,
                        "ca/token/check",
                        {"id": token.token_id, "update": update},
                        timeout=5,
                    )
                if reply.get("known"):
                    confirmed.append(member.node)
                else:
                    failed[member.node] = "does not see the token in its policy"
            except (RpcError, ValueError) as exc:
                failed[member.node] = str(exc)

        async with trio.open_nursery() as nursery:
            for member in reachable:
                nursery.start_soon(hand, member)
        if len(confirmed) < committee.threshold:
            from peermesh.ca.issuance import quorum_message

            raise QuorumError(
                f"token {token.token_id} is in policy and will work once it replicates, but"
                " not enough signers have it now: "
                + quorum_message(
                    committee.threshold,
                    confirmed,
                    [n for n in committee.names() if n not in confirmed],
                    failed,
                )
            )
        return token

    async def _reachable_signers(
        self, committee: Committee, timeout: float = 3.0
    ) -> list[CommitteeMember]:
        """Committee members that answer ``ca/info`` as signers of the current epoch."""
        reachable: list[CommitteeMember] = []

        async def probe(member: CommitteeMember) -> None:
            try:
                info = await self._call_node(
                    member.node, self._address_of(member), "ca/info", None, timeout=timeout
                )
                if info.get("signer") and info.get("epoch") == committee.epoch:
                    reachable.append(member)
            except RpcError:
                pass

        async with trio.open_nursery() as nursery:
            for member in committee.members:
                nursery.start_soon(probe, member)
        return reachable

    @staticmethod
    def _quorum_message(committee: Committee, reachable: list[CommitteeMember]) -> str:
        from peermesh.ca.issuance import quorum_message

        names = [m.node for m in reachable]
        return quorum_message(
            committee.threshold, names, [n for n in committee.names() if n not in names], {}
        )

    def _check_local_change(self, what: str) -> None:
        """Refuse early, with the reason, what the signers would refuse anyway."""
        refusal = self.change_authorized(self.agent.tls.identity)
        if refusal is not None:
            raise CaForbidden(f"{what} refused: {refusal}")

    # -- committee changes ---------------------------------------------------------------------
    async def _call_node(
        self, node: str, address: tuple[str, int], method: str, body: Any, timeout: float = 20.0
    ) -> Any:
        if node == self.name:
            handler = {
                "ca/dkg/begin": self._rpc_dkg_begin,
                "ca/dkg/deliver": self._rpc_dkg_deliver,
                "ca/dkg/finish": self._rpc_dkg_finish,
                "ca/info": self._rpc_info,
                "ca/committee/update": self._rpc_committee_update,
            }[method]
            return await handler(ControlRequest(method, self.agent.tls.identity, body))
        return await self.agent.control_client.call_untyped(
            Endpoint(service="", host=address[0], port=address[1]), method, body, timeout=timeout
        )

    async def refresh(self) -> dict[str, Any]:
        """Re-share the root key among the reachable signers; the rest lose their share's use."""
        committee = self.committee
        if committee is None or self.signer is None:
            raise QuorumError(f"{self.name} is not a signer; run 'peermesh ca refresh' on one")
        self._check_local_change("ca refresh")
        reachable = await self._reachable_signers(committee)
        if len(reachable) < committee.threshold:
            raise QuorumError(self._quorum_message(committee, reachable))
        spec = RunSpec(
            "refresh",
            secrets.token_bytes(32),
            committee.threshold,
            {m.node: (m.identifier, m.identity_key) for m in reachable},
            epoch=committee.epoch,
        )
        by_node = {m.node: m for m in reachable}
        await relay_run(
            spec,
            lambda node, step, body: self._call_node(
                node, self._address_of(by_node[node]), "ca/dkg/" + step, body
            ),
        )
        assert self.committee is not None
        await self._broadcast_committee()
        removed = sorted(set(committee.names()) - set(by_node))
        return {
            "epoch": self.committee.epoch,
            "members": self.committee.names(),
            "removed": removed,
        }

    async def enroll(self, node: str) -> dict[str, Any]:
        """Give mesh member ``node`` a share by repair (t helpers; none learns it)."""
        committee = self.committee
        if committee is None or self.signer is None:
            raise QuorumError(f"{self.name} is not a signer; run 'peermesh ca enroll' on one")
        self._check_local_change("ca enroll")
        existing = committee.member(node)
        if existing is not None:
            raise QuorumError(f"{node} is already a signer (identifier {existing.identifier})")
        membership = self.agent.membership
        known = (
            membership.swim.member(node) if membership is not None and membership.running else None
        )
        if known is None or not known.meta.addresses:
            raise QuorumError(
                f"{node} is not a live mesh member this agent knows; check 'peermesh members'"
            )
        target_addr = (known.meta.addresses[0], known.meta.inbound_port)
        info = await self._call_node(node, target_addr, "ca/info", None, timeout=5)
        helpers = await self._reachable_signers(committee)
        if len(helpers) < committee.threshold:
            raise QuorumError(self._quorum_message(committee, helpers))
        helpers = sorted(helpers, key=lambda m: (m.node != self.name, m.node))[
            : committee.threshold
        ]
        new_id = max(m.identifier for m in committee.members) + 1
        participants = {m.node: (m.identifier, m.identity_key) for m in helpers}
        participants[node] = (new_id, bytes(info["identity_key"]))
        spec = RunSpec(
            "repair",
            secrets.token_bytes(32),
            committee.threshold,
            participants,
            target=node,
            epoch=committee.epoch,
        )
        addresses = {m.node: self._address_of(m) for m in helpers}
        addresses[node] = target_addr
        new_member = CommitteeMember(
            node, new_id, bytes(info["identity_key"]), str(info["service"]), target_addr
        )
        new_committee = Committee(
            committee.epoch + 1,
            committee.trust_domain,
            committee.public.with_participant(new_id),
            committee.with_member(new_member).members,
            committee.root_der,
        )

        async def call(n: str, step: str, body: Any) -> Any:
            if step == "begin":
                body = {"spec": body, "committee": new_committee.to_wire()}
            return await self._call_node(n, addresses[n], "ca/dkg/" + step, body)

        await relay_run(spec, call)
        self._adopt_committee(new_committee.to_wire())
        await self._broadcast_committee()
        return {
            "node": node,
            "identifier": new_id,
            "epoch": new_committee.epoch,
            "helpers": sorted(participants),
        }

    async def _broadcast_committee(self) -> None:
        """Tell every live member about the new committee (others fetch it when they notice)."""
        committee = self.committee
        membership = self.agent.membership
        if committee is None or membership is None or not membership.running:
            return
        targets = [
            (m.name, (m.meta.addresses[0], m.meta.inbound_port))
            for m in membership.swim.members()
            if m.name != self.name and m.state.name == "ALIVE" and m.meta.addresses
        ]

        async def push(name: str, address: tuple[str, int]) -> None:
            try:
                await self._call_node(
                    name, address, "ca/committee/update", committee.to_wire(), timeout=3
                )
            except RpcError as exc:
                log.info("committee update to %s: %s", name, exc)

        async with trio.open_nursery() as nursery:
            for name, address in targets:
                nursery.start_soon(push, name, address)

    def _check_change_spec(
        self, spec: RunSpec, committee_wire: Any
    ) -> tuple[Committee | None, frost.PublicKeyPackage]:
        committee = self.committee
        if spec.purpose not in ("refresh", "repair"):
            raise RpcError(403, "only refresh and repair run over mTLS")
        if spec.target == self.name:
            # We are being enrolled: the committee comes with the request; it must match our root.
            try:
                offered = Committee.from_wire(committee_wire)
            except CaStateError as exc:
                raise RpcError(400, str(exc)) from None
            root_der = committee.root_der if committee else None
            if root_der is not None and offered.root_der != root_der:
                raise RpcError(403, "enrolment offers another root than ours")
            if offered.root_der is None or offered.public.group_public_key.to_bytes() != _raw_key(
                x509.load_der_x509_certificate(offered.root_der)
            ):
                raise RpcError(403, "enrolment committee's group key is not its root key")
            base = offered.public.without_participants([spec.participants[self.name][0]])
            return offered, base
        if committee is None or self.signer is None:
            raise RpcError(503, f"{self.name} is not a signer")
        if spec.epoch != committee.epoch:
            raise RpcError(
                409, f"run is for committee epoch {spec.epoch}, ours is {committee.epoch}"
            )
        if spec.threshold != committee.threshold:
            raise RpcError(403, "run changes the threshold")
        for node, (ident, key) in spec.participants.items():
            if node == spec.target:
                continue
            member = committee.member(node)
            if member is None or member.identifier != ident or member.identity_key != key:
                raise RpcError(403, f"run lists {node} differently from our committee")
        return None, committee.public

    async def _rpc_dkg_begin(self, request: ControlRequest) -> Any:
        body = request.body if isinstance(request.body, dict) else {}
        try:
            spec = RunSpec.from_wire(body.get("spec", body))
        except RelayError as exc:
            raise RpcError(400, str(exc)) from None
        if spec.target != self.name:
            # A helper in a refresh or repair: only an authorized coordinator may start one
            # (a repair hands a share to its target, so a rogue one could collect shares).
            refusal = self.change_authorized(request.peer)
            if refusal is not None:
                raise RpcError(403, f"{self.name} refuses the {spec.purpose} run: {refusal}")
        offered, public = self._check_change_spec(spec, body.get("committee"))
        if offered is not None:
            self._pending_enrolment = offered
        share = self.signer.share if self.signer is not None and spec.target != self.name else None
        try:
            return self.sessions.begin(
                spec, self.name, self.state.identity_key, share=share, public=public
            )
        except RelayError as exc:
            raise RpcError(400, str(exc)) from None

    async def _rpc_dkg_deliver(self, request: ControlRequest) -> Any:
        body = request.body
        try:
            return self.sessions.deliver(bytes(body["session"]), body.get("messages") or [])
        except (RelayError, KeyError, TypeError) as exc:
            raise RpcError(400, f"deliver: {exc}") from None

    async def _rpc_dkg_finish(self, request: ControlRequest) -> Any:
        try:
            output = self.sessions.finish(bytes(request.body["session"]))
        except (RelayError, KeyError, TypeError) as exc:
            raise RpcError(400, f"finish: {exc}") from None
        spec = output.spec
        if spec.purpose == "refresh":
            old = self.committee
            assert old is not None and output.share is not None
            members = tuple(m for m in old.members if m.node in spec.participants)
            new = Committee(old.epoch + 1, old.trust_domain, output.public, members, old.root_der)
            self.state.save_share(new.epoch, output.share)
            self.committee = new
            self.state.save_committee(new)
            self._load_signer()
        elif spec.target == self.name:
            offered = self._pending_enrolment
            assert output.share is not None and offered is not None
            self.state.save_share(offered.epoch, output.share)
            self.committee = offered
            self.state.save_committee(offered)
            self._load_signer()
        return {"ok": True}

    # -- status and admin ----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        committee = self.committee
        tls = self.agent.tls
        out: dict[str, Any] = {
            "node": self.name,
            "enabled": self.enabled,
            "phase": self.phase,
            "last_error": self.last_error,
            "signer": self.signer.identifier if self.signer else None,
            "certificate_not_after": tls.not_after.isoformat() if tls.loaded else None,
            "renewals": self.renewals,
            "bootstrap_listener": (
                f"{self.bootstrap_address[0]}:{self.bootstrap_address[1]}"
                if self.bootstrap_address
                else None
            ),
        }
        if committee is None:
            return out
        reachable: dict[str, bool] = {}

        async def probe(member: CommitteeMember) -> None:
            if member.node == self.name:
                reachable[member.node] = self.signer is not None
                return
            try:
                if tls.loaded:
                    info = await self._call_node(
                        member.node, self._address_of(member), "ca/info", None, timeout=2
                    )
                    reachable[member.node] = bool(info.get("signer"))
                else:
                    reachable[member.node] = False
            except RpcError:
                reachable[member.node] = False

        async with trio.open_nursery() as nursery:
            for member in committee.members:
                nursery.start_soon(probe, member)
        out.update(
            {
                "epoch": committee.epoch,
                "threshold": committee.threshold,
                "committee": [
                    {
                        "node": m.node,
                        "id": m.identifier,
                        "address": f"{m.address[0]}:{m.address[1]}",
                        "reachable": reachable.get(m.node, False),
                    }
                    for m in committee.members
                ],
                "reachable_signers": sum(reachable.values()),
                "group_public_key": committee.public.group_public_key.to_bytes().hex(),
            }
        )
        if committee.root_der is not None:
            root = committee.root
            out["root_fingerprint"] = root_fingerprint(committee.root_der)
            out["root_not_after"] = root.not_valid_after_utc.isoformat()
        return out

    async def _admin_status(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.json(200, await self.status())

    async def _admin_tokens(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        grants = self.agent.policy.compiled().join_tokens
        signer = self.signer is not None
        tokens = [
            {
                "id": g.token_id,
                "service": g.service,
                "expiresAt": (
                    None
                    if g.expires is None
                    else dt.datetime.fromtimestamp(g.expires, dt.UTC).isoformat(timespec="seconds")
                ),
                "expired": g.expires is not None and g.expires <= time.time(),
                "maxUses": g.max_uses,
                "usedHere": len(self.token_uses.get(g.token_id, ())) if signer else None,
                "source": g.source,
            }
            for g in sorted(grants.values(), key=lambda g: g.token_id)
        ]
        return AdminResponse.json(200, {"node": self.name, "signer": signer, "tokens": tokens})

    async def _admin_token(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if method != b"POST":
            return AdminResponse.json(405, {"error": "POST /v1/ca/token {service, ttl, uses}"})
        try:
            request = json.loads(body or b"{}")
            service = request.get("service")
            ttl = float(request.get("ttl", 3600))
            raw_uses = request.get("uses", 1)
            uses = None if raw_uses is None else int(raw_uses)
            if (uses is not None and uses < 1) or not 0 < ttl <= MAX_TOKEN_TTL:
                raise ValueError(
                    f"uses must be ≥ 1 (or null: unlimited) and 0 < ttl ≤ {MAX_TOKEN_TTL:.0f} s"
                )
            if service is not None and not isinstance(service, str):
                raise ValueError("service must be a service name")
        except (ValueError, AttributeError, TypeError) as exc:
            return AdminResponse.json(400, {"error": str(exc)})
        try:
            token = await self.create_token(service, ttl, uses)
        except CaForbidden as exc:
            return AdminResponse.json(403, {"error": str(exc)})
        except QuorumError as exc:
            return AdminResponse.json(503, {"error": str(exc)})
        return AdminResponse.json(
            200,
            {
                "token": str(token),
                "id": token.token_id,
                "service": service,
                "ttl": ttl,
                "uses": uses,
            },
        )

    async def _admin_enroll(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        try:
            node = str(json.loads(body or b"{}")["node"])
        except (ValueError, KeyError, TypeError):
            return AdminResponse.json(400, {"error": 'POST /v1/ca/enroll {"node": NAME}'})
        try:
            return AdminResponse.json(200, await self.enroll(node))
        except CaForbidden as exc:
            return AdminResponse.json(403, {"error": str(exc)})
        except (QuorumError, RelayError, RpcError) as exc:
            return AdminResponse.json(503, {"error": str(exc)})

    async def _admin_renew(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        """Renew now (after a suspected key leak, or to test issuance) instead of at half-life."""
        if method != b"POST":
            return AdminResponse.json(405, {"error": "POST /v1/ca/renew"})
        if not self.agent.tls.loaded or self.committee is None:
            return AdminResponse.json(503, {"error": f"{self.name} has no certificate to renew"})
        try:
            result = await self.renew()
        except (QuorumError, TlsError, OSError) as exc:
            return AdminResponse.json(503, {"error": f"renewal failed: {exc}"})
        cert = self.agent.tls.certificate
        return AdminResponse.json(
            200,
            {
                "identity": str(self.agent.tls.identity),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "signers": list(result.signers),
            },
        )

    async def _admin_refresh(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        try:
            return AdminResponse.json(200, await self.refresh())
        except CaForbidden as exc:
            return AdminResponse.json(403, {"error": str(exc)})
        except (QuorumError, RelayError, RpcError) as exc:
            return AdminResponse.json(503, {"error": str(exc)})


async def _join_soon(membership: Membership, address: tuple[str, int]) -> None:
    await membership.join_via(address, attempts=5)


def _raw_key(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    return key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else b""


def _signer_error(status: int, message: str) -> SignerUnavailable:
    """A refusal (403: policy, token) is an answer; anything else means "try another"."""
    if status == 403:
        return SignerRefused(message.split("): ", 1)[-1] if "(403): " in message else message)
    return SignerUnavailable(message)


class CaForbidden(Exception):
    """This agent's identity may not do that (MeshConfig admins, committee identities)."""


def _still_counted(expires: float | None, now: float) -> bool:
    """Keep a token's uses until a day after it expired (clock skew between signers)."""
    return expires is None or expires > now - 86400


def _load_uses(raw: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The signer's token-use ledger from disk (older files kept whole records)."""
    uses: dict[str, tuple[str, ...]] = {}
    for token_id, entry in raw.items():
        used_by = entry.get("used_by", ()) if isinstance(entry, Mapping) else ()
        uses[str(token_id)] = tuple(str(x) for x in used_by)
    return uses


class JoinError(Exception):
    """The member we joined through answered something we cannot accept."""


def channel_wrap(tbs: bytes) -> bytes:
    """A parseable certificate around a bare TBS (signature zeroed) to read its fields."""
    from certs.x509 import _wrap

    return _wrap(tbs, bytes(64))
