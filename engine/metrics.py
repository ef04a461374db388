"""Prometheus metrics for ``GET /metrics``, read from the node's own state at scrape time.

A collector over a per-node registry: nothing is instrumented twice, and every figure
is the same one ``/status`` and ``/bandwidth/status`` show.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.daemons.push import LEVELS
from engine.events import Event

if TYPE_CHECKING:
    from engine.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector:
    """Turns one node's state into metric families."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.events: collections.Counter[str] = collections.Counter()
        """Events emitted by this node since start, by type."""
        node.events.listen(self._count)

    def _count(self, event: Event) -> None:
        self.events[event.type.value] += 1

    def collect(self) -> Iterator[Metric]:
        node, labels = self.node, ["node"]
        disk = node.disk()
        used = GaugeMetricFamily("ringsync_disk_used_bytes", "Bytes used against capacity", labels=labels)
        used.add_metric([node.name], disk["used_bytes"])
        total = GaugeMetricFamily("ringsync_disk_capacity_bytes", "Quota or disk size", labels=labels)
        total.add_metric([node.name], disk["total_bytes"])
        yield from (used, total)
        artifacts = GaugeMetricFamily("ringsync_artifacts", "Artifacts in the manifest",
                                      labels=["node", "data_type"])
        for data_type, count in node.manifest.counts_by_type().items():
            artifacts.add_metric([node.name, data_type], count)
        yield artifacts
        sync = node.daemon.status()
        pending = GaugeMetricFamily("ringsync_pending_pushes", "Pushes still to make", labels=labels)
        pending.add_metric([node.name], sync["pending"])
        pushed = CounterMetricFamily("ringsync_pushed_files", "Files pushed and verified", labels=labels)
        pushed.add_metric([node.name], sync["pushed_files"])
        failed = CounterMetricFamily("ringsync_push_failures", "Failed push attempts", labels=labels)
        failed.add_metric([node.name], sync["failed"])
        yield from (pending, pushed, failed)
        sent = CounterMetricFamily("ringsync_sent_bytes", "Bytes sent, by target host",
                                   labels=["node", "target"])
        limit = GaugeMetricFamily("ringsync_bandwidth_limit_mbps", "Per-host limit (MB/s)",
                                  labels=["node", "target"])
        for host, figures in node.bandwidth.status()["hosts"].items():
            sent.add_metric([node.name, host], figures["total_bytes"])
            limit.add_metric([node.name, host], figures["limit_mbps"])
        yield from (sent, limit)
        live = GaugeMetricFamily("ringsync_transfers_in_flight", "Live transfers",
                                 labels=["node", "direction"])
        directions = collections.Counter(t.direction for t in node.transfers.live.values())
        for direction in ("in", "out"):
            live.add_metric([node.name, direction], directions[direction])
        yield live
        events = CounterMetricFamily("ringsync_events", "Events emitted", labels=["node", "type"])
        for event_type, count in sorted(self.events.items()):
            events.add_metric([node.name, event_type], count)
        yield events
        yield from self._routing(node)
        yield from self._scrub(node)
        if node.push is not None:
            yield from self._pressure(node)
        if node.membership is not None:
            states = GaugeMetricFamily("ringsync_member_up", "1 when a node answers status checks",
                                       labels=["node", "member"])
            for name, member in node.membership.members.items():
                states.add_metric([node.name, name], 1.0 if member.state == "up" else 0.0)
            yield states


    @staticmethod
    def _routing(node: "Node") -> Iterator[Metric]:
        """Backpressure, breakers, and the strategy's own figures (gossip, write-through)."""
        labels = ["node"]
        pressure = GaugeMetricFamily("ringsync_backpressure", "1 while this node announces"
                                     " backpressure (holds normal syncs)", labels=labels)
        pressure.add_metric([node.name], 1.0 if node.backpressure.active else 0.0)
        breakers = GaugeMetricFamily("ringsync_breaker_open", "1 while this node's circuit"
                                     " breaker to a target is not closed",
                                     labels=["node", "target"])
        for target in node.breakers.open_targets():
            breakers.add_metric([node.name, target], 1.0)
        yield from (pressure, breakers)
        queue = node.daemon.write_through
        if queue is not None:
            figures = queue.status()
            queued = GaugeMetricFamily("ringsync_write_through_queued", "Artifacts not yet on a"
                                       " durable node (ephemeral)", labels=labels)
            queued.add_metric([node.name], figures["queued"])
            safe = CounterMetricFamily("ringsync_write_through_safe", "Artifacts reported safe",
                                       labels=labels)
            safe.add_metric([node.name], figures["safe_total"])
            yield from (queued, safe)
        if node.gossip is not None:
            figures = node.gossip.status()
            for name, help_text in (("rounds", "Gossip rounds"),
                                    ("exchanges", "Manifest exchanges with peers"),
                                    ("exchange_failures", "Failed manifest exchanges"),
                                    ("pulls_requested", "Copies asked of holders"),
                                    ("pulls_arrived", "Asked-for copies that arrived")):
                family = CounterMetricFamily(f"ringsync_gossip_{name}", help_text, labels=labels)
                family.add_metric([node.name], figures[name])
                yield family

    @staticmethod
    def _scrub(node: "Node") -> Iterator[Metric]:
        """The scrub's progress and what it found, and what this node hashed in all."""
        labels = ["node"]
        status = node.scrub.status()
        passes = CounterMetricFamily("ringsync_scrub_passes", "Completed scrub passes",
                                     labels=labels)
        passes.add_metric([node.name], status["passes"])
        progress = GaugeMetricFamily("ringsync_scrub_progress_bytes",
                                     "Bytes scrubbed in the current pass", labels=labels)
        progress.add_metric([node.name], status["bytes_done"])
        held = GaugeMetricFamily("ringsync_scrub_pass_bytes", "Bytes of stored copies in the"
                                 " current pass", labels=labels)
        held.add_metric([node.name], status["bytes_total"])
        findings = CounterMetricFamily("ringsync_scrub_findings", "Copies the scrub checked,"
                                       " by verdict", labels=["node", "verdict"])
        for verdict in ("matched", "mismatched", "missing"):
            findings.add_metric([node.name, verdict], status["findings"][verdict])
        hashed = CounterMetricFamily("ringsync_hashed_bytes", "Bytes this node read and hashed"
                                     " (vouches, scrub, verification)", labels=labels)
        hashed.add_metric([node.name], node.copies.totals["hashed_bytes"])
        yield from (passes, progress, held, findings, hashed)

    @staticmethod
    def _pressure(node: "Node") -> Iterator[Metric]:
        push, labels = node.push, ["node"]
        assert push is not None
        level = GaugeMetricFamily("ringsync_disk_pressure_level",
                                  "0 normal, 1 push (50 %), 2 urgent (70 %), 3 cleanup (75 %)",
                                  labels=labels)
        level.add_metric([node.name], LEVELS.index(push.level))
        deleted = CounterMetricFamily("ringsync_cleanup_deleted", "Sources deleted behind live-"
                                      "vouched copies", labels=labels)
        deleted.add_metric([node.name], push.cleaner.totals["deleted"])
        freed = CounterMetricFamily("ringsync_cleanup_freed_bytes", "Bytes freed by cleanup",
                                    labels=labels)
        freed.add_metric([node.name], push.cleaner.totals["freed_bytes"])
        yield from (level, deleted, freed)


class NodeMetrics:
    """The node's registry; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, node: "Node") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))

    def render(self) -> bytes:
        return generate_latest(self.registry)
