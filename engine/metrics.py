"""Prometheus metrics for ``GET /metrics``, read from the node's own state at scrape time.

A collector over a per-node registry: nothing is instrumented twice, and every figure
is the same one ``/status`` and ``/bandwidth/status`` show.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.daemons.push import LEVELS
from engine.events import Event, EventBus
from engine.transfers import TransferTracker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Figures = Callable[[], Mapping[str, Any]]
"""A component's ``status()`` (or part of it), read at scrape time."""


@dataclass(frozen=True)
class MetricSources:
    """What the metrics read of one node, each at scrape time."""

    name: str
    """The node (the ``node`` label of every family)."""
    events: EventBus
    """Counted by type from the moment the collector is made."""
    disk: Figures
    """``used_bytes`` and ``total_bytes`` against the node's capacity."""
    artifacts: Callable[[], Mapping[str, int]]
    """Artifacts in the manifest by data type."""
    sync: Figures
    """The auto-sync daemon's ``pending``, ``pushed_files`` and ``failed``."""
    bandwidth: Figures
    """The bandwidth coordinator's status (``hosts``: ``total_bytes``, ``limit_mbps``)."""
    transfers: TransferTracker
    """The live transfers, counted by direction."""
    backpressure: Callable[[], bool]
    """True while this node announces backpressure."""
    open_breakers: Callable[[], Iterable[str]]
    """The targets whose circuit breaker is not closed."""
    scrub: Figures
    """The scrub's ``passes``, ``bytes_done``, ``bytes_total`` and ``findings``."""
    hashed_bytes: Callable[[], int]
    """Bytes this node read and hashed in all."""
    write_through: Figures | None = None
    """The write-through queue's ``queued`` and ``safe_total`` (ephemeral nodes only)."""
    gossip: Figures | None = None
    """The gossip daemon's counters (the gossip strategy only)."""
    pressure_level: Callable[[], str] | None = None
    """The disk-pressure level (nodes with the pressure daemon only)."""
    cleanup: Callable[[], Mapping[str, int]] | None = None
    """The cleaner's ``deleted`` and ``freed_bytes`` (with ``pressure_level``)."""
    members: Callable[[], Mapping[str, str]] | None = None
    """Each member's state, by name (the coordinator only)."""


class NodeCollector:
    """Turns one node's state into metric families."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources
        self.events: collections.Counter[str] = collections.Counter()
        """Events emitted by this node since start, by type."""
        sources.events.listen(self._count)

    def _count(self, event: Event) -> None:
        self.events[event.type.value] += 1

    def collect(self) -> Iterator[Metric]:
        src, labels = self.sources, ["node"]
        name = src.name
        disk = src.disk()
        used = GaugeMetricFamily("ringsync_disk_used_bytes", "Bytes used against capacity", labels=labels)
        used.add_metric([name], disk["used_bytes"])
        total = GaugeMetricFamily("ringsync_disk_capacity_bytes", "Quota or disk size", labels=labels)
        total.add_metric([name], disk["total_bytes"])
        yield from (used, total)
        artifacts = GaugeMetricFamily("ringsync_artifacts", "Artifacts in the manifest",
                                      labels=["node", "data_type"])
        for data_type, count in src.artifacts().items():
            artifacts.add_metric([name, data_type], count)
        yield artifacts
        sync = src.sync()
        pending = GaugeMetricFamily("ringsync_pending_pushes", "Pushes still to make", labels=labels)
        pending.add_metric([name], sync["pending"])
        pushed = CounterMetricFamily("ringsync_pushed_files", "Files pushed and verified", labels=labels)
        pushed.add_metric([name], sync["pushed_files"])
        failed = CounterMetricFamily("ringsync_push_failures", "Failed push attempts", labels=labels)
        failed.add_metric([name], sync["failed"])
        yield from (pending, pushed, failed)
        sent = CounterMetricFamily("ringsync_sent_bytes", "Bytes sent, by target host",
                                   labels=["node", "target"])
        limit = GaugeMetricFamily("ringsync_bandwidth_limit_mbps", "Per-host limit (MB/s)",
                                  labels=["node", "target"])
        for host, figures in src.bandwidth()["hosts"].items():
            sent.add_metric([name, host], figures["total_bytes"])
            limit.add_metric([name, host], figures["limit_mbps"])
        yield from (sent, limit)
        live = GaugeMetricFamily("ringsync_transfers_in_flight", "Live transfers",
                                 labels=["node", "direction"])
        directions = collections.Counter(t.direction for t in src.transfers.live.values())
        for direction in ("in", "out"):
            live.add_metric([name, direction], directions[direction])
        yield live
        events = CounterMetricFamily("ringsync_events", "Events emitted", labels=["node", "type"])
        for event_type, count in sorted(self.events.items()):
            events.add_metric([name, event_type], count)
        yield events
        yield from self._routing(src)
        yield from self._scrub(src)
        yield from self._pressure(src)
        if src.members is not None:
            states = GaugeMetricFamily("ringsync_member_up", "1 when a node answers status checks",
                                       labels=["node", "member"])
            for member, state in src.members().items():
                states.add_metric([name, member], 1.0 if state == "up" else 0.0)
            yield states

    @staticmethod
    def _routing(src: MetricSources) -> Iterator[Metric]:
        """Backpressure, breakers, and the strategy's own figures (gossip, write-through)."""
        labels, name = ["node"], src.name
        pressure = GaugeMetricFamily("ringsync_backpressure", "1 while this node announces"
                                     " backpressure (holds normal syncs)", labels=labels)
        pressure.add_metric([name], 1.0 if src.backpressure() else 0.0)
        breakers = GaugeMetricFamily("ringsync_breaker_open", "1 while this node's circuit"
                                     " breaker to a target is not closed",
                                     labels=["node", "target"])
        for target in src.open_breakers():
            breakers.add_metric([name, target], 1.0)
        yield from (pressure, breakers)
        if src.write_through is not None:
            figures = src.write_through()
            queued = GaugeMetricFamily("ringsync_write_through_queued", "Artifacts not yet on a"
                                       " durable node (ephemeral)", labels=labels)
            queued.add_metric([name], figures["queued"])
            safe = CounterMetricFamily("ringsync_write_through_safe", "Artifacts reported safe",
                                       labels=labels)
            safe.add_metric([name], figures["safe_total"])
            yield from (queued, safe)
        if src.gossip is not None:
            figures = src.gossip()
            for counter, help_text in (("rounds", "Gossip rounds"),
                                       ("exchanges", "Manifest exchanges with peers"),
                                       ("exchange_failures", "Failed manifest exchanges"),
                                       ("pulls_requested", "Copies asked of holders"),
                                       ("pulls_arrived", "Asked-for copies that arrived")):
                family = CounterMetricFamily(f"ringsync_gossip_{counter}", help_text,
                                             labels=labels)
                family.add_metric([name], figures[counter])
                yield family

    @staticmethod
    def _scrub(src: MetricSources) -> Iterator[Metric]:
        """The scrub's progress and what it found, and what this node hashed in all."""
        labels, name = ["node"], src.name
        status = src.scrub()
        passes = CounterMetricFamily("ringsync_scrub_passes", "Completed scrub passes",
                                     labels=labels)
        passes.add_metric([name], status["passes"])
        progress = GaugeMetricFamily("ringsync_scrub_progress_bytes",
                                     "Bytes scrubbed in the current pass", labels=labels)
        progress.add_metric([name], status["bytes_done"])
        held = GaugeMetricFamily("ringsync_scrub_pass_bytes", "Bytes of stored copies in the"
                                 " current pass", labels=labels)
        held.add_metric([name], status["bytes_total"])
        findings = CounterMetricFamily("ringsync_scrub_findings", "Copies the scrub checked,"
                                       " by verdict", labels=["node", "verdict"])
        for verdict in ("matched", "mismatched", "missing"):
            findings.add_metric([name, verdict], status["findings"][verdict])
        hashed = CounterMetricFamily("ringsync_hashed_bytes", "Bytes this node read and hashed"
                                     " (vouches, scrub, verification)", labels=labels)
        hashed.add_metric([name], src.hashed_bytes())
        yield from (passes, progress, held, findings, hashed)

    @staticmethod
    def _pressure(src: MetricSources) -> Iterator[Metric]:
        """The disk-pressure level and what cleanup deleted (nodes with pressure only)."""
        if src.pressure_level is None:
            return
        labels, name = ["node"], src.name
        level = GaugeMetricFamily("ringsync_disk_pressure_level",
                                  "0 normal, 1 push (50 %), 2 urgent (70 %), 3 cleanup (75 %)",
                                  labels=labels)
        level.add_metric([name], LEVELS.index(src.pressure_level()))
        totals = src.cleanup() if src.cleanup is not None else {}
        deleted = CounterMetricFamily("ringsync_cleanup_deleted", "Sources deleted behind live-"
                                      "vouched copies", labels=labels)
        deleted.add_metric([name], totals.get("deleted", 0))
        freed = CounterMetricFamily("ringsync_cleanup_freed_bytes", "Bytes freed by cleanup",
                                    labels=labels)
        freed.add_metric([name], totals.get("freed_bytes", 0))
        yield from (level, deleted, freed)


class NodeMetrics:
    """The node's registry; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, sources: MetricSources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(sources))

    def render(self) -> bytes:
        return generate_latest(self.registry)
