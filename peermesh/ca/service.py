"""The agent's CA: bootstrap, join, issuance, renewal and committee changes, wired together.

Decisions live in sans-IO modules (``signer``, ``tokens``, ``roster``, ``rules``,
``renewal``, ``certs/``) and each flow in ``peermesh.ca.flows``; this facade builds them
over one :class:`~peermesh.ca.node.CaNode`, registers the control methods
(``/peermesh.v1/ca/*``) and admin routes (``/v1/ca/*``) and runs the background tasks.
The service is inert for agents without CA flags or CA state (a dev-CA mesh behaves
exactly as before).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from gossip.codec import Keyring, generate_gossip_key, load_keyring
from peermesh.ca import channel
from peermesh.ca import messages as m
from peermesh.ca.flows.admin import CaAdmin
from peermesh.ca.flows.admin_set import AdminSetCoordinator, AdminSetSigning
from peermesh.ca.flows.bootstrap import Bootstrap
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.committee import CommitteeFlows
from peermesh.ca.flows.dkg import DkgParticipant
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.flows.join import Joiner, JoinHelper
from peermesh.ca.flows.listener import BootstrapListener
from peermesh.ca.flows.renewal import Renewal
from peermesh.ca.flows.signing import SigningService
from peermesh.ca.flows.tokens import TokenFlows
from peermesh.ca.issuance import IssuanceResult
from peermesh.ca.node import CaNode, root_fingerprint
from peermesh.ca.ports import CaPorts
from peermesh.ca.settings import CaSettings
from peermesh.ca.signer import Signer
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.ca.tokens import JoinToken
from peermesh.net.admin import AdminServer
from peermesh.net.rpc.router import ControlRouter
from peermesh.policy.anchor import AdminEndorsement

__all__ = ["CaService", "root_fingerprint"]

log = logging.getLogger(__name__)


class CaService:
    """One agent's part of the threshold CA."""

    def __init__(
        self, settings: CaSettings, ports: CaPorts, router: ControlRouter, admin: AdminServer
    ) -> None:
        self.node = node = CaNode(settings, ports)
        calls = MemberCalls(node, router)
        self.admin_set_signing = AdminSetSigning(node)
        self.signing = SigningService(node, self.admin_set_signing)
        self.issuer = Issuer(node, calls, self.signing)
        self.admin_set = AdminSetCoordinator(node, self.issuer)
        self.dkg = DkgParticipant(node)
        self.committee_flows = CommitteeFlows(node, calls, self.issuer)
        self.tokens = TokenFlows(node, calls, self.committee_flows, self.signing)
        self.renewal = Renewal(node, self.issuer)
        self.bootstrap = Bootstrap(node, calls, self.issuer, self.dkg)
        self.joiner = Joiner(node)
        self.listener = BootstrapListener(
            node, self.bootstrap, self.dkg, self.signing, JoinHelper(node, self.issuer)
        )
        self.admin = CaAdmin(node, calls, self.committee_flows, self.tokens, self.renewal)
        router.serve(m.COMMIT, self.signing.rpc_commit)
        router.serve(m.SIGN, self.signing.rpc_sign)
        router.serve(m.TOKEN_CHECK, self.tokens.rpc_check)
        router.serve(m.COMMITTEE, self.committee_flows.rpc_committee)
        router.serve(m.COMMITTEE_UPDATE, self.committee_flows.rpc_update)
        router.serve(m.INFO, self.committee_flows.rpc_info)
        router.serve(m.DKG_BEGIN, self.dkg.rpc_begin)
        router.serve(m.DKG_DELIVER, self.dkg.rpc_deliver)
        router.serve(m.DKG_FINISH, self.dkg.rpc_finish)
        self.admin.register(admin)

    # -- what the agent, its status views and tests read ----------------------------------------
    @property
    def enabled(self) -> bool:
        return self.node.enabled

    @property
    def committee(self) -> Committee | None:
        return self.node.committee

    @property
    def signer(self) -> Signer | None:
        return self.node.signer

    @property
    def renewals(self) -> int:
        return self.node.renewals

    @property
    def last_error(self) -> str | None:
        return self.node.last_error

    @property
    def phase(self) -> str:
        return self.node.phase

    @property
    def identity_ready(self) -> trio.Event:
        return self.node.identity_ready

    @property
    def dkg_seconds(self) -> float | None:
        return self.node.dkg_seconds

    @property
    def issued(self) -> list[IssuanceResult]:
        return self.node.issued

    async def endorse_admin_set(
        self, previous: frozenset[str], epoch: int, admins: frozenset[str], version: str
    ) -> AdminEndorsement:
        """The committee's endorsement of moving ``previous`` to ``admins`` at ``epoch``
        by the MeshConfig version whose content hash is ``version``."""
        return await self.admin_set.endorse(previous, epoch, admins, version)

    def initial_keyring(self) -> Keyring | None:
        """The gossip keyring when no --gossip-key-file was given (bootstrap or join mode)."""
        node = self.node
        if node.state.gossip_key_path.exists():
            return load_keyring(node.state.gossip_key_path)
        if node.bootstrap_token:
            return Keyring([channel.gossip_key_from_token(node.bootstrap_token)])
        if node.join_token:
            # A placeholder until the mesh hands us its keyring with our certificate.
            return Keyring([generate_gossip_key()])
        return None

    # -- operations ----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return await self.admin.status()

    async def renew(self) -> IssuanceResult:
        return await self.renewal.renew()

    async def issue_mtls(self, tbs: bytes, auth: m.SignAuth) -> IssuanceResult:
        return await self.issuer.issue_mtls(tbs, auth)

    async def mtls_signer_call(self, member: CommitteeMember, method: str, body: Any) -> Any:
        """A ``threshold_sign`` signer call over mTLS (tests drive issuance with it)."""
        return await self.issuer.mtls_signer_call(member, method, body)

    async def create_token(self, service: str | None, ttl: float, uses: int | None) -> JoinToken:
        return await self.tokens.create(service, ttl, uses)

    async def refresh(self) -> dict[str, Any]:
        return await self.committee_flows.refresh()

    async def enroll(self, node: str) -> dict[str, Any]:
        return await self.committee_flows.enroll(node)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the bootstrap listener and get/keep a certificate; returns only if disabled."""
        if not self.enabled:
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            await self.listener.start(nursery)
            task_status.started()
            try:
                await self._obtain_identity()
            except Exception as exc:
                self.node.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("threshold CA: cannot obtain an identity")
                return
            nursery.start_soon(self.renewal.loop)

    async def _obtain_identity(self) -> None:
        node = self.node
        tls = node.ports.tls
        committee = node.committee
        if committee is not None and committee.root_der is not None:
            node.root_ready.set()
        if tls.loaded and committee is not None and committee.root_der is not None:
            node.phase = "ready"
            node.identity_ready.set()
            return
        if node.bootstrap_token and (committee is None or committee.member(node.name)):
            await self.bootstrap.run()
        elif node.join_token:
            await self.joiner.run()
        elif not tls.loaded:
            node.phase = "no identity"
            node.last_error = (
                "no certificate and no way to get one: pass --join-token (from 'peermesh token"
                " create' on a member) with --join HOST:PORT"
            )
            log.warning("threshold CA: %s", node.last_error)
            return
        node.phase = "ready"
        node.last_error = None
        node.identity_ready.set()
