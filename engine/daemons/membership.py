"""Membership: the coordinator asks every node for ``/status`` on an interval.

``check_all`` is one round; the node runs it as the supervised ``membership`` service
(``engine.runtime``).

States: ``unknown`` (never answered yet), ``up`` (answered the last check),
``suspect`` (was up, missed at least ``suspect_after_misses``), ``down`` (missed
``down_after_misses``). A down node that
answers again is ``up`` with NODE_RECOVERED. The last status each node gave is kept
(one per node, replaced each time) for the facade and the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.config.schema import Membership
from engine.events import NodeDown, NodeRecovered, NodeSuspect, Payload
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest
from engine.peer_client import PeerClient, PeerError

log = logging.getLogger(__name__)


@dataclass
class Member:
    """What the coordinator knows about one node."""

    name: str
    state: str = "unknown"
    """``unknown`` before the first check, then ``up``, ``suspect`` or ``down``."""
    misses: int = 0
    last_seen: float | None = None
    down_since: float | None = None
    last_error: str | None = None
    status: dict[str, Any] | None = None
    """The node's last ``/status`` answer."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "misses": self.misses,
                "last_seen": self.last_seen, "last_error": self.last_error,
                "status": self.status}


class MembershipDaemon:
    """Runs on the coordinator; every other node just answers ``/status``."""

    def __init__(self, name: str, nodes: Iterable[str], cfg: Membership, *, peers: PeerClient,
                 emit: Callable[[Payload], object], manifest: ClusterManifest) -> None:
        self.name = name
        """This (the coordinator's) node name."""
        self.interval = cfg.interval_seconds
        self.suspect_after = cfg.suspect_after_misses
        self.down_after = cfg.down_after_misses
        self.members: dict[str, Member] = {n: Member(n) for n in nodes if n != name}
        """Every other node, by name."""
        self._peers = peers
        self._emit = emit
        self.manifest = manifest
        """Where a node's reported disk usage goes (``set_capacity``: its capacity row)."""

    def is_down(self, name: str) -> bool:
        member = self.members.get(name)
        return member is not None and member.state == "down"

    async def check_all(self) -> None:
        """One round (the ``membership`` service's step, every ``interval``): ask every node.
        A node that does not answer is a miss; anything else that fails here (the manifest
        refusing a capacity row) fails the step, and the supervisor reports it."""
        await asyncio.gather(*(self._check(m) for m in self.members.values()))

    async def _check(self, member: Member) -> None:
        try:
            status = await self._peers.get(member.name, "/status",
                                           timeout=max(1.0, self.interval))
        except PeerError as exc:
            self._missed(member, str(exc))
            return
        if not isinstance(status, dict):
            self._missed(member, f"{member.name} answered /status without an object")
            return
        self._answered(member, status)

    def _answered(self, member: Member, status: dict[str, Any]) -> None:
        now = time.time()
        if member.state == "down":
            down_for = now - (member.down_since or now)
            self._emit(NodeRecovered(node=member.name, down_seconds=round(down_for, 2)))
        member.state, member.misses, member.last_seen = "up", 0, now
        member.down_since, member.last_error, member.status = None, None, status
        disk = status.get("disk", {})
        if "used_bytes" in disk and "total_bytes" in disk:
            self.manifest.set_capacity(member.name, disk["used_bytes"], disk["total_bytes"])

    def _missed(self, member: Member, error: str) -> None:
        member.misses += 1
        member.last_error = error
        if member.misses >= self.down_after and member.state != "down":
            member.state, member.down_since = "down", time.time()
            self._emit(NodeDown(node=member.name, misses=member.misses, error=error))
        elif (self.suspect_after <= member.misses < self.down_after
              and member.state == "up"):  # a node never seen yet is not "suspect", just not up
            member.state = "suspect"
            self._emit(NodeSuspect(node=member.name, misses=member.misses, error=error))

    def view(self) -> dict[str, Any]:
        return {name: m.to_dict() for name, m in self.members.items()}

    def health_check(self) -> HealthCheckResult:
        down = sorted(n for n, m in self.members.items() if m.state == "down")
        message = "all nodes up" if not down else f"{len(down)} node(s) down: {', '.join(down)}"
        return HealthCheckResult(True, message, {"down": down, "interval": self.interval})
