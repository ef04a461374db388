"""ManifestPuller: the coordinator learns every node's replicas by deltas.

Coordinator only. Every ``membership.interval_seconds`` it asks each node that membership
does not report down for ``GET /v1/manifest?since=<cursor>&limit=2000`` and applies the
answer with ``ClusterManifest.merge_peer`` (which keeps the cursor and decides what a node is
believed about: only its own replicas, artifacts and deletions). While an answer says
``complete: false`` it asks again from the new cursor, up to ``MAX_PAGES`` answers a round.
Never a full-state exchange: a quiet node answers with no rows.

Bounded: at most one pull per node at a time (a slow node does not hold up the others; its
next pull starts in the first round after the last one ended). A node that does not answer
is logged at debug and asked again next round; membership reports it down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import describe
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest
from engine.manifest.store import TABLES
from engine.peer_client import PeerClient, PeerError
from engine.runtime import TaskSet

log = logging.getLogger(__name__)

PAGE_LIMIT = 2000
"""Rows per table in one answer."""
MAX_PAGES = 25
"""Answers taken from one node in one round; the rest comes next round."""
REQUEST_TIMEOUT_SECONDS = 30.0


class PullError(Exception):
    """A node's answer could not be had (unreachable, not 200, not JSON)."""


@dataclass
class PeerPull:
    """What the puller knows about one node's manifest."""

    name: str
    requests: int = 0
    """Answers asked for (failed ones included)."""
    rows_received: int = 0
    """Rows in the answers (every table, also those not merged)."""
    rows_merged: int = 0
    """Local rows the answers changed."""
    last_pull_at: float | None = None
    """When the last pull ended without an error."""
    last_error: str | None = None
    """The last pull's error; None once a pull succeeds."""
    merge_error: bool = False
    """The last error was this node's manifest failing to apply an answer (not the network)."""

    def to_dict(self, cursor: int, in_flight: bool) -> dict[str, Any]:
        return {"cursor": cursor, "requests": self.requests, "rows_received": self.rows_received,
                "rows_merged": self.rows_merged, "last_pull_at": self.last_pull_at,
                "last_error": self.last_error, "in_flight": in_flight}


class ManifestPuller:
    """Runs on the coordinator next to membership; its ``step`` is a supervised service."""

    def __init__(self, name: str, nodes: Iterable[str], interval: float, *,
                 manifest: ClusterManifest, peers: PeerClient,
                 is_down: Callable[[str], bool] | None = None) -> None:
        self.name = name
        """This (the coordinator's) node name."""
        self.interval = interval
        """Seconds between rounds (``membership.interval_seconds``)."""
        self.manifest = manifest
        self.peers: dict[str, PeerPull] = {n: PeerPull(n) for n in nodes if n != name}
        """Every other node's pull figures, by name."""
        self.rounds = 0
        self._client = peers
        self._is_down = is_down
        """Membership's verdict: a node it reports down is not asked."""
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet("manifest-pull", self._pull_failed)

    async def stop(self) -> None:
        """Cancel the pulls under way."""
        await self._tasks.close()
        self._pulls.clear()

    async def step(self) -> None:
        """One round (the ``manifest_pull`` service's step)."""
        self.round()

    def round(self) -> None:
        """Start a pull of every node that is not down and has none running."""
        self.rounds += 1
        for name, peer in self.peers.items():
            if name in self._pulls or (self._is_down is not None and self._is_down(name)):
                continue
            task = self._tasks.spawn(self.pull(peer), name=f"manifest-pull:{name}")
            self._pulls[name] = task
            task.add_done_callback(lambda _t, n=name: self._pulls.pop(n, None))

    def _pull_failed(self, task_name: str, exc: Exception) -> None:
        """A pull that raised (a local error, not the peer's answer): the peer's last error
        and an unhealthy /health until a pull succeeds."""
        peer = self.peers.get(task_name.partition(":")[2])
        if peer is not None:
            peer.last_error = describe(exc)
            peer.merge_error = True

    async def pull(self, peer: PeerPull) -> None:
        """Ask one node for what changed since its cursor until it has nothing more."""
        manifest = self.manifest
        for _page in range(MAX_PAGES):
            since = manifest.peer_cursor(peer.name)
            peer.requests += 1
            try:
                answer = await self._fetch(peer.name, since)
            except PullError as exc:
                peer.last_error, peer.merge_error = str(exc), False
                log.debug("manifest pull from %s failed: %s", peer.name, exc)
                return
            try:
                changed = manifest.merge_peer(peer.name, answer)
            except Exception as exc:  # a bad answer or a local database error: keep going
                peer.last_error = f"merge: {describe(exc)}"
                peer.merge_error = True
                log.warning("cannot merge %s's manifest delta: %s", peer.name, peer.last_error)
                return
            peer.rows_received += sum(len(answer.get(t) or ()) for t in TABLES)
            peer.rows_merged += changed
            peer.last_error, peer.merge_error = None, False
            peer.last_pull_at = time.time()
            cursor = manifest.peer_cursor(peer.name)
            if cursor == since or (answer.get("complete") and cursor == answer.get("seq")):
                return  # up to date (or no progress to be made now)

    async def _fetch(self, peer: str, since: int) -> dict[str, Any]:
        params = {"since": str(since), "limit": str(PAGE_LIMIT)}
        try:
            answer = await self._client.get(peer, "/v1/manifest", params=params,
                                            timeout=REQUEST_TIMEOUT_SECONDS)
        except PeerError as exc:
            raise PullError(str(exc)) from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("seq"), int):
            raise PullError("/v1/manifest answered without a seq")
        return answer

    def status(self) -> dict[str, Any]:
        manifest = self.manifest
        return {"interval": self.interval, "rounds": self.rounds,
                "peers": {name: peer.to_dict(manifest.peer_cursor(name), name in self._pulls)
                          for name, peer in self.peers.items()}}

    def health_check(self) -> HealthCheckResult:
        failing = sorted(n for n, p in self.peers.items() if p.last_error)
        broken = sorted(n for n, p in self.peers.items() if p.merge_error)
        if broken:
            message = f"cannot merge the manifest of {', '.join(broken)}"
        elif failing:
            message = f"{len(failing)} node(s) not answering: {', '.join(failing)}"
        else:
            message = "pulling every node's manifest deltas"
        return HealthCheckResult(not broken, message, {
            "failing": failing, "merge_errors": broken, "rounds": self.rounds,
            "interval": self.interval})
