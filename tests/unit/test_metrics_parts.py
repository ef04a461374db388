"""NodeMetrics without a Node: a real EventBus and TransferTracker, small fakes of the
other figures; the rendered text is parsed back with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.events import EventBus, NodeSuspect
from engine.metrics import MetricSources, NodeMetrics
from engine.transfers import TransferTracker

pytestmark = pytest.mark.unit


class Figures:
    """Mutable stand-ins for the node's components, read at each scrape."""

    def __init__(self) -> None:
        self.disk = {"used_bytes": 300, "total_bytes": 1000}
        self.sync = {"pending": 4, "pushed_files": 7, "failed": 1}
        self.pressured = False
        self.breakers = ["cpu-1"]
        self.scrub = {"passes": 2, "bytes_done": 50, "bytes_total": 80,
                      "findings": {"matched": 5, "mismatched": 1, "missing": 0}}
        self.hashed = 4096
        self.level = "urgent"
        self.members = {"gpu-2": "up", "cpu-1": "down"}


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted({"node": "gpu-1", **labels}.items())))]


def sources(bus: EventBus, transfers: TransferTracker, figures: Figures,
            **optional: Any) -> MetricSources:
    return MetricSources(
        "gpu-1", bus, disk=lambda: figures.disk, artifacts=lambda: {"npz": 3, "db": 1},
        sync=lambda: figures.sync,
        bandwidth=lambda: {"hosts": {"coord": {"total_bytes": 900, "limit_mbps": 50.0}}},
        transfers=transfers, backpressure=lambda: figures.pressured,
        open_breakers=lambda: figures.breakers, scrub=lambda: figures.scrub,
        hashed_bytes=lambda: figures.hashed, **optional)


def test_every_figure_is_read_at_scrape_time() -> None:
    bus, transfers, figures = EventBus("gpu-1"), TransferTracker(), Figures()
    metrics = NodeMetrics(sources(
        bus, transfers, figures, pressure_level=lambda: figures.level,
        cleanup=lambda: {"deleted": 2, "freed_bytes": 2048},
        members=lambda: figures.members))
    bus.emit(NodeSuspect(node="cpu-1", misses=1, error="test"))
    bus.emit(NodeSuspect(node="cpu-1", misses=2, error="test"))
    transfers.start(direction="in", source="cpu-1", target="gpu-1", artifact="npz/a.npz",
                    size=10, transport="http", offset=0)
    found = samples(metrics.render())
    assert value(found, "ringsync_disk_used_bytes") == 300
    assert value(found, "ringsync_disk_capacity_bytes") == 1000
    assert value(found, "ringsync_artifacts", data_type="npz") == 3
    assert value(found, "ringsync_pending_pushes") == 4
    assert value(found, "ringsync_pushed_files_total") == 7
    assert value(found, "ringsync_push_failures_total") == 1
    assert value(found, "ringsync_sent_bytes_total", target="coord") == 900
    assert value(found, "ringsync_bandwidth_limit_mbps", target="coord") == 50.0
    assert value(found, "ringsync_transfers_in_flight", direction="in") == 1
    assert value(found, "ringsync_transfers_in_flight", direction="out") == 0
    assert value(found, "ringsync_events_total", type="NODE_SUSPECT") == 2
    assert value(found, "ringsync_backpressure") == 0
    assert value(found, "ringsync_breaker_open", target="cpu-1") == 1
    assert value(found, "ringsync_scrub_findings_total", verdict="mismatched") == 1
    assert value(found, "ringsync_hashed_bytes_total") == 4096
    assert value(found, "ringsync_disk_pressure_level") == 2
    assert value(found, "ringsync_cleanup_freed_bytes_total") == 2048
    assert value(found, "ringsync_member_up", member="gpu-2") == 1
    assert value(found, "ringsync_member_up", member="cpu-1") == 0

    figures.disk = {"used_bytes": 600, "total_bytes": 1000}
    figures.pressured, figures.breakers, figures.level = True, [], "normal"
    figures.members = {"gpu-2": "down", "cpu-1": "down"}
    found = samples(metrics.render())
    assert value(found, "ringsync_disk_used_bytes") == 600
    assert value(found, "ringsync_backpressure") == 1
    assert not any(name == "ringsync_breaker_open" for name, _ in found)
    assert value(found, "ringsync_disk_pressure_level") == 0
    assert value(found, "ringsync_member_up", member="gpu-2") == 0
    bus.close()


def test_optional_parts_are_left_out_and_strategy_figures_shown_when_given() -> None:
    bus, transfers, figures = EventBus("gpu-1"), TransferTracker(), Figures()
    plain = {name for name, _ in samples(NodeMetrics(sources(bus, transfers, figures)).render())}
    assert not {n for n in plain if n.startswith(("ringsync_gossip", "ringsync_write_through",
                                                  "ringsync_disk_pressure", "ringsync_cleanup",
                                                  "ringsync_member"))}
    gossip = {"rounds": 9, "exchanges": 8, "exchange_failures": 1, "pulls_requested": 3,
              "pulls_arrived": 2}
    found = samples(NodeMetrics(sources(
        bus, transfers, figures, gossip=lambda: gossip,
        write_through=lambda: {"queued": 5, "safe_total": 11})).render())
    assert value(found, "ringsync_gossip_rounds_total") == 9
    assert value(found, "ringsync_gossip_pulls_arrived_total") == 2
    assert value(found, "ringsync_write_through_queued") == 5
    assert value(found, "ringsync_write_through_safe_total") == 11
    bus.close()
