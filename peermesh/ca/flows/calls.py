"""How flows reach other agents: typed control calls over mTLS, and the bootstrap channel.

A call to ourselves runs our own handler in-process (through the router, so it is
decoded and checked exactly as a peer's call would be).
"""

from __future__ import annotations

from peermesh.ca import channel
from peermesh.ca.node import CaNode
from peermesh.core.endpoint import Endpoint
from peermesh.net.rpc.method import Req, Resp, RpcMethod
from peermesh.net.rpc.router import ControlRouter


class MemberCalls:
    """Control calls to committee members (or to ourselves)."""

    def __init__(self, node: CaNode, router: ControlRouter) -> None:
        self.node = node
        self.router = router

    async def call(
        self,
        node: str,
        address: tuple[str, int],
        method: RpcMethod[Req, Resp],
        body: Req,
        *,
        timeout: float = 20.0,
    ) -> Resp:
        if node == self.node.name:
            return await self.router.dispatch(
                method, self.node.ports.tls.identity, body, node=self.node.name
            )
        endpoint = Endpoint(service="", host=address[0], port=address[1])
        return await self.node.ports.control().call(endpoint, method, body, timeout=timeout)

    async def boot(
        self,
        address: tuple[str, int],
        method: RpcMethod[Req, Resp],
        body: Req,
        *,
        timeout: float = 5.0,
    ) -> Resp:
        """A ``ca/bootstrap/*`` call, authenticated with the bootstrap token's MAC."""
        return await channel.call_method(
            address,
            method,
            body,
            context=channel.bootstrap_client_context(),
            mac_key=self.node.mac_key,
            timeout=timeout,
        )
