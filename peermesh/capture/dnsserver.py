"""The mesh DNS server: a trio UDP shell around :class:`~peermesh.capture.dnsanswer.MeshDns`.

One socket takes the apps' queries; one unconnected socket talks to the host's resolvers
(from ``/etc/resolv.conf`` unless given). A bad datagram is counted and dropped; nothing a
client or a resolver sends can end the server.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from peermesh.capture.dnsanswer import Action, DnsCounter, Forward, MeshDns, Reply
from peermesh.capture.vips import VipTable

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
#: Upper bound on how long a tick waits when nothing is in flight.
_IDLE_TICK = 1.0


def host_resolvers(path: Path = RESOLV_CONF) -> list[tuple[str, int]]:
    """The ``nameserver`` lines of resolv.conf, as (address, 53); bad lines are skipped."""
    found: list[tuple[str, int]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines()[:1000]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append((str(ipaddress.ip_address(parts[1].split("%", 1)[0])), 53))
            except ValueError:
                continue
    return found[:3]  # glibc uses at most three


class MeshDnsServer:
    """Serves mesh DNS on ``listen`` until cancelled."""

    def __init__(
        self,
        listen: tuple[str, int],
        table: Callable[[], VipTable],
        *,
        upstreams: Sequence[tuple[str, int]],
        bare_names: bool = False,
        timeout: float = 5.0,
        max_inflight: int = 1024,
        on_count: Callable[[DnsCounter], None] | None = None,
    ) -> None:
        self.listen = listen
        self.upstreams = list(upstreams)
        self.core = MeshDns(
            table,
            upstreams=len(self.upstreams),
            bare_names=bare_names,
            timeout=timeout,
            max_inflight=max_inflight,
            on_count=on_count,
        )
        self.bound: tuple[str, int] | None = None
        self._wake = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        front = trio.socket.socket(family, socket.SOCK_DGRAM)
        # The resolvers' socket follows their family, bound to the wildcard: a loopback
        # listener could not reach a resolver on the network.
        v6 = bool(self.upstreams) and ":" in self.upstreams[0][0]
        back = trio.socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        with front, back:
            await front.bind((host, port))
            await back.bind(("::", 0) if v6 else ("0.0.0.0", 0))
            sockname = front.getsockname()
            self.bound = (str(sockname[0]), int(sockname[1]))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._clients, front, back)
                nursery.start_soon(self._resolvers, front, back)
                nursery.start_soon(self._timeouts, front)
                task_status.started(self.bound)

    async def _clients(self, front: trio.socket.SocketType, back: trio.socket.SocketType) -> None:
        while True:
            try:
                data, client = await front.recvfrom(65535)
            except OSError as exc:  # e.g. ICMP unreachable reported on the socket
                log.debug("mesh DNS: receive failed: %s", exc)
                continue
            actions = self.core.query(data, (str(client[0]), int(client[1])), trio.current_time())
            await self._act(actions, front, back)
            self._wake.set()

    async def _resolvers(self, front: trio.socket.SocketType, back: trio.socket.SocketType) -> None:
        allowed = {(ipaddress.ip_address(h), p) for h, p in self.upstreams}
        while True:
            try:
                data, sender = await back.recvfrom(65535)
            except OSError as exc:
                log.debug("mesh DNS: resolver receive failed: %s", exc)
                continue
            try:
                who = (ipaddress.ip_address(str(sender[0]).split("%", 1)[0]), int(sender[1]))
            except ValueError:
                continue
            if who not in allowed:
                self.core.response(b"", trio.current_time())  # counted as stray
                continue
            await self._act(self.core.response(data, trio.current_time()), front, back)

    async def _timeouts(self, front: trio.socket.SocketType) -> None:
        while True:
            deadline = self.core.next_deadline()
            wait = _IDLE_TICK if deadline is None else max(0.0, deadline - trio.current_time())
            with trio.move_on_after(min(wait, _IDLE_TICK)):
                await self._wake.wait()
            self._wake = trio.Event()
            expired = self.core.expire(trio.current_time())
            if expired:
                log.info(
                    "mesh DNS: %d queries unanswered by the host resolvers in time; SERVFAIL",
                    len(expired),
                )
            await self._act(expired, front, front)

    async def _act(
        self, actions: list[Action], front: trio.socket.SocketType, back: trio.socket.SocketType
    ) -> None:
        for action in actions:
            try:
                if isinstance(action, Reply):
                    await front.sendto(action.data, action.to)
                elif isinstance(action, Forward):
                    await back.sendto(action.data, self.upstreams[action.upstream])
            except OSError as exc:
                log.debug("mesh DNS: send failed: %s", exc)
