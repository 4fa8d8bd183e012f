"""mDNS (zeroconf): advertise this agent and find join candidates on the local link.

mDNS only *finds* peers; it cannot tell that one died (PTR TTLs are clamped to about
19 minutes by resolvers), so liveness stays SWIM's job. A candidate found here is
joined like a ``--join`` seed: a push-pull over mTLS to its inbound address.

zeroconf runs its own thread; its callbacks only hand names to trio through a memory
channel, and blocking look-ups run in trio worker threads.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_peermesh._udp.local."


@dataclass(frozen=True)
class Candidate:
    """A peer agent seen on the link."""

    node: str
    address: str
    inbound_port: int
    gossip_port: int
    trust_domain: str


class MdnsDiscovery:
    """Advertises us and calls ``on_candidate`` for every other agent of our trust domain."""

    def __init__(
        self,
        *,
        node: str,
        address: str,
        gossip_port: int,
        inbound_port: int,
        trust_domain: str,
        on_candidate: Callable[[Candidate], Awaitable[None]],
    ) -> None:
        self.node = node
        self.address = address
        self.gossip_port = gossip_port
        self.inbound_port = inbound_port
        self.trust_domain = trust_domain
        self.on_candidate = on_candidate
        self.discovered: dict[str, Candidate] = {}
        self.running = False

    def _info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{self.node}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.address)],
            port=self.gossip_port,
            properties={
                "node": self.node,
                "inbound": str(self.inbound_port),
                "td": self.trust_domain,
                "v": "1",
            },
            server=f"{self.node}.local.",
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[str](256)
        token = trio.lowlevel.current_trio_token()

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:  # zeroconf's thread
            if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
                try:
                    token.run_sync_soon(_offer, send, name)
                except trio.RunFinishedError:
                    pass

        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=[self.address], ip_version=IPVersion.V4Only)
        )
        info = self._info()
        try:
            await trio.to_thread.run_sync(
                lambda: zc.register_service(info, allow_name_change=False)
            )
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
            self.running = True
            task_status.started()
            async with receive:
                async for name in receive:
                    if name == info.name:
                        continue
                    resolved = await trio.to_thread.run_sync(
                        lambda n=name: zc.get_service_info(SERVICE_TYPE, n, timeout=3000)  # type: ignore[misc]
                    )
                    candidate = _candidate(resolved)
                    if candidate is None or candidate.trust_domain != self.trust_domain:
                        continue
                    if candidate.node == self.node:
                        continue
                    self.discovered[candidate.node] = candidate
                    await self.on_candidate(candidate)
        finally:
            self.running = False
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close, zc, info, locals().get("browser"))


def _offer(send: trio.MemorySendChannel[str], name: str) -> None:
    try:
        send.send_nowait(name)
    except trio.WouldBlock:
        pass  # a later announcement will offer it again
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass  # the browser is shutting down: nobody is listening any more


def _close(zc: Zeroconf, info: ServiceInfo, browser: ServiceBrowser | None) -> None:
    try:
        if browser is not None:
            browser.cancel()
        zc.unregister_service(info)
    except Exception:  # pragma: no cover - best effort on shutdown
        pass
    zc.close()


def _candidate(info: ServiceInfo | None) -> Candidate | None:
    if info is None:
        return None
    props = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else "")
        for k, v in info.properties.items()
    }
    addresses = info.parsed_addresses(IPVersion.V4Only)
    try:
        return Candidate(
            node=props["node"],
            address=addresses[0],
            inbound_port=int(props["inbound"]),
            gossip_port=int(info.port or 0),
            trust_domain=props.get("td", ""),
        )
    except (KeyError, IndexError, ValueError):
        log.info("ignoring malformed mDNS advertisement %s", info.name)
        return None
