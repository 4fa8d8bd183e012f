"""The agent's live state, read for the mesh view and the metrics collector.

These adapters belong to the composition root: they are the one place that knows
which component holds which figure, so that observability only sees the small
``MeshSources`` and ``AgentState`` interfaces it declares.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gossip.messages import MemberState
from peermesh.ca.ports import MeshMember, PushPull
from peermesh.ca.service import CaService
from peermesh.config import AgentConfig
from peermesh.core.endpoint import Endpoint
from peermesh.membership.gossip import Membership, sync_keyring
from peermesh.net.identity_files import install_identity
from peermesh.net.pool import PeerPool
from peermesh.net.tls import MeshTls
from peermesh.observability.collectors import (
    CertificateFigures,
    GossipFigures,
    PeerFigures,
    PolicyFigures,
)
from peermesh.policy.replicator import Peer, PolicyReplicator
from peermesh.policy.store import PolicyStore
from peermesh.proxy.tracker import ConnectionTracker


class AgentParts(Protocol):
    """The agent's components these readers look at (each may still be starting)."""

    config: AgentConfig
    tls: MeshTls
    policy: PolicyStore
    ca: CaService
    membership: Membership | None
    mdns: Any
    replicator: PolicyReplicator | None
    outbound_tracker: ConnectionTracker
    inbound_tracker: ConnectionTracker
    addresses: dict[str, tuple[str, int]]
    departures: deque[tuple[str, str, float]]

    @property
    def ready(self) -> bool: ...
    @property
    def pool(self) -> PeerPool: ...
    @property
    def running_pool(self) -> PeerPool | None: ...
    def policy_peers(self) -> list[Peer]: ...


class AgentSources:
    """``MeshSources`` and ``AgentState`` over one running agent."""

    def __init__(self, agent: AgentParts) -> None:
        self._agent = agent

    # MeshSources -----------------------------------------------------------------------
    @property
    def node(self) -> str:
        return self._agent.config.name

    @property
    def service(self) -> str:
        return self._agent.config.service.name

    @property
    def ready(self) -> bool:
        return self._agent.ready

    @property
    def has_join_seeds(self) -> bool:
        return bool(self._agent.config.gossip.join)

    def recent_departures(self, since: float) -> list[tuple[str, str, float]]:
        """(member, "dead"|"left", wall-clock time) for members gone at or after ``since``."""
        return [d for d in self._agent.departures if d[2] >= since]

    def member_digest(self) -> str | None:
        membership = self._agent.membership
        if membership is None or not membership.running:
            return None
        return str(membership.status()["digest"])

    def policy_digest(self) -> str:
        return self._agent.policy.digest()

    def state_vector_digest(self) -> str | None:
        replicator = self._agent.replicator
        if replicator is None:
            return None
        return str(replicator.local_status()["state_vector_digest"])

    def peer_endpoints(self) -> list[Endpoint]:
        return [Endpoint(service="", host=p.host, port=p.port) for p in self._agent.policy_peers()]

    async def signer_quorum(self) -> tuple[int, int] | None:
        ca = self._agent.ca
        if ca.committee is None:
            return None
        status = await ca.status()
        return int(status.get("reachable_signers", 0)), int(status.get("threshold", 0))

    # AgentState ------------------------------------------------------------------------
    def gossip(self) -> GossipFigures | None:
        membership = self._agent.membership
        if membership is None or not membership.running:
            return None
        swim = membership.swim
        counts: dict[str, int] = {state.name.lower(): 0 for state in MemberState}
        for member in swim.members():
            state = member.state.name.lower()
            counts[state] = counts.get(state, 0) + 1
        stats = swim.stats
        events = {
            f.name: getattr(stats, f.name)
            for f in dataclasses.fields(stats)
            if isinstance(getattr(stats, f.name), int)
        }
        codec = swim.codec
        return GossipFigures(
            members=counts,
            datagrams_sent=codec.sent,
            datagrams_received=codec.accepted,
            drops={reason.value: n for reason, n in swim.drops.items()},
            events=events,
        )

    def mdns_discovered(self) -> int | None:
        mdns = self._agent.mdns
        return None if mdns is None else len(mdns.discovered)

    def policy(self) -> PolicyFigures:
        store = self._agent.policy
        replicator = self._agent.replicator
        return PolicyFigures(
            objects=len(store),
            version=store.version,
            sync_bytes_sent=None if replicator is None else replicator.sync_bytes_sent,
            sync_bytes_received=None if replicator is None else replicator.sync_bytes_received,
            updates_refused=store.refused_updates,
            admin_changes_unendorsed=store.unendorsed_admin_changes,
        )

    def certificate(self) -> CertificateFigures:
        tls = self._agent.tls
        ca = self._agent.ca
        signer = ca.signer
        expires_in = None
        if tls.loaded:
            expires_in = (tls.not_after - dt.datetime.now(dt.UTC)).total_seconds()
        return CertificateFigures(
            expires_in=expires_in,
            renewals=ca.renewals,
            shares_released=None if signer is None else signer.shares_released,
            shares_refused=0 if signer is None else signer.refusals,
        )

    def peers(self) -> Sequence[PeerFigures]:
        pool = self._agent.running_pool
        if pool is None:
            return []
        return [PeerFigures(p.address, p.connections, p.streams) for p in pool.status()]

    def open_streams(self) -> Mapping[str, int]:
        return {
            "outbound": self._agent.outbound_tracker.streams,
            "inbound": self._agent.inbound_tracker.streams,
        }


class CaHandles:
    """What the threshold CA gets of the agent: gossip, identity install, tasks, listeners."""

    def __init__(self, agent: AgentParts) -> None:
        self._agent = agent

    # Gossip -------------------------------------------------------------------------------
    @property
    def _membership(self) -> Membership | None:
        return self._agent.membership

    @property
    def enabled(self) -> bool:
        return self._membership is not None

    @property
    def running(self) -> bool:
        membership = self._membership
        return membership is not None and membership.running

    def members(self) -> list[MeshMember]:
        membership = self._membership
        if membership is None:
            return []
        return [_mesh_member(m) for m in membership.swim.members()]

    def member(self, name: str) -> MeshMember | None:
        membership = self._membership
        known = membership.swim.member(name) if membership is not None else None
        return None if known is None else _mesh_member(known)

    def gossip_keys(self) -> list[bytes] | None:
        membership = self._membership
        keyring = membership.settings.keyring if membership is not None else None
        return None if keyring is None else list(keyring.keys)

    def sync_keys(self, keys: Sequence[bytes]) -> None:
        membership = self._membership
        if membership is not None and membership.settings.keyring is not None:
            sync_keyring(membership.settings.keyring, keys)

    def answer_push_pull(self, state: bytes) -> bytes:
        membership = self._membership
        assert membership is not None
        return membership.answer_push_pull(state)

    def use_transport(self, transport: PushPull) -> None:
        membership = self._membership
        if membership is not None:
            membership.transport = transport

    async def join_via(self, address: tuple[str, int], *, attempts: int) -> bool:
        membership = self._membership
        return membership is not None and await membership.join_via(address, attempts=attempts)

    # IdentityInstaller --------------------------------------------------------------------
    def install(
        self, cert: x509.Certificate, key: Ed25519PrivateKey, roots: Sequence[x509.Certificate]
    ) -> None:
        agent = self._agent
        install_identity(agent.config.data_dir, cert, key, list(roots))
        agent.tls.reload()
        membership = self._membership
        if membership is not None:
            membership.transport = membership._mtls_exchange  # gossip over mTLS from now on

    # Background ---------------------------------------------------------------------------
    def spawn(self, task: Callable[[], Awaitable[object]]) -> None:
        self._agent.pool.nursery.start_soon(task)

    # Listeners ----------------------------------------------------------------------------
    def inbound(self) -> tuple[str, int]:
        return self._agent.addresses["inbound"]

    def publish(self, name: str, address: tuple[str, int]) -> None:
        self._agent.addresses[name] = address

    # Discovery ----------------------------------------------------------------------------
    def candidates(self, trust_domain: str) -> list[tuple[str, int]]:
        mdns = self._agent.mdns
        if mdns is None:
            return []
        return [
            (c.address, c.inbound_port)
            for c in mdns.discovered.values()
            if c.trust_domain == trust_domain
        ]


def _mesh_member(member: Any) -> MeshMember:
    meta = member.meta
    address = (meta.addresses[0], meta.inbound_port) if meta.addresses else None
    return MeshMember(member.name, member.state, address)
