"""Prometheus collectors that read live agent state at scrape time.

Nothing here is updated on the request path: gossip, policy, certificate, mDNS, peer
connection and access-log figures are read from the objects that already keep them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MAX_PEERS = 256  # bound on per-peer series


class AgentStateCollector(Collector):
    """Control-plane and connection metrics for one agent (read at scrape time)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        for part in (
            self._gossip,
            self._policy,
            self._certificate,
            self._connections,
            self._access_log,
        ):
            # One broken reader must not take the whole /metrics page down with it.
            try:
                families = list(part())
            except Exception:
                log.exception("metrics collector %s failed", part.__name__)
                continue
            yield from families

    def _gossip(self) -> Iterator[Metric]:
        membership = self.agent.membership
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
        if membership is not None and membership.running:
            swim = membership.swim
            counts: dict[str, int] = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
            for member in swim.members():
                state = member.state.name.lower()
                counts[state] = counts.get(state, 0) + 1
            for state, n in sorted(counts.items()):
                members.add_metric([state], n)
            codec = getattr(swim, "codec", None)
            if codec is not None:
                sent.add_metric([], getattr(codec, "sent", 0))
                received.add_metric([], getattr(codec, "accepted", 0))
            for reason, n in swim.drops.items():
                dropped.add_metric([reason.value], n)
            stats = swim.stats
            for f in dataclasses.fields(stats):
                value = getattr(stats, f.name)
                if isinstance(value, int):
                    events.add_metric([f.name], value)
        if self.agent.mdns is not None:
            mdns.add_metric([], len(self.agent.mdns.discovered))
        yield from (members, sent, received, dropped, events, mdns)

    def _policy(self) -> Iterator[Metric]:
        store = self.agent.policy
        objects = GaugeMetricFamily("peermesh_policy_objects", "Policy objects in force.")
        objects.add_metric([], len(store))
        version = GaugeMetricFamily(
            "peermesh_policy_version", "Local policy version (bumped by every change)."
        )
        version.add_metric([], store.version)
        yield objects
        yield version
        hub = getattr(self.agent, "observability", None)
        applied = getattr(hub, "policy_applied_at", 0.0) if hub is not None else 0.0
        last = GaugeMetricFamily(
            "peermesh_policy_last_apply_timestamp_seconds",
            "Unix time of the last policy change applied here (0: none since start).",
        )
        last.add_metric([], applied)
        yield last
        replicator = self.agent.replicator
        sync = CounterMetricFamily(
            "peermesh_policy_sync_bytes", "Policy anti-entropy bytes.", labels=["direction"]
        )
        if replicator is not None:
            sync.add_metric(["sent"], getattr(replicator, "sync_bytes_sent", 0))
            sync.add_metric(["received"], getattr(replicator, "sync_bytes_received", 0))
        yield sync

    def _certificate(self) -> Iterator[Metric]:
        tls = self.agent.tls
        expiry = GaugeMetricFamily(
            "peermesh_certificate_expiry_seconds",
            "Seconds until this agent's workload certificate expires (absent: none loaded).",
        )
        if tls.loaded:
            left = tls.not_after - dt.datetime.now(dt.UTC)
            expiry.add_metric([], left.total_seconds())
        yield expiry
        ca = getattr(self.agent, "ca", None)
        renewals = CounterMetricFamily(
            "peermesh_certificate_renewals", "Certificates this agent obtained by renewal."
        )
        renewals.add_metric([], getattr(ca, "renewals", 0) if ca is not None else 0)
        yield renewals
        signer = getattr(ca, "signer", None) if ca is not None else None
        shares = CounterMetricFamily(
            "peermesh_ca_signature_shares",
            "FROST signature shares this agent's signer released or refused (since start).",
            labels=["result"],
        )
        if signer is not None:
            shares.add_metric(["released"], getattr(signer, "shares_released", 0))
            shares.add_metric(["refused"], getattr(signer, "refusals", 0))
        yield shares

    def _connections(self) -> Iterator[Metric]:
        pool = getattr(self.agent, "_pool", None)
        conns = GaugeMetricFamily(
            "peermesh_peer_connections",
            "Open outbound mTLS connections per peer agent.",
            labels=["peer"],
        )
        streams = GaugeMetricFamily(
            "peermesh_peer_streams", "Open HTTP/2 streams per peer agent.", labels=["peer"]
        )
        if pool is not None:
            for row in pool.status()[:MAX_PEERS]:
                conns.add_metric([str(row["address"])], float(row["connections"]))
                streams.add_metric([str(row["address"])], float(row["streams"]))
        yield conns
        yield streams
        listener_streams = GaugeMetricFamily(
            "peermesh_open_streams", "Open streams per listener.", labels=["listener"]
        )
        for name in ("outbound", "inbound"):
            tracker = getattr(self.agent, f"{name}_tracker", None)
            if tracker is not None:
                listener_streams.add_metric([name], tracker.streams)
        yield listener_streams

    def _access_log(self) -> Iterator[Metric]:
        hub = getattr(self.agent, "observability", None)
        log = hub.access_log if hub is not None else None
        written = CounterMetricFamily("peermesh_access_log_written", "Access log lines written.")
        dropped = CounterMetricFamily(
            "peermesh_access_log_dropped",
            "Access log lines dropped because the buffer was full or the sink failed.",
        )
        written.add_metric([], log.written if log is not None else 0)
        dropped.add_metric([], log.dropped if log is not None else 0)
        yield written
        yield dropped
