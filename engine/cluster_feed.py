"""ClusterEventFeed: every node's ``/v1/events`` merged into one bounded stream.

What the coordinator's dashboard shows as the cluster-wide event stream. Each node is
followed over server-sent events from the last sequence number seen from it, so a
dropped connection or a restarted node resumes without gaps or duplicates. Memory is
bounded: the newest ``keep`` events are held; listeners see each event once.

Streams are opened with the node's ``PeerClient.stream``; one follow task per node runs in
a ``TaskSet`` and reconnects after a lost stream with a backoff (``RETRY_FIRST`` doubling up
to ``RETRY_MAX`` seconds, back to the first once a stream opens).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Callable, Iterable

import aiohttp

from engine.aio import wait_event
from engine.events import Event
from engine.peer_client import PeerClient, PeerError
from engine.runtime import TaskSet

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 5.0


class ClusterEventFeed:
    """Follows every node in ``nodes`` (names; a mapping's keys) through ``peers``."""

    def __init__(self, peers: PeerClient, nodes: Iterable[str], keep: int = 5000) -> None:
        self.peers = peers
        self.nodes = list(nodes)
        """The nodes followed."""
        self.recent: collections.deque[Event] = collections.deque(maxlen=keep)
        """The newest events from all nodes, in arrival order."""
        self.cursors: dict[str, int] = {name: 0 for name in self.nodes}
        """Per node: the newest sequence number received."""
        self.log_ids: dict[str, str] = {}
        """Per node: the id of the event numbering the cursor counts in."""
        self.connected: dict[str, bool] = {name: False for name in self.nodes}
        """Per node: whether its stream is open right now."""
        self._listeners: list[Callable[[Event], None]] = []
        self._follows = TaskSet("cluster-feed")
        """One follow task per node, until ``stop``."""
        """The follow tasks, one per node (empty once stopped)."""
        self._stop = asyncio.Event()

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with each new event (on the loop's thread)."""
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Event], None]) -> None:
        """Stop calling ``listener`` (a no-op when it is not listening)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def start(self) -> None:
        """Follow every node (one background task each)."""
        self._stop.clear()
        for name in self.nodes:
            self._follows.spawn(self._follow(name), name=f"feed:{name}")

    async def stop(self) -> None:
        """End every stream and its follow task."""
        self._stop.set()
        await self._follows.close()

    async def _follow(self, node: str) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            path = f"/v1/events?since={self.cursors[node]}"
            try:
                async with self.peers.stream(node, path, connect_timeout=3,
                                             read_timeout=60) as resp:
                    self.connected[node] = True
                    delay = RETRY_FIRST
                    if await self._read(node, resp):
                        self.connected[node] = False
                        continue  # the node starts its numbering afresh: follow it from 1
            except (PeerError, ValueError) as exc:
                log.debug("event stream of %s: %s", node, exc)
            self.connected[node] = False
            await wait_event(self._stop, delay)
            delay = min(RETRY_MAX, delay * 2)

    async def _read(self, node: str, resp: aiohttp.ClientResponse) -> bool:
        """Deliver the stream's events; True when the node's numbering started over."""
        data: list[str] = []
        async for raw in resp.content:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith(": log "):
                log_id = line.split()[2]
                known = self.log_ids.setdefault(node, log_id)
                if log_id != known:  # the node's numbering started over
                    self.log_ids[node], self.cursors[node] = log_id, 0
                    return True
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                self._deliver(node, Event.from_dict(json.loads("\n".join(data))))
                data = []
        return False

    def _deliver(self, node: str, event: Event) -> None:
        if event.seq <= self.cursors[node]:
            return  # already seen (a resumed stream can repeat the boundary)
        self.cursors[node] = event.seq
        self.recent.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not stop the feed
                log.exception("cluster feed listener failed")
