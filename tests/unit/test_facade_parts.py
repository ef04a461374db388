"""SyncFacade without a Node: the local node is a small fake, the other nodes are real
aiohttp servers on free loopback ports reached through a real PeerClient; each way a remote
call can fail becomes a FacadeError naming the node and what was asked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.cluster_feed import ClusterEventFeed
from engine.facade import FacadeError, SyncFacade
from engine.health import HealthCheckResult
from engine.peer_client import PeerClient
from tests.support.peer_server import peers
from tests.unit.test_push_path_parts import cluster_config

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class LocalNode:
    """The node the facade runs on (``coord``): what it was asked, in order."""

    def __init__(self, tmp_path: Path, client: PeerClient) -> None:
        self.name = "coord"
        self.config = cluster_config(tmp_path)
        self.peers = client
        self.membership = None
        self.cluster_feed: ClusterEventFeed | None = None
        self.asked: list[tuple[str, Any]] = []

    def request_priority_sync(self, reason: str, config_key: str | None) -> dict[str, Any]:
        self.asked.append(("priority", reason))
        return {"node": self.name, "accepted": True}

    def set_paused(self, paused: bool, by: str) -> dict[str, Any]:
        self.asked.append(("paused", paused))
        return {"node": self.name, "paused": paused}

    async def request_recovery(self, reason: str, by: str) -> dict[str, Any]:
        return {"node": self.name, "under_replicated": 1, "scheduled": 1}

    def start_verification(self, by: str) -> dict[str, Any]:
        return {"node": self.name, "replicas": 0, "started": True}

    def list_artifacts(self, limit: int) -> dict[str, Any]:
        return {"node": self.name, "total": 0, "artifacts": []}

    def status(self) -> dict[str, Any]:
        return {"node": self.name}

    def health_check(self) -> HealthCheckResult:
        return HealthCheckResult(True, "fine", {})


def gpu_1(seen: list[tuple[str, Any]]) -> dict[str, Any]:
    """Answers pause, refuses verify (plain text), answers resume with no JSON and
    artifacts with a list, and never answers priority-sync in time."""

    async def pause(request: web.Request) -> web.Response:
        seen.append(("pause", await request.json()))
        return web.json_response({"node": "gpu-1", "paused": True})

    async def verify(request: web.Request) -> web.Response:
        raise web.HTTPConflict(text="a verification is already running on gpu-1")

    async def resume(request: web.Request) -> web.Response:
        return web.Response(text="<html>resumed</html>")

    async def artifacts(request: web.Request) -> web.Response:
        seen.append(("artifacts", dict(request.query)))
        return web.json_response([1, 2])

    async def priority(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    return {"POST /v1/control/pause": pause, "POST /v1/control/verify": verify,
            "POST /v1/control/resume": resume, "GET /v1/artifacts": artifacts,
            "POST /v1/control/priority-sync": priority}


async def refuse(request: web.Request) -> web.Response:
    return web.json_response({"error": "disk on fire\nand more"}, status=503)


async def test_remote_failures_become_facade_errors_naming_node_and_request(
        tmp_path: Path) -> None:
    seen: list[tuple[str, Any]] = []
    nodes = {"gpu-1": gpu_1(seen), "gpu-2": {"POST /v1/control/pause": refuse}}
    async with peers(nodes, down=["cpu-1"]) as client:
        local = LocalNode(tmp_path, client)
        facade = SyncFacade(local)
        assert await facade.pause("gpu-1", by="test") == {"node": "gpu-1", "paused": True}
        assert seen.pop() == ("pause", {"by": "test"})

        with pytest.raises(FacadeError) as refused:
            await facade.verify("gpu-1")
        assert str(refused.value) == ("gpu-1 refused verify: 409 a verification is already"
                                      " running on gpu-1")
        with pytest.raises(FacadeError, match="^gpu-1 answered resume with something not JSON$"):
            await facade.resume("gpu-1")
        with pytest.raises(FacadeError,
                           match="^gpu-1 answered artifacts with list, not an object$"):
            await facade.node_artifacts("gpu-1", limit=7)
        assert seen.pop() == ("artifacts", {"limit": "7"})
        with pytest.raises(FacadeError) as down:
            await facade.pause("cpu-1")
        assert str(down.value).startswith("cpu-1 unreachable for pause: ")
        assert "cpu-1 unreachable: " not in str(down.value), "the peer's name once"
        with pytest.raises(FacadeError, match="^gpu-1 unreachable for priority-sync: "):
            await facade._control("gpu-1", "priority-sync", {"reason": "x"}, timeout=0.3)
        with pytest.raises(FacadeError, match="^unknown node 'nope'$"):
            await facade.pause("nope")

        answer = await facade.pause_cluster(by="test")
        assert answer["paused"] is True and local.asked == [("paused", True)]
        assert answer["nodes"]["coord"] == answer["nodes"]["gpu-1"] == "ok"
        assert answer["nodes"]["gpu-2"] == "gpu-2 refused pause: 503 disk on fire"
        assert answer["nodes"]["cpu-1"].startswith("cpu-1 unreachable for pause: ")


async def test_a_recovery_reports_an_unreachable_node_instead_of_raising(
        tmp_path: Path) -> None:
    async with peers({"gpu-1": {}}, down=["cpu-1", "gpu-2"]) as client:
        facade = SyncFacade(LocalNode(tmp_path, client))
        answer = await facade.recover(["coord", "cpu-1"])
        assert answer["nodes"]["coord"]["node"] == "coord" and answer["scheduled"] == 1
        assert answer["nodes"]["cpu-1"]["error"].startswith("cpu-1 unreachable for recover: ")
        everywhere = await facade.recover()
        assert set(everywhere["nodes"]) == {"coord", "gpu-1", "cpu-1", "gpu-2"}
        assert everywhere["nodes"]["gpu-1"]["error"].startswith("gpu-1 refused recover: 404")


async def test_the_cluster_feed_is_opened_once_over_the_peer_client(tmp_path: Path) -> None:
    async with peers({}, down=["gpu-1", "cpu-1", "gpu-2", "coord"]) as client:
        local = LocalNode(tmp_path, client)
        facade = SyncFacade(local)
        feed = await facade.cluster_events(keep=10)
        try:
            assert local.cluster_feed is feed and await facade.cluster_events() is feed
            assert feed.nodes == ["coord", "gpu-1", "cpu-1", "gpu-2"]
            assert feed.peers is client and feed.recent.maxlen == 10
        finally:
            await feed.stop()
