"""ClusterView: what one node knows of the others — up or down, free space, backpressure.

The coordinator's membership asks every node for ``/status`` each second; the view there
reads membership directly. Every other node refreshes its view from the coordinator's
``GET /v1/cluster`` every ``sync_routing.capacity_refresh_seconds`` (at most 30 s): which
nodes are down, each node's used/total bytes (stored as manifest capacity rows, which the
router reads) and which nodes announce backpressure. Between refreshes the view also
learns first-hand: a push refused with ``503`` + ``X-Ringsync-Backpressure`` marks that
target at once (``SyncRouter.backpressure``).

A change seen in a refresh (a node back up, backpressure on or off) goes to the router's
handlers, the same ones the node's own event bus feeds (``SyncRouter.on_event``), so the
router reacts the same way to an event emitted here and to one seen through the coordinator.
Without an answer from the coordinator the last view stands. That is memory, not news: after
``FAIL_AFTER_MISSES`` refreshes in a row without one (a coordinator partitioned away, down,
or answering garbage) the ``cluster_view`` step fails, so the supervisor emits
COMPONENT_FAILED, ``/health`` names it and the log says so; the first answer after that is
COMPONENT_RECOVERED. One miss alone is only logged, and so is a coordinator that has not
answered yet in the first ``STARTUP_GRACE_SECONDS`` (nodes start in any order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.peer_client import PeerClient, PeerError

log = logging.getLogger(__name__)

Listener = Callable[[str, "str | None"], None]

FAIL_AFTER_MISSES = 2
"""Refreshes in a row without a usable answer from the coordinator before the step fails."""
STARTUP_GRACE_SECONDS = 30.0
"""Before the coordinator's first answer since start, the step fails only after this long."""


class NoClusterView(Exception):
    """The coordinator gave no usable ``/v1/cluster`` answer ``FAIL_AFTER_MISSES`` times in a
    row: this node is acting on a view that may be stale."""


class ClusterView:
    """Down nodes and backpressure as this node last learned them (capacity lives in the
    manifest's capacity table)."""

    def __init__(self, is_down: Callable[[str], bool] | None = None) -> None:
        self._membership_is_down = is_down
        self.down: set[str] = set()
        """Nodes reported down (off the coordinator: by the coordinator's last answer)."""
        self.backpressure: dict[str, str] = {}
        """Node -> reason (``disk`` or ``queue``) for every node announcing backpressure."""
        self.refreshed_at: float | None = None
        """Unix time of the last successful refresh (None: never)."""
        self.last_error: str | None = None

    def is_down(self, name: str) -> bool:
        if self._membership_is_down is not None:
            return self._membership_is_down(name)
        return name in self.down

    def apply(self, members: dict[str, Any], known: set[str],
              on_recovered: Callable[[str], None],
              on_backpressure: Callable[[str, str | None], None],
              set_capacity: Callable[[str, int, int], None]) -> None:
        """Take a ``/v1/cluster`` members map: down set, capacity rows, backpressure; report
        every change to the handlers."""
        down: set[str] = set()
        for name, member in members.items():
            if name not in known or not isinstance(member, dict):
                continue
            if member.get("state") == "down":
                down.add(name)
            status = member.get("status") or {}
            disk = status.get("disk") or {}
            if isinstance(disk.get("used_bytes"), int) and isinstance(disk.get("total_bytes"), int):
                set_capacity(name, disk["used_bytes"], disk["total_bytes"])
            pressure = status.get("backpressure") or {}
            if member.get("state") == "up" and isinstance(pressure, dict):
                reason = pressure.get("reason") if pressure.get("active") else None
                if reason != self.backpressure.get(name):
                    on_backpressure(name, reason)
        if self._membership_is_down is None:
            back = self.down - down
            self.down = down
            for name in sorted(back):
                on_recovered(name)
        self.refreshed_at = time.time()
        self.last_error = None

    def to_dict(self) -> dict[str, Any]:
        return {"down": sorted(self.down), "backpressure": dict(sorted(self.backpressure.items())),
                "refreshed_at": self.refreshed_at, "last_error": self.last_error}


class ClusterViewRefresher:
    """Keeps a node's ``ClusterView`` fresh: from membership on the coordinator (``members``),
    else from the coordinator's ``/v1/cluster`` every ``interval`` seconds
    (``sync_routing.capacity_refresh_seconds``)."""

    def __init__(self, name: str, nodes: Iterable[str], coordinator: str, interval: float, *,
                 view: ClusterView, peers: PeerClient,
                 set_capacity: Callable[[str, int, int], None],
                 on_recovered: Callable[[str], None],
                 on_backpressure: Callable[[str, str | None], None],
                 members: Callable[[], dict[str, Any]] | None = None) -> None:
        self.name = name
        """This node's name."""
        self.known = set(nodes) - {name}
        """The other nodes: the only ones an answer is taken about."""
        self.coordinator = coordinator
        """The coordinator's node name (asked for ``/v1/cluster``)."""
        self.interval = interval
        """Seconds between refreshes."""
        self.view = view
        self._peers = peers
        self._set_capacity = set_capacity
        """Where a node's used/total bytes go (the manifest's capacity rows)."""
        self._on_recovered = on_recovered
        self._on_backpressure = on_backpressure
        """The router's handlers for a node back up and backpressure on or off."""
        self._members = members
        """Membership's view, on the coordinator (None elsewhere: ask the coordinator)."""
        self.misses = 0
        """Steps in a row that got no usable answer."""
        self._started = time.monotonic()

    async def step(self) -> None:
        """One refresh (the ``cluster_view`` service's step, every ``interval``); raises
        ``NoClusterView`` from the ``FAIL_AFTER_MISSES``-th miss in a row on (a refresh
        someone else asked for, e.g. a disk-pressure push, is not counted), and not before
        ``STARTUP_GRACE_SECONDS`` when the coordinator never answered since start (nodes
        start in any order)."""
        if await self.refresh():
            self.misses = 0
            return
        self.misses += 1
        if self.misses < FAIL_AFTER_MISSES or (
                self.view.refreshed_at is None
                and time.monotonic() - self._started < STARTUP_GRACE_SECONDS):
            log.info("no cluster view from %s: %s", self.coordinator, self.view.last_error)
            return
        age = (f"last answer {time.time() - self.view.refreshed_at:.0f} s ago"
               if self.view.refreshed_at is not None else "no answer since start")
        raise NoClusterView(f"no cluster view from {self.coordinator} ({self.misses} refreshes"
                            f" in a row, {age}): {self.view.last_error}")

    async def refresh(self) -> bool:
        """One refresh now; False when the coordinator gave no usable answer (kept as the
        view's ``last_error``). Anything else that fails raises: the step failed."""
        if self._members is not None:
            members = self._members()
        else:
            try:
                answer = await self._peers.get(self.coordinator, "/v1/cluster", timeout=5)
            except PeerError as exc:
                return self._missed(str(exc))
            members = answer.get("members") if isinstance(answer, dict) else None
            if not isinstance(members, dict):
                return self._missed(f"{self.coordinator} answered /v1/cluster without members")
            if isinstance(answer.get("self"), dict):  # the coordinator's own disk and backpressure
                members = {**members, self.coordinator: answer["self"]}
        self.view.apply(members, self.known, self._on_recovered, self._on_backpressure,
                        self._set_capacity)
        return True

    def _missed(self, error: str) -> bool:
        self.view.last_error = error
        return False
