"""Prometheus collectors that read live agent state at scrape time.

Nothing here is updated on the request path: gossip, policy, certificate, mDNS, peer
connection and access-log figures are read from the objects that already keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from peermesh.observability.hub import Observability

log = logging.getLogger(__name__)

MAX_PEERS = 256  # bound on per-peer series


@dataclass(frozen=True)
class GossipFigures:
    """What SWIM reports at one scrape."""

    members: Mapping[str, int]  # by state name, lower case
    datagrams_sent: int
    datagrams_received: int
    drops: Mapping[str, int]  # by reason
    events: Mapping[str, int]  # protocol counters by name


@dataclass(frozen=True)
class PolicyFigures:
    objects: int
    version: int
    sync_bytes_sent: int | None  # None: no replicator running
    sync_bytes_received: int | None
    updates_refused: int = 0  # peers' updates refused whole (invalid, forged, oversized)
    admin_changes_unendorsed: int = 0  # MeshConfig admin-set changes ignored (no endorsement)


@dataclass(frozen=True)
class CertificateFigures:
    expires_in: float | None  # seconds; None: no certificate loaded
    renewals: int
    shares_released: int | None  # None: this agent is not a signer
    shares_refused: int


@dataclass(frozen=True)
class PeerFigures:
    address: str
    connections: int
    streams: int


class AgentState(Protocol):
    """The live figures the collector reads at scrape time, one reader per part."""

    def gossip(self) -> GossipFigures | None:
        """None when gossip is off or not running yet."""

    def mdns_discovered(self) -> int | None:
        """None when mDNS is off."""

    def policy(self) -> PolicyFigures: ...
    def certificate(self) -> CertificateFigures: ...
    def peers(self) -> Sequence[PeerFigures]: ...
    def open_streams(self) -> Mapping[str, int]:
        """Open streams by listener name."""


class AgentStateCollector(Collector):
    """Control-plane and connection metrics for one agent (read at scrape time)."""

    def __init__(self, state: AgentState, hub: Observability) -> None:
        self.state = state
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        for part in (
            self._gossip,
            self._policy,
            self._certificate,
            self._connections,
            self._access_log,
            self._spans,
        ):
            # One broken reader must not take the whole /metrics page down with it.
            try:
                families = list(part())
            except Exception:
                log.exception("metrics collector %s failed", part.__name__)
                continue
            yield from families

    def _gossip(self) -> Iterator[Metric]:
        figures = self.state.gossip()
        members = GaugeMetricFamily(
            "peermesh_gossip_members", "Members known to SWIM, by state.", labels=["state"]
        )
        sent = CounterMetricFamily("peermesh_gossip_datagrams_sent", "Gossip datagrams sent.")
        received = CounterMetricFamily(
            "peermesh_gossip_datagrams_received", "Gossip datagrams accepted."
        )
        dropped = CounterMetricFamily(
            "peermesh_gossip_dropped", "Gossip datagrams refused, by reason.", labels=["reason"]
        )
        events = CounterMetricFamily(
            "peermesh_gossip_events",
            "SWIM protocol events (probes, suspicions, refutations, push-pulls...).",
            labels=["event"],
        )
        mdns = GaugeMetricFamily(
            "peermesh_mdns_discovered", "Agents discovered on the local link through mDNS."
        )
        if figures is not None:
            for state, n in sorted(figures.members.items()):
                members.add_metric([state], n)
            sent.add_metric([], figures.datagrams_sent)
            received.add_metric([], figures.datagrams_received)
            for reason, n in figures.drops.items():
                dropped.add_metric([reason], n)
            for name, n in figures.events.items():
                events.add_metric([name], n)
        discovered = self.state.mdns_discovered()
        if discovered is not None:
            mdns.add_metric([], discovered)
        yield from (members, sent, received, dropped, events, mdns)

    def _policy(self) -> Iterator[Metric]:
        figures = self.state.policy()
        objects = GaugeMetricFamily("peermesh_policy_objects", "Policy objects in force.")
        objects.add_metric([], figures.objects)
        version = GaugeMetricFamily(
            "peermesh_policy_version", "Local policy version (bumped by every change)."
        )
        version.add_metric([], figures.version)
        yield objects
        yield version
        applied = self.hub.policy_applied_at
        last = GaugeMetricFamily(
            "peermesh_policy_last_apply_timestamp_seconds",
            "Unix time of the last policy change applied here (0: none since start).",
        )
        last.add_metric([], applied)
        yield last
        sync = CounterMetricFamily(
            "peermesh_policy_sync_bytes", "Policy anti-entropy bytes.", labels=["direction"]
        )
        if figures.sync_bytes_sent is not None:
            sync.add_metric(["sent"], figures.sync_bytes_sent)
            sync.add_metric(["received"], figures.sync_bytes_received or 0)
        yield sync
        refused = CounterMetricFamily(
            "peermesh_policy_updates_refused",
            "Policy updates from peers refused whole, nothing applied (the log names the sender).",
        )
        refused.add_metric([], figures.updates_refused)
        yield refused
        unendorsed = CounterMetricFamily(
            "peermesh_policy_admin_changes_unendorsed",
            "MeshConfig versions that change the admin set without the signer committee's"
            " endorsement: kept, never in effect (the log names each).",
        )
        unendorsed.add_metric([], figures.admin_changes_unendorsed)
        yield unendorsed

    def _certificate(self) -> Iterator[Metric]:
        figures = self.state.certificate()
        expiry = GaugeMetricFamily(
            "peermesh_certificate_expiry_seconds",
            "Seconds until this agent's workload certificate expires (absent: none loaded).",
        )
        if figures.expires_in is not None:
            expiry.add_metric([], figures.expires_in)
        yield expiry
        renewals = CounterMetricFamily(
            "peermesh_certificate_renewals", "Certificates this agent obtained by renewal."
        )
        renewals.add_metric([], figures.renewals)
        yield renewals
        shares = CounterMetricFamily(
            "peermesh_ca_signature_shares",
            "FROST signature shares this agent's signer released or refused (since start).",
            labels=["result"],
        )
        if figures.shares_released is not None:
            shares.add_metric(["released"], figures.shares_released)
            shares.add_metric(["refused"], figures.shares_refused)
        yield shares

    def _connections(self) -> Iterator[Metric]:
        conns = GaugeMetricFamily(
            "peermesh_peer_connections",
            "Open outbound mTLS connections per peer agent.",
            labels=["peer"],
        )
        streams = GaugeMetricFamily(
            "peermesh_peer_streams", "Open HTTP/2 streams per peer agent.", labels=["peer"]
        )
        for peer in list(self.state.peers())[:MAX_PEERS]:
            conns.add_metric([peer.address], float(peer.connections))
            streams.add_metric([peer.address], float(peer.streams))
        yield conns
        yield streams
        listener_streams = GaugeMetricFamily(
            "peermesh_open_streams", "Open streams per listener.", labels=["listener"]
        )
        for name, n in self.state.open_streams().items():
            listener_streams.add_metric([name], n)
        yield listener_streams

    def _access_log(self) -> Iterator[Metric]:
        log = self.hub.access_log
        written = CounterMetricFamily("peermesh_access_log_written", "Access log lines written.")
        dropped = CounterMetricFamily(
            "peermesh_access_log_dropped",
            "Access log lines dropped because the buffer was full or the sink failed.",
        )
        written.add_metric([], log.written if log is not None else 0)
        dropped.add_metric([], log.dropped if log is not None else 0)
        yield written
        yield dropped

    def _spans(self) -> Iterator[Metric]:
        tracer = self.hub.tracer
        exporter = tracer.exporter
        recorded = CounterMetricFamily(
            "peermesh_spans_recorded", "Spans encoded and buffered for export."
        )
        exported = CounterMetricFamily(
            "peermesh_spans_exported", "Spans the OTLP collector accepted."
        )
        dropped = CounterMetricFamily(
            "peermesh_spans_dropped", "Spans dropped before export, by reason.", labels=["reason"]
        )
        recorded.add_metric([], tracer.spans_recorded)
        exported.add_metric([], exporter.exported if exporter is not None else 0)
        if exporter is not None:
            for reason, n in sorted(exporter.dropped.items()):
                dropped.add_metric([reason], n)
        yield from (recorded, exported, dropped)
