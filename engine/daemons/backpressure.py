"""Backpressure: a receiver that should not take normal syncs says so.

A node announces BACKPRESSURE_ACTIVATED when its usage reaches
``sync_routing.max_disk_usage_percent`` (reason ``disk``) or when ``max_inbound_queue``
uploads are in progress at once (reason ``queue``), and BACKPRESSURE_RELEASED once usage is
``HYSTERESIS_PERCENT`` below the limit and the queue at most half the limit. While active,
``PUT /v1/objects`` answers a normal (non-urgent) upload with ``503`` and
``X-Ringsync-Backpressure: <reason>`` (an urgent one is still taken when there is room), and
``/status`` carries ``backpressure`` so the coordinator's membership, and through it every
sender's cluster view, learns it. Senders hold normal syncs to the node and send urgent
ones elsewhere (``engine.router``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from engine.events import BackpressureActivated, BackpressureReleased, Payload
from engine.health import HealthCheckResult

HYSTERESIS_PERCENT = 2.0
"""Usage must fall this far below the limit before disk backpressure is released."""


class BackpressureMonitor:
    """This node's backpressure state; checked on every upload and every capacity refresh."""

    def __init__(self, node: str, max_percent: float, max_queue: int, *,
                 disk_percent: Callable[[], float], uploads: Collection[object],
                 emit: Callable[[Payload], object]) -> None:
        self.node = node
        """This node's name."""
        self.max_percent = max_percent
        """``sync_routing.max_disk_usage_percent``."""
        self.max_queue = max_queue
        """``sync_routing.max_inbound_queue``."""
        self._disk_percent = disk_percent
        self.uploads = uploads
        """The uploads in progress now (the node's live set): the inbound queue."""
        self._emit = emit
        self.reason: str | None = None
        """``disk`` or ``queue`` while active, else None."""
        self.since: float | None = None
        self.refused = 0
        """Normal uploads refused while active."""
        self.activations = 0

    @property
    def active(self) -> bool:
        return self.reason is not None

    def queue_depth(self) -> int:
        return len(self.uploads)

    def check(self) -> str | None:
        """Re-evaluate against current usage and queue; announce a change; the reason."""
        percent = self._disk_percent()
        depth = self.queue_depth()
        disk_over = percent >= self.max_percent or (
            self.reason == "disk" and percent >= self.max_percent - HYSTERESIS_PERCENT)
        queue_over = depth >= self.max_queue or (
            self.reason == "queue" and depth > self.max_queue // 2)
        reason = "disk" if disk_over else "queue" if queue_over else None
        if reason != self.reason:
            if reason is None:
                self._emit(BackpressureReleased(
                    node=self.node, disk_percent=percent, queue_depth=depth))
                self.since = None
            else:
                self.activations += 1
                self.since = time.time()
                self._emit(BackpressureActivated(
                    node=self.node, disk_percent=percent, queue_depth=depth,
                    reason=reason))
            self.reason = reason
        return self.reason

    def refuses(self, urgent: bool) -> str | None:
        """The reason to refuse an upload now (None: take it). Urgent uploads are taken."""
        reason = self.check()
        if reason is None or urgent:
            return None
        self.refused += 1
        return reason

    def status(self) -> dict[str, Any]:
        return {"active": self.active, "reason": self.reason, "since": self.since,
                "queue_depth": self.queue_depth(), "max_inbound_queue": self.max_queue,
                "max_disk_usage_percent": self.max_percent, "refused": self.refused,
                "activations": self.activations}

    def health_check(self) -> HealthCheckResult:
        if self.reason is None:
            return HealthCheckResult(True, "accepting syncs", self.status())
        return HealthCheckResult(True, f"backpressure ({self.reason}): holding normal syncs",
                                 self.status())
