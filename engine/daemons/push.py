"""SyncPushDaemon: disk pressure on a producing node, handled without losing data.

Every ``push.interval_seconds`` it measures usage against the node's capacity (its quota
when one is configured, else its disk) and acts on the level it finds:

    below push_percent (50)    normal: routine sync only (AutoSyncDaemon -> coordinator)
    >= push_percent            push: bring the oldest finished artifacts, ``batch_files`` per
                               cycle, up to ``min_copies_before_delete`` verified copies on
                               other nodes: the router's targets (the coordinator) first,
                               then ``SyncRouter.replica_targets`` by free space
    >= urgent_percent (70)     urgent: the same with ``urgent_batch_files`` per cycle, and each
                               push takes a transfer slot ahead of normal pushes
    >= cleanup_percent (75)    cleanup: also delete own sources that enough other nodes vouch
                               for, asked live (``engine.daemons.cleanup``), oldest first,
                               until usage is under cleanup_percent again

A level change is a DISK_PRESSURE_CHANGED event. Pushes are the one push path
(``Recovery.replicate`` -> ``PushPath.push``), with reason ``disk_pressure`` and
the urgency on DATA_SYNC_STARTED / DATA_SYNC_COMPLETED. A paused node neither pushes nor
deletes. It runs on every node but the coordinator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.config.schema import PushThresholds
from engine.daemons.cleanup import Cleaner, CleanupReport
from engine.daemons.recovery import Recovery
from engine.errors import describe
from engine.events import DiskPressureChanged, Payload
from engine.health import HealthCheckResult
from engine.pause import PauseGate
from engine.runtime import TaskSet

log = logging.getLogger(__name__)

LEVELS = ("normal", "push", "urgent", "cleanup")
REASON = "disk_pressure"


HYSTERESIS_PERCENT = 2.0
"""A level is left downwards only this far below its threshold, so usage hovering around a
threshold does not flap between levels (and events)."""


def pressure_level(percent: float, thresholds: PushThresholds, current: str = "normal") -> str:
    """The level for ``percent`` used: normal, push, urgent or cleanup. Coming from ``current``,
    a lower level needs usage ``HYSTERESIS_PERCENT`` below ``current``'s threshold."""
    bounds = {"push": thresholds.push_percent, "urgent": thresholds.urgent_percent,
              "cleanup": thresholds.cleanup_percent}
    level = "normal"
    for name in ("push", "urgent", "cleanup"):
        if percent >= bounds[name]:
            level = name
    if LEVELS.index(level) < LEVELS.index(current) and \
            percent >= bounds[current] - HYSTERESIS_PERCENT:
        return current
    return level


class SyncPushDaemon:
    """Pushes under disk pressure and cleans up behind verified copies, for one node."""

    def __init__(self, node: str, thresholds: PushThresholds, *,
                 measure: Callable[[], Awaitable[dict[str, Any]]],
                 refresh_view: Callable[[], Awaitable[object]], recovery: Recovery,
                 cleaner: Cleaner, pause: PauseGate, emit: Callable[[Payload], object]) -> None:
        self.node = node
        self.thresholds = thresholds
        """push/urgent/cleanup percentages and min_copies_before_delete."""
        self._measure = measure
        """Measures usage now (``DiskUsage.refresh``)."""
        self._refresh_view = refresh_view
        """Fetches free space and down nodes now (``ClusterViewRefresher.refresh``)."""
        self.recovery = recovery
        self.pause = pause
        self._emit = emit
        self.level = "normal"
        """The level found by the last cycle."""
        self.percent = 0.0
        """Usage found by the last cycle, in percent of capacity."""
        self.cleaner = cleaner
        """Deletes sources behind live-vouched copies at the cleanup level."""
        self.last_cleanup: CleanupReport | None = None
        self.totals = {"cycles": 0, "pushed_files": 0, "pushed_bytes": 0}
        """Running counts since start (pushes made because of disk pressure)."""
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._tasks = TaskSet(f"sync_push on {node}")
        self._batch: asyncio.Task[None] | None = None

    @property
    def wakeup(self) -> asyncio.Event:
        """Set when a full batch went out and more waits: the service's next step now."""
        return self._wake

    async def stop(self) -> None:
        """Cancel the batch of pushes under way (the cycles are the supervisor's)."""
        await self._tasks.close()
        self._batch = None

    def wake(self) -> None:
        """Measure and act now instead of at the next interval."""
        self._wake.set()

    async def run_cycle(self) -> None:
        """Measure, set the level, clean up at the cleanup level, and start the next batch
        of pressure pushes unless one is still running (pushes never delay measuring). The
        supervised ``sync_push`` service's step, every ``interval_seconds`` or when woken."""
        disk = await self._measure()
        self._set_level(pressure_level(disk["percent"], self.thresholds, self.level), disk)
        self.totals["cycles"] += 1
        if self.level == "normal" or self.pause.paused:
            return
        known = None
        if disk["percent"] >= self.thresholds.cleanup_percent:  # not just the level's
            self.last_cleanup = await self.cleaner.run(REASON, disk)  # hysteresis band
            known = self.last_cleanup.short
        if self._batch is None or self._batch.done():
            await self._refresh_view()  # free space and down nodes, fresh
            urgent = self.level in ("urgent", "cleanup")
            self._batch = self._tasks.spawn(self._push_batch(urgent, known),
                                            name=f"sync-push-batch:{self.node}")

    async def _push_batch(self, urgent: bool,
                          known: dict[Any, set[str]] | None = None) -> None:
        """Bring the oldest under-replicated own artifacts towards min_copies; wakes the daemon
        at once when a full batch went out and more is waiting. What is short is a recount
        (``Recovery.shortfalls``): the live answers of this cycle's cleanup run (``known``)
        as they are, and at most a batch of the versions the manifest calls sufficiently
        copied asked live."""
        batch = self.thresholds.urgent_batch_files if urgent else self.thresholds.batch_files
        recovery = self.recovery
        try:
            found = await recovery.shortfalls(budget=batch, known=known)
            arrived = await recovery.replicate(found, REASON, "urgent" if urgent else "normal",
                                               batch)
        except Exception as exc:  # the next cycle starts another batch
            self.last_error = describe(exc)
            log.exception("pressure pushes failed on %s", self.node)
            return
        for arts in arrived.values():
            self.totals["pushed_files"] += len(arts)
            self.totals["pushed_bytes"] += sum(a.size for a in arts)
        if arrived and len(found) > batch:
            self._wake.set()

    def _set_level(self, level: str, disk: dict[str, Any]) -> None:
        self.percent = disk["percent"]
        if level == self.level:
            return
        previous, self.level = self.level, level
        log.info("%s disk pressure %s -> %s at %.1f%%", self.node, previous, level,
                 disk["percent"])
        self._emit(DiskPressureChanged(
            node=self.node, level=level, previous=previous, percent=disk["percent"],
            used_bytes=disk["used_bytes"], total_bytes=disk["total_bytes"]))

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        last = self.last_cleanup
        return {"level": self.level, "percent": self.percent,
                "interval_seconds": self.thresholds.interval_seconds, **self.totals,
                "cleanup": {**self.cleaner.totals, "last": None if last is None else {
                    "deleted": len(last.deleted), "freed_bytes": last.freed_bytes,
                    "percent_before": last.percent_before, "percent_after": last.percent_after,
                    "short_of_copies": last.short_of_copies, "unfinished": last.unfinished,
                    "busy": last.busy}},
                "last_error": self.last_error, "time": time.time()}

    def health_check(self) -> HealthCheckResult:
        details = {"level": self.level, "percent": self.percent}
        last = self.last_cleanup
        if self.level == "cleanup" and last is not None and last.percent_after >= \
                self.thresholds.cleanup_percent:
            return HealthCheckResult(False, f"disk at {self.percent:.1f}%: cleanup is short of "
                                     f"verified copies for {last.short_of_copies} artifacts",
                                     details)
        return HealthCheckResult(True, f"disk pressure {self.level}", details)
