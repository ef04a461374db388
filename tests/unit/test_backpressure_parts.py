"""BackpressureMonitor without a Node: a real EventBus, the uploads-in-progress set the
receive path keeps, and a disk-usage callable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.daemons.backpressure import HYSTERESIS_PERCENT, BackpressureMonitor
from engine.events import EventBus, EventType

pytestmark = pytest.mark.unit


class Parts:
    def __init__(self) -> None:
        self.bus = EventBus("cpu-1")
        self.percent = 10.0
        self.uploads: set[Path] = set()
        self.monitor = BackpressureMonitor("cpu-1", 70.0, 4, disk_percent=lambda: self.percent,
                                           uploads=self.uploads, emit=self.bus.emit)

    def events(self) -> list[tuple[str, Any]]:
        return [(e.type.value, getattr(e.payload, "reason", None))
                for e in self.bus.recent(100)
                if e.type in (EventType.BACKPRESSURE_ACTIVATED, EventType.BACKPRESSURE_RELEASED)]


def test_disk_backpressure_activates_at_the_limit_and_releases_below_the_band() -> None:
    p = Parts()
    assert p.monitor.check() is None and p.events() == []
    p.percent = 70.0
    assert p.monitor.check() == "disk" and p.monitor.active and p.monitor.since is not None
    p.percent = 70.0 - HYSTERESIS_PERCENT  # inside the band: still held
    assert p.monitor.check() == "disk"
    p.percent = 70.0 - HYSTERESIS_PERCENT - 0.1
    assert p.monitor.check() is None and p.monitor.since is None
    assert p.events() == [("BACKPRESSURE_ACTIVATED", "disk"), ("BACKPRESSURE_RELEASED", None)]
    [activated] = [e.payload for e in p.bus.recent(100)
                   if e.type is EventType.BACKPRESSURE_ACTIVATED]
    assert (activated.node, activated.disk_percent, activated.queue_depth) == ("cpu-1", 70.0, 0)
    assert p.monitor.activations == 1


def test_queue_backpressure_follows_the_uploads_in_progress() -> None:
    p = Parts()
    p.uploads.update(Path(f"/parts/{i}") for i in range(4))
    assert p.monitor.check() == "queue" and p.monitor.queue_depth() == 4
    p.uploads.discard(Path("/parts/0"))  # 3 > half of 4: still held
    assert p.monitor.check() == "queue"
    p.uploads.discard(Path("/parts/1"))
    assert p.monitor.check() is None
    assert p.events() == [("BACKPRESSURE_ACTIVATED", "queue"), ("BACKPRESSURE_RELEASED", None)]


def test_normal_uploads_are_refused_while_active_urgent_ones_taken() -> None:
    p = Parts()
    assert p.monitor.refuses(urgent=False) is None
    p.percent = 95.0
    assert p.monitor.refuses(urgent=True) is None
    assert p.monitor.refuses(urgent=False) == "disk"
    status = p.monitor.status()
    assert (status["active"], status["reason"], status["refused"]) == (True, "disk", 1)
    assert status["max_disk_usage_percent"] == 70.0 and status["max_inbound_queue"] == 4
    health = p.monitor.health_check()
    assert health.is_healthy and health.message == "backpressure (disk): holding normal syncs"
