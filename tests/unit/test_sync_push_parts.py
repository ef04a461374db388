"""SyncPushDaemon without a Node: a scripted ``measure``, a real EventBus and PauseGate, and
small stand-ins for the Recovery and Cleaner it drives (their own tests are elsewhere)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.config.schema import PushThresholds
from engine.daemons.cleanup import CleanupReport
from engine.daemons.push import REASON, SyncPushDaemon
from engine.daemons.recovery import Shortfall
from engine.events import EventBus, EventType
from engine.manifest import Artifact
from engine.pause import PauseGate

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

TOTAL = 1000


class Disk:
    """``measure``: the next scripted percentage each call."""

    def __init__(self) -> None:
        self.percent = 0.0
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"percent": self.percent, "used_bytes": int(self.percent * TOTAL / 100),
                "total_bytes": TOTAL}


def art(n: int) -> Artifact:
    return Artifact("npz", f"k/{n}.npz", "k", 10 * n, f"{n:064x}", float(n), "gpu-1")


class FakeRecovery:
    def __init__(self, found: int = 0) -> None:
        self.found = [Shortfall(art(n), frozenset()) for n in range(1, found + 1)]
        self.calls: list[tuple[list[str], str, str, int | None]] = []
        self.counted: list[tuple[int, Any]] = []
        """Each ``shortfalls`` call: its budget and the live answers it was given."""

    async def shortfalls(self, budget: int = 0, known: Any = None) -> list[Shortfall]:
        self.counted.append((budget, known))
        return list(self.found)

    async def replicate(self, found: list[Shortfall], reason: str, urgency: str = "normal",
                        limit: int | None = None) -> dict[str, list[Artifact]]:
        self.calls.append(([s.artifact.key for s in found], reason, urgency, limit))
        sent = [s.artifact for s in found[:limit]]
        return {"coord": sent} if sent else {}


class FakeCleaner:
    def __init__(self) -> None:
        self.runs: list[tuple[str, float]] = []
        self.totals = {"deleted": 0}

    async def run(self, reason: str, disk: dict[str, Any]) -> CleanupReport:
        self.runs.append((reason, disk["percent"]))
        return CleanupReport(percent_before=disk["percent"], percent_after=disk["percent"],
                             short_of_copies=2, short={art(7).ident: {"coord"}, art(8).ident: set()})


def make(recovery: FakeRecovery | None = None, **thresholds: Any):
    bus = EventBus("gpu-1")
    disk, cleaner = Disk(), FakeCleaner()
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    pause = PauseGate("gpu-1", bus.emit)
    daemon = SyncPushDaemon("gpu-1", PushThresholds(batch_files=2, urgent_batch_files=3,
                                                    **thresholds),
                            measure=disk, refresh_view=refresh,
                            recovery=recovery or FakeRecovery(),  # type: ignore[arg-type]
                            cleaner=cleaner, pause=pause, emit=bus.emit)  # type: ignore[arg-type]
    return daemon, disk, bus, cleaner, pause, refreshed


def changes(bus: EventBus) -> list[tuple[str, str, float]]:
    return [(e.payload.previous, e.payload.level, e.payload.percent) for e in bus.recent()
            if e.type is EventType.DISK_PRESSURE_CHANGED]


async def settle(daemon: SyncPushDaemon) -> None:
    if daemon._batch is not None:
        await daemon._batch


async def test_level_changes_are_events_with_hysteresis() -> None:
    daemon, disk, bus, cleaner, _pause, _ = make()
    steps = [(40, "normal"), (55, "push"), (49, "push"), (48.5, "push"), (47, "normal"),
             (72, "urgent"), (80, "cleanup"), (74, "cleanup"), (72.9, "urgent"), (10, "normal")]
    for percent, level in steps:
        disk.percent = percent
        await daemon.run_cycle()
        await settle(daemon)
        assert (daemon.level, daemon.percent) == (level, percent), percent
    assert changes(bus) == [("normal", "push", 55), ("push", "normal", 47),
                            ("normal", "urgent", 72), ("urgent", "cleanup", 80),
                            ("cleanup", "urgent", 72.9), ("urgent", "normal", 10)]
    [event] = [e for e in bus.recent() if e.type is EventType.DISK_PRESSURE_CHANGED][:1]
    assert (event.payload.node, event.payload.used_bytes, event.payload.total_bytes) == (
        "gpu-1", 550, TOTAL)
    # cleanup runs only at or above cleanup_percent, not in the hysteresis band below it
    assert cleaner.runs == [(REASON, 80)]
    assert daemon.totals["cycles"] == len(steps) == disk.calls
    await daemon.stop()


async def test_pressure_pushes_own_shortfalls_in_batches_urgent_first() -> None:
    recovery = FakeRecovery(found=5)
    daemon, disk, _bus, _cleaner, _pause, refreshed = make(recovery)
    disk.percent = 55
    await daemon.run_cycle()
    await settle(daemon)
    own = [f"npz/k/{n}.npz" for n in range(1, 6)]
    assert recovery.calls == [(own, REASON, "normal", 2)]
    assert recovery.counted == [(2, None)], "a batch's worth asked live, no cleanup answers"
    assert refreshed == [1]
    assert daemon.totals["pushed_files"] == 2 and daemon.totals["pushed_bytes"] == 30
    assert daemon.wakeup.is_set(), "a full batch went out and more waits: go again now"
    disk.percent = 71
    await daemon.run_cycle()
    await settle(daemon)
    assert recovery.calls[-1] == (own, REASON, "urgent", 3)
    disk.percent = 80
    await daemon.run_cycle()
    await settle(daemon)
    assert recovery.counted[-1] == (3, {art(7).ident: {"coord"}, art(8).ident: set()}), \
        "the cleanup run's live answers are what the batch counts"
    await daemon.stop()


async def test_a_paused_node_changes_level_but_neither_pushes_nor_cleans() -> None:
    recovery = FakeRecovery(found=1)
    daemon, disk, bus, cleaner, pause, _ = make(recovery)
    pause.set(True, "operator")
    disk.percent = 90
    await daemon.run_cycle()
    assert daemon.level == "cleanup" and changes(bus) == [("normal", "cleanup", 90)]
    assert daemon._batch is None and recovery.calls == [] and cleaner.runs == []
    health = daemon.health_check()
    assert health.is_healthy and health.message == "disk pressure cleanup"
    pause.set(False, "operator")
    await daemon.run_cycle()
    await settle(daemon)
    assert cleaner.runs == [(REASON, 90)] and len(recovery.calls) == 1
    health = daemon.health_check()
    assert not health.is_healthy and "short of verified copies for 2 artifacts" in health.message
    await daemon.stop()


async def test_a_failing_batch_is_reported_and_the_next_cycle_tries_again() -> None:
    recovery = FakeRecovery(found=1)

    async def broken(*_args: Any, **_kwargs: Any) -> dict[str, list[Artifact]]:
        raise RuntimeError("manifest is locked")

    recovery.replicate = broken  # type: ignore[method-assign]
    daemon, disk, _bus, _cleaner, _pause, refreshed = make(recovery)
    disk.percent = 60
    await daemon.run_cycle()
    await settle(daemon)
    assert daemon.last_error == "RuntimeError: manifest is locked"
    await daemon.run_cycle()
    await settle(daemon)
    assert refreshed == [1, 1]
    await daemon.stop()


async def test_stop_cancels_a_batch_under_way() -> None:
    recovery = FakeRecovery(found=1)
    hold = asyncio.Event()

    async def slow(*_args: Any, **_kwargs: Any) -> dict[str, list[Artifact]]:
        await hold.wait()
        return {}

    recovery.replicate = slow  # type: ignore[method-assign]
    daemon, disk, _bus, _cleaner, _pause, _ = make(recovery)
    disk.percent = 60
    await daemon.run_cycle()
    batch = daemon._batch
    assert batch is not None
    await daemon.run_cycle()
    assert daemon._batch is batch, "one batch at a time: measuring goes on meanwhile"
    await daemon.stop()
    assert batch.cancelled() and daemon._batch is None
