"""Committee changes over mTLS: refresh (re-share among the reachable), enrol (repair).

The coordinator of a change records it in policy once the change is done, as a signed
``CommitteeChange/epoch-N`` object: the audit trail of who changed the committee and
when. The record never feeds back into the committee, which changes only here.

Also what members ask each other about the committee: ``ca/info``, ``ca/committee``
and the ``ca/committee/update`` broadcast after a change.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import trio

from gossip.messages import MemberState
from peermesh.ca import messages as m
from peermesh.ca.dkgrelay import RelayCall, RunSpec, relay_run
from peermesh.ca.errors import CaForbidden, CaUnavailable, QuorumError
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.dkg import StepCall, per_node, relay_steps
from peermesh.ca.flows.issue import Issuer
from peermesh.ca.issuance import quorum_message
from peermesh.ca.node import CaNode
from peermesh.ca.state import Committee, CommitteeMember
from peermesh.core.errors import PeermeshError
from peermesh.net.rpc import ControlRequest, Empty
from peermesh.policy.model import (
    COMMITTEE_CHANGE,
    CommitteeChangeKind,
    CommitteeChangeSpec,
    committee_change_name,
)

log = logging.getLogger(__name__)


def missing_quorum(committee: Committee, reachable: list[CommitteeMember]) -> str:
    names = [x.node for x in reachable]
    return quorum_message(
        committee.threshold, names, [n for n in committee.names() if n not in names], {}
    )


class CommitteeFlows:
    """This agent's committee: what it tells others, and the changes it coordinates."""

    def __init__(self, node: CaNode, calls: MemberCalls, issuer: Issuer) -> None:
        self.node = node
        self.calls = calls
        self.issuer = issuer

    # -- what members ask -----------------------------------------------------------------
    def info(self) -> m.InfoReply:
        node = self.node
        return m.InfoReply(
            node=node.name,
            service=node.settings.service,
            identity_key=node.state.identity_public,
            signer=node.signer is not None,
            epoch=node.committee.epoch if node.committee else None,
        )

    async def rpc_info(self, request: ControlRequest[Empty]) -> m.InfoReply:
        return self.info()

    async def rpc_committee(self, request: ControlRequest[Empty]) -> m.CommitteeMessage:
        if self.node.committee is None:
            raise CaUnavailable(f"{self.node.name} has no committee state")
        return m.CommitteeMessage(self.node.committee)

    async def rpc_update(self, request: ControlRequest[m.CommitteeMessage]) -> m.AdoptedReply:
        refusal = self.node.change_authorized(request.peer, request.node)
        if refusal is not None:
            raise CaForbidden(f"{self.node.name} refuses the committee update: {refusal}")
        return m.AdoptedReply(self.node.adopt_committee(request.body.committee))

    async def reachable_signers(
        self, committee: Committee, timeout: float = 3.0
    ) -> list[CommitteeMember]:
        """Committee members that answer ``ca/info`` as signers of the current epoch."""
        reachable: list[CommitteeMember] = []

        async def probe(member: CommitteeMember) -> None:
            address = self.node.address_of(member)
            try:
                info = await self.calls.call(member.node, address, m.INFO, Empty(), timeout=timeout)
            except PeermeshError:
                return
            if info.signer and info.epoch == committee.epoch:
                reachable.append(member)

        async with trio.open_nursery() as nursery:
            for member in committee.members:
                nursery.start_soon(probe, member)
        return reachable

    def check_local_change(self, what: str) -> None:
        """Refuse early, with the reason, what the signers would refuse anyway."""
        refusal = self.node.change_authorized(self.node.ports.tls.identity, self.node.name)
        if refusal is not None:
            raise CaForbidden(f"{what} refused: {refusal}")

    def _relay(
        self, addresses: dict[str, tuple[str, int]], committee: Committee | None = None
    ) -> RelayCall:
        calls = self.calls

        def steps(name: str) -> StepCall:
            address = addresses[name]

            async def begin(body: m.DkgBegin) -> m.DkgMessages:
                if committee is not None:
                    body = m.DkgBegin(body.spec, committee)
                return await calls.call(name, address, m.DKG_BEGIN, body)

            return relay_steps(
                begin,
                lambda body: calls.call(name, address, m.DKG_DELIVER, body),
                lambda body: calls.call(name, address, m.DKG_FINISH, body),
            )

        return per_node(steps)

    # -- changes this agent coordinates -----------------------------------------------------
    async def refresh(self) -> dict[str, Any]:
        """Re-share the root key among the reachable signers; the rest lose their share's use."""
        node = self.node
        committee = node.committee
        if committee is None or node.signer is None:
            raise QuorumError(f"{node.name} is not a signer; run 'peermesh ca refresh' on one")
        self.check_local_change("ca refresh")
        reachable = await self.reachable_signers(committee)
        if len(reachable) < committee.threshold:
            raise QuorumError(missing_quorum(committee, reachable))
        spec = RunSpec(
            "refresh",
            secrets.token_bytes(32),
            committee.threshold,
            {x.node: (x.identifier, x.identity_key) for x in reachable},
            epoch=committee.epoch,
        )
        addresses = {x.node: node.address_of(x) for x in reachable}
        await relay_run(spec, self._relay(addresses))
        assert node.committee is not None
        await self.endorse(node.committee)
        await self.broadcast()
        removed = sorted(set(committee.names()) - set(addresses))
        return {
            "epoch": node.committee.epoch,
            "members": node.committee.names(),
            "removed": removed,
            **self.record(CommitteeChangeKind.REFRESH, node.committee, removed=removed),
        }

    async def enroll(self, name: str) -> dict[str, Any]:
        """Give mesh member ``name`` a share by repair (t helpers; none learns it)."""
        node = self.node
        committee = node.committee
        if committee is None or node.signer is None:
            raise QuorumError(f"{node.name} is not a signer; run 'peermesh ca enroll' on one")
        self.check_local_change("ca enroll")
        existing = committee.member(name)
        if existing is not None:
            raise QuorumError(f"{name} is already a signer (identifier {existing.identifier})")
        gossip = node.ports.gossip
        known = gossip.member(name) if gossip.running else None
        if known is None or known.address is None:
            raise QuorumError(
                f"{name} is not a live mesh member this agent knows; check 'peermesh members'"
            )
        target_addr = known.address
        info = await self.calls.call(name, target_addr, m.INFO, Empty(), timeout=5)
        helpers = await self.reachable_signers(committee)
        if len(helpers) < committee.threshold:
            raise QuorumError(missing_quorum(committee, helpers))
        helpers = sorted(helpers, key=lambda x: (x.node != node.name, x.node))[
            : committee.threshold
        ]
        new_id = max(x.identifier for x in committee.members) + 1
        participants = {x.node: (x.identifier, x.identity_key) for x in helpers}
        participants[name] = (new_id, info.identity_key)
        spec = RunSpec(
            "repair",
            secrets.token_bytes(32),
            committee.threshold,
            participants,
            target=name,
            epoch=committee.epoch,
        )
        addresses = {x.node: node.address_of(x) for x in helpers}
        addresses[name] = target_addr
        new_member = CommitteeMember(name, new_id, info.identity_key, info.service, target_addr)
        new_committee = Committee(
            committee.epoch + 1,
            committee.trust_domain,
            committee.public.with_participant(new_id),
            committee.with_member(new_member).members,
            committee.root_der,
        )
        await relay_run(spec, self._relay(addresses, new_committee))
        node.adopt_committee(new_committee)
        await self.broadcast()
        return {
            "node": name,
            "identifier": new_id,
            "epoch": new_committee.epoch,
            "helpers": sorted(participants),
            **self.record(CommitteeChangeKind.ENROLL, new_committee, added=[name]),
        }

    def record(
        self,
        change: CommitteeChangeKind,
        after: Committee,
        *,
        added: Sequence[str] = (),
        removed: Sequence[str] = (),
    ) -> dict[str, str]:
        """Write the policy record of a change this agent just made (signed as this agent).

        The change is done and stays done whatever happens here; a record that cannot be
        written (no policy yet, a full disk) is reported in the reply and logged, not
        raised, so the caller is never told a change failed that took effect.
        """
        spec = CommitteeChangeSpec(
            change, after.epoch, after.threshold, tuple(after.names()), tuple(added), tuple(removed)
        )
        name = committee_change_name(after.epoch)
        key = f"{COMMITTEE_CHANGE}/{name}"
        writer = self.node.ports.policy_writer()
        problem = "policy is not running on this agent"
        if writer is not None:
            try:
                written = writer.apply(
                    [{"kind": COMMITTEE_CHANGE, "name": name, "spec": spec.to_dict()}],
                    source=f"ca {change.value.lower()}",
                )
            except PeermeshError as exc:
                problem = str(exc)
            else:
                if written.status == 200:
                    return {"record": key}
                problem = str(json.loads(written.body).get("error", written.status))
        log.warning(
            "committee epoch %d changed but %s was not recorded: %s", after.epoch, key, problem
        )
        return {"record_error": f"{key} not written to policy: {problem}"}

    async def endorse(self, committee: Committee) -> None:
        """Have t new-share holders sign the refreshed committee: the proof others need
        before they drop a share the refresh left out (:mod:`peermesh.ca.succession`)."""
        statement = committee.statement()
        result = await self.issuer.sign(
            statement,
            m.SignAuth(m.AuthKind.ENDORSE),
            self.issuer.mtls_signer_call,
            committee=committee,
        )
        self.node.adopt_committee(replace(committee, endorsement=result.signature))
        log.info("committee epoch %d endorsed by %s", committee.epoch, result.signers)

    async def broadcast(self) -> None:
        """Tell every live member about the new committee (others fetch it when they notice)."""
        node = self.node
        committee = node.committee
        gossip = node.ports.gossip
        if committee is None or not gossip.running:
            return
        targets = [
            (x.name, x.address)
            for x in gossip.members()
            if x.name != node.name and x.state is MemberState.ALIVE and x.address is not None
        ]
        update = m.CommitteeMessage(committee)

        async def push(name: str, address: tuple[str, int]) -> None:
            try:
                await self.calls.call(name, address, m.COMMITTEE_UPDATE, update, timeout=3)
            except PeermeshError as exc:
                log.info("committee update to %s: %s", name, exc)

        async with trio.open_nursery() as nursery:
            for name, address in targets:
                if address is not None:
                    nursery.start_soon(push, name, address)
