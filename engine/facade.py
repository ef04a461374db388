"""SyncFacade: the one programmatic entry point to sync, local or cluster-wide.

    facade = get_sync_facade()
    await facade.trigger_priority_sync(reason="orphan_games_recovery",
                                       source_node="vast-12345", config_key="hex8_2p")
    status = await facade.get_sync_status()
    await facade.pause_cluster(by="operator")        # every node; unreachable ones reported
    await facade.recover()                           # every node, coordinator included
    await facade.verify("gpu-1")                     # re-hash gpu-1's replicas (background)
    await facade.node_artifacts("gpu-1", limit=200)  # gpu-1's newest artifacts and replicas

A request about another node goes to that node's control API over HTTP (through the node's
``PeerClient``), so the coordinator (and its dashboard) can make any node push, pause,
resume, recover or verify.
A cluster-wide call asks every node concurrently and reports a node it could not reach in
its answer instead of raising; a call about one unknown node raises FacadeError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from engine.cluster_feed import ClusterEventFeed
from engine.config import ClusterConfig
from engine.daemons.recovery import DEFAULT_REASON, ORPHAN_RECOVERY
from engine.daemons.verification import VerificationRunning
from engine.health import HealthCheckResult
from engine.peer_client import PeerClient, PeerError, error_line
from engine.sync_status import cluster_figures, node_figures


RECOVER_TIMEOUT_SECONDS = 300.0
"""A recovery answers once every holder has vouched (hashed its copies now)."""
ANY_STATUS = range(100, 600)
"""The facade reads every answer itself: a status of 400 or more is a refusal."""


class FacadeError(RuntimeError):
    """A request the facade could not carry out (unknown node, node unreachable)."""


class Members(Protocol):
    def view(self) -> dict[str, Any]:
        """Every other node's state and last status, by name."""
        ...


class LocalNode(Protocol):
    """What the facade uses of the node this process runs (``engine.node.Node``)."""

    name: str
    config: ClusterConfig
    peers: PeerClient
    """The client every call to another node goes through."""
    membership: Members | None
    """The coordinator's view of the others (None elsewhere)."""
    cluster_feed: ClusterEventFeed | None
    """The cluster-wide event stream, once opened here (the node stops it)."""

    def request_priority_sync(self, reason: str, config_key: str | None) -> dict[str, Any]: ...
    def set_paused(self, paused: bool, by: str) -> dict[str, Any]: ...
    async def request_recovery(self, reason: str, by: str) -> dict[str, Any]: ...
    def start_verification(self, by: str) -> dict[str, Any]: ...
    def list_artifacts(self, limit: int) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def health_check(self) -> HealthCheckResult: ...


class SyncFacade:
    """Sync operations for callers that should not know which daemon does what."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        """The node this process runs."""

    def _known(self, target: str) -> str:
        if target not in self.node.config.hosts:
            raise FacadeError(f"unknown node {target!r}")
        return target

    async def _call(self, target: str, method: str, path: str, what: str,
                    timeout: float = 10.0, body: Any = None,
                    params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``target``'s JSON object answer; FacadeError when it is unreachable, refuses (a
        status of 400 or more, with its error line) or answers anything but an object."""
        try:
            answer = await self.node.peers.call(
                self._known(target), method, path, timeout=timeout, expect=ANY_STATUS,
                json_body=body, params=params, parse=False)
        except PeerError as exc:
            detail = str(exc).removeprefix(f"{target} unreachable: ")
            raise FacadeError(f"{target} unreachable for {what}: {detail}") from exc
        if answer.status >= 400:
            raise FacadeError(f"{target} refused {what}: {answer.status}"
                              f" {error_line(answer.raw)}")
        try:
            parsed = json.loads(answer.raw)
        except ValueError as exc:
            raise FacadeError(f"{target} answered {what} with something not JSON") from exc
        if not isinstance(parsed, dict):
            raise FacadeError(f"{target} answered {what} with {type(parsed).__name__},"
                              " not an object")
        return parsed

    async def _control(self, target: str, action: str, body: dict[str, Any],
                       timeout: float = 10.0) -> dict[str, Any]:
        return await self._call(target, "POST", f"/v1/control/{action}", action,
                                timeout=timeout, body=body)

    async def _each_node(self, call: Callable[[str], Awaitable[Any]]) -> dict[str, Any]:
        """``call(name)`` for every configured node at once, by name."""
        names = list(self.node.config.hosts)
        return dict(zip(names, await asyncio.gather(*(call(n) for n in names))))

    async def trigger_priority_sync(self, reason: str, source_node: str | None = None,
                                    config_key: str | None = None) -> dict[str, Any]:
        """Make ``source_node`` (default: this node) push now, ``config_key`` first.

        ``reason="orphan_games_recovery"`` also runs a recovery (see ``recover``) on
        ``source_node`` and on the coordinator, which re-homes the copies it holds of a node
        that is down or deleted its sources (without ``source_node``: on every node); the
        answer then carries ``"recovery"``, and an unreachable source node is reported in
        ``"error"`` rather than raised (it is the usual case for orphans)."""
        if reason == ORPHAN_RECOVERY:
            return await self._orphan_recovery(source_node, config_key)
        return await self._priority_sync(source_node or self.node.name, reason, config_key)

    async def _orphan_recovery(self, source_node: str | None,
                               config_key: str | None) -> dict[str, Any]:
        if source_node is None:
            answer: dict[str, Any] = self.node.request_priority_sync(ORPHAN_RECOVERY, config_key)
            answer["recovery"] = await self.recover(reason=ORPHAN_RECOVERY)
            return answer
        source = self._known(source_node)
        try:
            answer = await self._priority_sync(source, ORPHAN_RECOVERY, config_key)
        except FacadeError as exc:
            answer = {"node": source, "accepted": False, "reason": ORPHAN_RECOVERY,
                      "config_key": config_key, "error": str(exc)}
        answer["recovery"] = await self.recover(
            [source, self.node.config.coordinator.name], reason=ORPHAN_RECOVERY)
        return answer

    async def _priority_sync(self, target: str, reason: str,
                             config_key: str | None) -> dict[str, Any]:
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

    async def pause_cluster(self, by: str = "facade") -> dict[str, Any]:
        """Pause every node; ``{"paused": True, "nodes": {name: "ok" | error}}``."""
        return await self._set_cluster_paused(True, by)

    async def resume_cluster(self, by: str = "facade") -> dict[str, Any]:
        """Resume every node; ``{"paused": False, "nodes": {name: "ok" | error}}``."""
        return await self._set_cluster_paused(False, by)

    async def _set_cluster_paused(self, paused: bool, by: str) -> dict[str, Any]:
        async def one(name: str) -> str:
            try:
                await (self.pause if paused else self.resume)(name, by=by)
            except FacadeError as exc:
                return str(exc)
            return "ok"

        return {"paused": paused, "nodes": await self._each_node(one)}

    async def recover(self, node: str | list[str] | None = None, reason: str = DEFAULT_REASON,
                      by: str = "facade") -> dict[str, Any]:
        """Bring under-replicated artifacts up to min_copies verified copies: on ``node`` (or
        each of a list), or (None) on every node at once, coordinator included (it also
        re-homes orphans).

        ``{"nodes": {name: answer | {"error": message}}, "under_replicated": n, "scheduled": n}``
        with each node's answer as ``POST /v1/control/recover`` gives it; the pushes run in
        the background on each node."""
        async def one(name: str) -> dict[str, Any]:
            try:
                if name == self.node.name:
                    return await self.node.request_recovery(reason, by)
                # the node asks every holder of its artifacts to vouch before it answers
                return await self._control(name, "recover", {"reason": reason, "by": by},
                                           timeout=RECOVER_TIMEOUT_SECONDS)
            except FacadeError as exc:
                return {"error": str(exc)}

        if node is None:
            answers = await self._each_node(one)
        else:
            names = list(dict.fromkeys([node] if isinstance(node, str) else node))
            replies = await asyncio.gather(*(one(self._known(n)) for n in names))
            answers = dict(zip(names, replies))
        return {"nodes": answers,
                "under_replicated": sum(a.get("under_replicated", 0) for a in answers.values()),
                "scheduled": sum(a.get("scheduled", 0) for a in answers.values())}

    async def verify(self, node: str | None = None, by: str = "facade") -> dict[str, Any]:
        """Re-hash every replica ``node`` (default: this node) holds, in the background;
        ``{"node", "replicas", "started"}``. FacadeError while one is running there."""
        if node in (None, self.node.name):
            try:
                return self.node.start_verification(by)
            except VerificationRunning as exc:
                raise FacadeError(str(exc)) from None
        return await self._control(node, "verify", {"by": by})

    async def node_artifacts(self, node: str, limit: int = 200) -> dict[str, Any]:
        """``node``'s newest ``limit`` artifacts with their replicas (``GET /v1/artifacts``)."""
        if not 1 <= limit <= 5000:
            raise FacadeError(f"limit must be in 1..5000, not {limit}")
        if node == self.node.name:
            return self.node.list_artifacts(limit)
        return await self._call(node, "GET", "/v1/artifacts", "artifacts",
                                params={"limit": str(limit)})

    async def get_sync_status(self) -> dict[str, Any]:
        """This node's status (``node``), sync figures per node and for the cluster
        (``sync``: pending, in flight, done, failed, bytes, per strategy — see
        ``engine.sync_status``) and, on the coordinator, every node's last known status
        (``cluster``, membership's view). Off the coordinator ``sync`` covers this node."""
        own = self.node.status()
        status: dict[str, Any] = {"node": own}
        nodes = {self.node.name: node_figures(own)}
        if self.node.membership is not None:
            view = self.node.membership.view()
            status["cluster"] = view
            for name, member in view.items():
                nodes[name] = node_figures(member.get("status") or {}, member["state"])
        status["sync"] = {"cluster": cluster_figures(nodes), "nodes": nodes}
        return status

    def health_check(self) -> HealthCheckResult:
        """Every component of this node (each daemon, the router, each transport, hooks),
        combined: healthy only when all are. ``GET /health`` answers the same."""
        return self.node.health_check()

    async def cluster_events(self, keep: int = 5000) -> ClusterEventFeed:
        """The cluster-wide event stream (every node's ``/v1/events``), started on first use
        and stopped with the node. ``feed.listen(callback)`` for new events; ``feed.recent``
        holds the newest ``keep``."""
        if self.node.cluster_feed is None:
            feed = ClusterEventFeed(self.node.peers, list(self.node.config.hosts), keep)
            self.node.cluster_feed = feed
            await feed.start()
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
