"""The participant's side of relayed runs: the bootstrap DKG, refresh and repair.

A coordinator relays broadcasts between participants (``dkgrelay.relay_run``); each
participant checks the run against its own state (``rules``) before its machine
starts, and persists what a finished run hands it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from peermesh.ca import messages as m
from peermesh.ca.dkgrelay import RelayCall
from peermesh.ca.errors import CaForbidden
from peermesh.ca.node import CaNode
from peermesh.ca.roster import Roster
from peermesh.ca.rules import check_bootstrap_spec, check_change_spec
from peermesh.ca.state import Committee
from peermesh.ca.succession import check_own_share, check_shares_consistent
from peermesh.net.rpc import ControlRequest

log = logging.getLogger(__name__)

#: One relay step as a typed call: (step name, wire body) -> wire reply.
StepCall = Callable[[str, Any], Awaitable[Any]]


def relay_steps(
    begin: Callable[[m.DkgBegin], Awaitable[m.DkgMessages]],
    deliver: Callable[[m.DkgDeliver], Awaitable[m.DkgProgress]],
    finish: Callable[[m.DkgSession], Awaitable[m.Ok]],
) -> StepCall:
    """What ``relay_run`` calls for one participant, over three typed calls."""

    async def step(name: str, body: Any) -> Any:
        if name == "begin":
            return (await begin(m.DkgBegin.from_wire(body))).to_wire()
        if name == "deliver":
            return (await deliver(m.DkgDeliver.from_wire(body))).to_wire()
        return (await finish(m.DkgSession.from_wire(body))).to_wire()

    return step


def per_node(steps: Callable[[str], StepCall]) -> RelayCall:
    """``relay_run``'s call from a function that gives each participant's steps."""

    async def call(node: str, step: str, body: Any) -> Any:
        return await steps(node)(step, body)

    return call


class DkgParticipant:
    """This agent's machines in relayed runs, over mTLS and on the bootstrap listener."""

    def __init__(self, node: CaNode) -> None:
        self.node = node
        self.roster: Roster | None = None  # set while bootstrapping
        self._pending_enrolment: Committee | None = None

    async def deliver(self, body: m.DkgDeliver) -> m.DkgProgress:
        progress = self.node.sessions.deliver(body.session, list(body.messages))
        return m.DkgProgress(tuple(progress["messages"]), bool(progress["done"]), progress["error"])

    # -- bootstrap DKG (token-authenticated) --------------------------------------------------
    async def boot_begin(self, body: m.DkgBegin) -> m.DkgMessages:
        node = self.node
        check_bootstrap_spec(body.spec, self.roster, node.committee, node.name)
        messages = node.sessions.begin(
            body.spec, node.name, node.state.identity_key, share=None, public=None
        )
        return m.DkgMessages(tuple(messages))

    async def boot_finish(self, body: m.DkgSession) -> m.Ok:
        node = self.node
        assert self.roster is not None
        output = node.sessions.finish(body.session)
        assert output.share is not None
        check_shares_consistent(output.public)
        check_own_share(output.share, output.public)
        committee = Committee(1, node.trust_domain, output.public, self.roster.members(), None)
        node.state.save_share(1, output.share)
        node.set_committee(committee)
        node.phase = "bootstrap: root"
        return m.Ok()

    # -- refresh and repair (mTLS) ------------------------------------------------------------
    async def rpc_begin(self, request: ControlRequest[m.DkgBegin]) -> m.DkgMessages:
        node, spec = self.node, request.body.spec
        if spec.target != node.name:
            # A helper in a refresh or repair: only an authorized coordinator may start one
            # (a repair hands a share to its target, so a rogue one could collect shares).
            refusal = node.change_authorized(request.peer, request.node)
            if refusal is not None:
                raise CaForbidden(f"{node.name} refuses the {spec.purpose} run: {refusal}")
        offered, public = check_change_spec(
            spec, request.body.committee, node.committee, node.signer is not None, node.name
        )
        if offered is not None:
            self._pending_enrolment = offered
        share = node.signer.share if node.signer is not None and spec.target != node.name else None
        messages = node.sessions.begin(
            spec, node.name, node.state.identity_key, share=share, public=public
        )
        return m.DkgMessages(tuple(messages))

    async def rpc_deliver(self, request: ControlRequest[m.DkgDeliver]) -> m.DkgProgress:
        return await self.deliver(request.body)

    async def rpc_finish(self, request: ControlRequest[m.DkgSession]) -> m.Ok:
        node = self.node
        output = node.sessions.finish(request.body.session)
        spec = output.spec
        if spec.purpose == "refresh":
            old = node.committee
            assert old is not None and output.share is not None
            # Replace the share only with one that provably shares the same root key.
            if output.public.group_public_key != old.public.group_public_key:
                log.warning("refused a refresh that changes the group key; share kept")
                raise CaForbidden("refresh output has another group key; share kept")
            check_shares_consistent(output.public)
            check_own_share(output.share, output.public)
            members = tuple(x for x in old.members if x.node in spec.participants)
            new = Committee(old.epoch + 1, old.trust_domain, output.public, members, old.root_der)
            node.state.save_share(new.epoch, output.share)
            node.set_committee(new)
        elif spec.target == node.name:
            offered = self._pending_enrolment
            assert output.share is not None and offered is not None
            check_shares_consistent(offered.public)
            check_own_share(output.share, offered.public)
            node.state.save_share(offered.epoch, output.share)
            node.set_committee(offered)
        return m.Ok()
