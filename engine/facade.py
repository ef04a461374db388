"""SyncFacade: the one programmatic entry point to sync, local or cluster-wide.

    facade = get_sync_facade()
    await facade.trigger_priority_sync(reason="orphan_games_recovery",
                                       source_node="vast-12345", config_key="hex8_2p")
    status = await facade.get_sync_status()

A request about another node goes to that node's control API over HTTP, so the
coordinator (and its dashboard) can make any node push, pause or resume.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp

from engine.cluster_feed import ClusterEventFeed
from engine.health import HealthCheckResult

if TYPE_CHECKING:
    from engine.node import Node


class FacadeError(RuntimeError):
    """A request the facade could not carry out (unknown node, node unreachable)."""


class SyncFacade:
    """Sync operations for callers that should not know which daemon does what."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        """The node this process runs."""

    async def _control(self, target: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if target not in self.node.config.hosts:
            raise FacadeError(f"unknown node {target!r}")
        url = f"{self.node.config.host(target).url}/v1/control/{action}"
        try:
            async with self.node.session.post(url, json=body,
                                              timeout=aiohttp.ClientTimeout(total=10)) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise FacadeError(f"{target} refused {action}: {resp.status} {answer}")
                return answer
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise FacadeError(f"{target} unreachable for {action}: {exc}") from exc

    async def trigger_priority_sync(self, reason: str, source_node: str | None = None,
                                    config_key: str | None = None) -> dict[str, Any]:
        """Make ``source_node`` (default: this node) push now, ``config_key`` first."""
        target = source_node or self.node.name
        if target == self.node.name:
            return self.node.request_priority_sync(reason, config_key)
        return await self._control(target, "priority-sync",
                                   {"reason": reason, "config_key": config_key})

    async def pause(self, node: str | None = None, by: str = "facade") -> dict[str, Any]:
        """Stop starting new transfers on ``node`` (default: this node)."""
        if node in (None, self.node.name):
            return self.node.set_paused(True, by)
        return await self._control(node, "pause", {"by": by})

    async def resume(self, node: str | None = None, by: str = "facade") -> dict[str, Any]:
        if node in (None, self.node.name):
            return self.node.set_paused(False, by)
        return await self._control(node, "resume", {"by": by})

    async def get_sync_status(self) -> dict[str, Any]:
        """This node's status; on the coordinator also every node's last known status."""
        status: dict[str, Any] = {"node": self.node.status()}
        if self.node.membership is not None:
            status["cluster"] = self.node.membership.view()
        return status

    def health_check(self) -> HealthCheckResult:
        return self.node.health_check()

    async def cluster_events(self, keep: int = 5000) -> ClusterEventFeed:
        """The cluster-wide event stream (every node's ``/v1/events``), started on first use
        and stopped with the node. ``feed.listen(callback)`` for new events; ``feed.recent``
        holds the newest ``keep``."""
        if self.node.cluster_feed is None:
            urls = {name: host.url for name, host in self.node.config.hosts.items()}
            self.node.cluster_feed = ClusterEventFeed(self.node.session, urls, keep)
            await self.node.cluster_feed.start()
        return self.node.cluster_feed


_facade: SyncFacade | None = None


def set_sync_facade(facade: SyncFacade | None) -> None:
    global _facade
    _facade = facade


def get_sync_facade() -> SyncFacade:
    """This process's facade (one node per process)."""
    if _facade is None:
        raise RuntimeError("no SyncFacade: the node has not started")
    return _facade
