"""Anti-entropy for the policy store over the agents' mTLS HTTP/2 connections.

Control RPCs under ``/peermesh.v1/policy/`` (messages in :mod:`~peermesh.policy.messages`):

- ``policy/push`` — body: a CRDT update. The receiver validates it whole (on a scratch
  copy) before merging; if it learned something new it forwards the same update to a
  few other peers, once. The sender is never sent its own update back.
- ``policy/sync`` — body: ``{"sv": state vector}``; answer: ``{"update": what the caller
  lacks, "sv": ours}``; the caller then pushes what *we* lack. Run every
  ``sync_interval`` with one random peer, so partitions heal without any edit.
- ``policy/status`` — this agent's version and digests; ``policy/edit`` — an edit from
  an identity MeshConfig lists as an admin.

A local edit is pushed at once to ``fanout`` peers. This is the trio shell; the store
(``PolicyStore``) is sans-IO and decides everything about validity and winners, including
record signatures and MeshConfig admin authority (``peermesh.policy.authorship``): an
update holding an unsigned or forged record is refused whole (400 to a push, a warning
for a sync reply) and the sender resends a diff later.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from peermesh.core.durable import StorageFailed
from peermesh.core.endpoint import Endpoint
from peermesh.net.rpc import ControlRequest, Empty, RpcError
from peermesh.net.rpc.client import ControlClient
from peermesh.net.rpc.router import ControlRouter
from peermesh.policy.crdt import decode_state_vector
from peermesh.policy.errors import UpdateRefused
from peermesh.policy.messages import (
    EDIT,
    PUSH,
    STATUS,
    SYNC,
    EditReply,
    EditRequest,
    PushReply,
    PushRequest,
    StatusReply,
    SyncReply,
    SyncRequest,
)
from peermesh.policy.store import PolicyStore

__all__ = ["EDIT", "PUSH", "STATUS", "SYNC", "Peer", "PolicyReplicator", "state_vector_digest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """Another agent's inbound address, named for logs."""

    node: str
    host: str
    port: int


def state_vector_digest(sv: bytes) -> str:
    """A digest of *what* a replica has seen, independent of how the vector is encoded.

    Yjs writes a state vector's (client, clock) pairs in hash-map order, so two replicas
    that have seen exactly the same edits can encode it differently: hash it sorted.
    """
    try:
        pairs = sorted(decode_state_vector(sv).items())
    except (ValueError, IndexError):
        return hashlib.sha256(sv).hexdigest()[:16]
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]


class PolicyReplicator:
    """Spreads local edits and heals differences with random peers."""

    def __init__(
        self,
        store: PolicyStore,
        control: ControlClient,
        router: ControlRouter,
        peers: Callable[[], Sequence[Peer]],
        *,
        fanout: int = 3,
        sync_interval: float = 1.0,
        rng: random.Random | None = None,
        edit_authorizer: Callable[[str], bool] | None = None,
        on_remote_edit: Callable[[Sequence[Any], str], EditReply] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
    ) -> None:
        self.on_internal_error = on_internal_error
        self.internal_errors = 0
        self.store = store
        self.control = control
        self.peers = peers
        self.fanout = fanout
        self.sync_interval = sync_interval
        self.rng = rng or random.Random()
        self.edit_authorizer = edit_authorizer
        self.on_remote_edit = on_remote_edit
        self._nursery: trio.Nursery | None = None
        self.pushes_sent = 0
        self.pushes_failed = 0
        self.syncs = 0
        self.sync_bytes_sent = 0
        self.sync_bytes_received = 0
        self.refused = 0
        self.last_refusal: str | None = None
        self.last_apply_time: float | None = None
        router.serve(PUSH, self._on_push)
        router.serve(SYNC, self._on_sync)
        router.serve(STATUS, self._on_status)
        router.serve(EDIT, self._on_edit)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(self.sync_interval * self.rng.uniform(0.5, 1.5))
                peers = list(self.peers())
                if peers:
                    nursery.start_soon(self._isolated, self.sync_with, self.rng.choice(peers))

    async def _isolated(self, exchange: Callable[[Peer], Awaitable[object]], peer: Peer) -> None:
        """Run one exchange with one peer; whatever it raises ends only that exchange."""
        try:
            await exchange(peer)
        except Exception:
            self._internal_error(peer)

    def _internal_error(self, peer: Peer) -> None:
        self.internal_errors += 1
        log.exception("policy exchange with %s failed", peer.node)
        if self.on_internal_error is not None:
            self.on_internal_error("replicator")

    # -- outgoing -----------------------------------------------------------------------
    def spread(self, update: bytes, *, exclude: str | None = None) -> None:
        """Push ``update`` to ``fanout`` random peers (fire and forget)."""
        if not update or self._nursery is None:
            return
        peers = [p for p in self.peers() if p.node != exclude]
        for peer in self.rng.sample(peers, min(self.fanout, len(peers))):
            self._nursery.start_soon(self._push, peer, update)

    async def _push(self, peer: Peer, update: bytes) -> None:
        try:
            await self.control.call(
                _endpoint(peer), PUSH, PushRequest(update, self.store.node), timeout=5.0
            )
            self.pushes_sent += 1
            self.sync_bytes_sent += len(update)
        except RpcError as exc:
            self.pushes_failed += 1
            log.debug("policy push to %s failed: %s", peer.node, exc)
        except Exception:  # one push to one peer ends alone (it runs in our nursery)
            self.pushes_failed += 1
            self._internal_error(peer)

    async def sync_with(self, peer: Peer) -> bool:
        """Two-way state-vector exchange: we get what we lack, then send what they lack."""
        try:
            reply = await self.control.call(
                _endpoint(peer), SYNC, SyncRequest(self.store.state_vector()), timeout=5.0
            )
        except RpcError as exc:
            log.debug("policy sync with %s failed: %s", peer.node, exc)
            return False
        self.sync_bytes_received += len(reply.update)
        try:
            self._merge(reply.update, source=f"sync from {peer.node}")
        except UpdateRefused as exc:
            log.warning("policy sync from %s refused: %s", peer.node, exc.reason)
            return False
        except StorageFailed as exc:
            # Nothing was kept; the next sync asks for the same records again.
            log.warning("policy sync from %s not stored: %s", peer.node, exc)
            return False
        if reply.sv is not None:
            try:
                missing = self.store.diff_since(reply.sv)
            except ValueError:
                return False
            if len(missing) > 2:  # an empty Yjs update is two bytes
                await self._push(peer, missing)
        self.syncs += 1
        return True

    def _merge(self, update: bytes, *, source: str) -> bool:
        try:
            result = self.store.apply_update(update, source=source)
        except UpdateRefused as exc:
            self.refused += 1
            self.last_refusal = str(exc)
            raise
        if result.new:
            self.last_apply_time = trio.current_time()
        return result.new

    # -- incoming -----------------------------------------------------------------------
    async def _on_push(self, request: ControlRequest[PushRequest]) -> PushReply:
        push = request.body
        source = str(request.peer)
        try:
            new = self._merge(push.update, source=f"push from {push.sender or source}")
        except UpdateRefused as exc:
            raise RpcError(400, f"policy update refused: {exc.reason}", code=exc.code) from None
        if new:
            # Forward once, never back to the node it came from; a replica that learned
            # nothing new stops the spread.
            self.spread(push.update, exclude=push.sender)
        return PushReply(version=self.store.version, digest=self.store.digest())

    async def _on_sync(self, request: ControlRequest[SyncRequest]) -> SyncReply:
        try:
            update = self.store.diff_since(request.body.sv)
        except ValueError as exc:
            raise RpcError(400, str(exc)) from None
        self.sync_bytes_sent += len(update)
        return SyncReply(update=update, sv=self.store.state_vector())

    async def _on_status(self, request: ControlRequest[Empty]) -> StatusReply:
        return self.status_reply()

    async def _on_edit(self, request: ControlRequest[EditRequest]) -> EditReply:
        """Edits from a peer agent, allowed only for identities MeshConfig lists as admins."""
        principal = str(request.peer)
        if self.edit_authorizer is None or not self.edit_authorizer(principal):
            raise RpcError(
                403,
                f"{principal} may not edit policy: only the local admin port and identities"
                " listed in MeshConfig spec.admins may",
            )
        assert self.on_remote_edit is not None
        return self.on_remote_edit(request.body.objects, principal)

    def status_reply(self) -> StatusReply:
        return StatusReply(
            version=self.store.version,
            digest=self.store.digest(),
            state_vector_digest=state_vector_digest(self.store.state_vector()),
            objects=len(self.store),
            admins=tuple(sorted(self.store.admins)),
        )

    def local_status(self) -> dict[str, Any]:
        """:meth:`status_reply` as JSON, for the admin API."""
        return self.status_reply().to_wire()


def _endpoint(peer: Peer) -> Endpoint:
    return Endpoint(service="", host=peer.host, port=peer.port, node=peer.node)
