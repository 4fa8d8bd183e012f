"""What the threshold CA needs from the agent around it, one small handle per need.

The composition root hands these in; nothing in ``peermesh.ca`` knows the Agent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.spiffe import SpiffeId
from gossip.messages import MemberState
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin import AdminResponse
from peermesh.net.rpc.method import Req, Resp, RpcMethod
from peermesh.policy.compiled import CompiledPolicy

#: How gossip push-pull state reaches a peer: ``await transport((host, port), state)``.
PushPull = Callable[[tuple[str, int], bytes], Awaitable[Any]]


class ControlCalls(Protocol):
    """Open a control call to another member over mTLS."""

    async def call(
        self, endpoint: Endpoint, method: RpcMethod[Req, Resp], body: Req, *, timeout: float = ...
    ) -> Resp: ...


class PolicyView(Protocol):
    """The replicated policy: what it compiles to (join-token grants, MeshConfig) and sync."""

    def compiled(self) -> CompiledPolicy: ...

    @property
    def admins(self) -> frozenset[str]:
        """The admin set this replica's MeshConfig walk gives."""

    @property
    def admin_epoch(self) -> int:
        """How many endorsed admin-set changes that walk found."""

    def state_vector(self) -> bytes: ...

    def diff_since(self, remote_state_vector: bytes) -> bytes: ...

    def apply_update(self, update: bytes, *, source: str) -> object: ...


class PolicyWriter(Protocol):
    """Write policy objects as this agent (how a join token is created)."""

    def apply(self, objects: Sequence[Mapping[str, Any]], *, source: str) -> AdminResponse: ...


class TlsIdentity(Protocol):
    """The agent's current mesh certificate, as loaded from its data dir."""

    @property
    def loaded(self) -> bool: ...

    @property
    def generation(self) -> int: ...

    @property
    def cert_path(self) -> Path: ...

    @property
    def key_path(self) -> Path: ...

    @property
    def identity(self) -> SpiffeId: ...

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def not_after(self) -> dt.datetime: ...

    def maybe_reload(self) -> object: ...


class IdentityInstaller(Protocol):
    """Install a new certificate and key as the agent's identity, and start using it."""

    def install(
        self, cert: x509.Certificate, key: Ed25519PrivateKey, roots: Sequence[x509.Certificate]
    ) -> None: ...


class Background(Protocol):
    """Spawn a task that outlives the call that starts it (in the agent's nursery)."""

    def spawn(self, task: Callable[[], Awaitable[object]]) -> None: ...


@dataclass(frozen=True)
class MeshMember:
    """One gossip member as the CA sees it: its state and where its inbound listener is."""

    name: str
    state: MemberState
    address: tuple[str, int] | None


class Gossip(Protocol):
    """The agent's gossip membership (``enabled`` is False when gossip is off)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def running(self) -> bool: ...

    def members(self) -> Sequence[MeshMember]: ...

    def member(self, name: str) -> MeshMember | None: ...

    def gossip_keys(self) -> list[bytes] | None:
        """The keyring's keys (a joiner gets them with its certificate), or None."""

    def sync_keys(self, keys: Sequence[bytes]) -> None:
        """Adopt the mesh's keyring (a joiner's placeholder key is replaced)."""

    def answer_push_pull(self, state: bytes) -> bytes: ...

    def use_transport(self, transport: PushPull) -> None:
        """Exchange push-pull state over ``transport`` until an identity is installed."""

    async def join_via(self, address: tuple[str, int], *, attempts: int) -> object: ...


class Listeners(Protocol):
    """Where the agent listens: its inbound address; where the CA's listener ended up."""

    def inbound(self) -> tuple[str, int]: ...

    def publish(self, name: str, address: tuple[str, int]) -> None: ...


class Discovery(Protocol):
    """mDNS candidates in a trust domain (inbound addresses), for the bootstrap roster."""

    def candidates(self, trust_domain: str) -> Sequence[tuple[str, int]]: ...


@dataclass(frozen=True)
class CaPorts:
    """Every handle the CA gets from the agent."""

    control: Callable[[], ControlCalls]
    policy: PolicyView
    policy_writer: Callable[[], PolicyWriter | None]
    tls: TlsIdentity
    installer: IdentityInstaller
    gossip: Gossip
    background: Background
    listeners: Listeners
    discovery: Discovery
