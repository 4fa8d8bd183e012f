"""One listener's timeouts and caps, and how their breaches are counted and logged.

Every breach moves ``peermesh_connections_rejected_total{listener,reason}`` and writes
one INFO line; the line is rate-limited per reason (one per 10 s, saying how many were
held back), since a client can make the agent refuse as fast as it can connect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from certs.spiffe import SpiffeId
from peermesh.net.caps import Caps, ConnectionCounts, LogBudget, Refusal, StreamBudget
from peermesh.net.http.h2session import H2Session
from peermesh.net.http.h2stream import H2Stream
from peermesh.net.http.timeouts import Timeouts
from peermesh.observability.metrics import AgentMetrics
from peermesh.proxy.sniff import peer_ip

log = logging.getLogger(__name__)

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class ListenerGuard:
    """The limits one listener enforces, with its counter and its log budget."""

    def __init__(
        self,
        listener: str,
        metrics: AgentMetrics,
        *,
        timeouts: Timeouts | None = None,
        caps: Caps | None = None,
        streams: StreamBudget | None = None,
    ) -> None:
        self.listener = listener
        self.metrics = metrics
        self.timeouts = timeouts or Timeouts()
        self.caps = caps or Caps()
        self.counts = ConnectionCounts(self.caps)
        #: Shared by every listener of the agent (the agent hands the same one to each).
        self.streams = streams if streams is not None else StreamBudget(self.caps.streams)
        self._log = LogBudget()

    def breach(self, reason: str, peer: object = "") -> None:
        """Count a refusal or timeout and log it (rate-limited per reason)."""
        self.metrics.reject(self.listener, reason)
        held = self._log.allow(reason, trio.current_time())
        if held is not None:
            more = f" ({held} more since the last line)" if held else ""
            log.info("%s listener: %s from %s%s", self.listener, reason, peer or "?", more)

    def breach_from(self, peer: object) -> Callable[[str], None]:
        """``breach`` for one connection's callbacks."""
        return lambda reason: self.breach(reason, peer)

    def h2_session(
        self,
        transport: trio.abc.Stream,
        handler: Callable[[H2Stream], Awaitable[None]],
        *,
        peer: object,
        identity: SpiffeId | None = None,
        initial_data: bytes = b"",
    ) -> H2Session:
        """A server-side HTTP/2 session under this listener's timeouts, stream budget and
        counters (``peer`` names the client in breach lines, ``identity`` its SPIFFE ID)."""
        return H2Session(
            transport,
            client_side=False,
            handler=handler,
            initial_data=initial_data,
            peer=identity,
            on_protocol_error=lambda why: self.metrics.reject(self.listener, "h2-protocol-error"),
            on_limit=lambda why: self.metrics.reject(self.listener, f"h2-{why}"),
            timeouts=self.timeouts,
            stream_budget=self.streams,
            on_breach=self.breach_from(peer),
        )

    def admitting(self, handler: Handler, *, per_address: bool) -> Handler:
        """``handler`` behind the listener's connection cap (and per source address)."""

        async def admitted(stream: trio.SocketStream) -> None:
            address = peer_ip(stream) if per_address else ""
            refusal = self.counts.admit()
            if refusal is None and per_address:
                refusal = self.counts.admit_peer(address)
                if refusal is not None:
                    self.counts.release()
            if refusal is not None:
                self.breach(refusal.value, address)
                await trio.aclose_forcefully(stream)
                return
            try:
                await handler(stream)
            finally:
                self.counts.release()
                if per_address:
                    self.counts.release_peer(address)

        return admitted

    def admit_identity(self, identity: str) -> Refusal | None:
        """Count an authenticated connection against its SPIFFE ID's share (the inbound)."""
        refusal = self.counts.admit_peer(identity)
        if refusal is not None:
            self.breach(refusal.value, identity)
        return refusal
