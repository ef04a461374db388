"""ClusterViewRefresher without a Node: a real coordinator peer answering ``/v1/cluster``
on loopback, a real ClusterView, SyncRouter (its handlers) and ClusterManifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.cluster_view import ClusterView, ClusterViewRefresher, NoClusterView
from engine.config import ClusterConfig
from engine.daemons.breaker import Breakers
from engine.events import EventBus
from engine.manifest import ClusterManifest
from engine.peer_client import PeerClient
from engine.router import SyncRouter
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NODES = ("coord", "gpu-1", "gpu-2", "cpu-1")


def config(tmp_path: Path) -> ClusterConfig:
    roles = {"coord": "coordinator", "gpu-1": "gpu", "gpu-2": "gpu", "cpu-1": "cpu"}
    hosts = {name: {"role": role, "provider": "test", "port": port,
                    "data_root": str(tmp_path / name)}
             for port, (name, role) in enumerate(roles.items(), start=9100)}
    return ClusterConfig.model_validate({"hosts": hosts})


class Parts:
    """A refresher of ``name`` and the real parts it feeds."""

    def __init__(self, tmp_path: Path, manifest: ClusterManifest, client: PeerClient,
                 name: str = "gpu-1",
                 members: Callable[[], dict[str, Any]] | None = None,
                 is_down: Callable[[str], bool] | None = None) -> None:
        self.view = ClusterView(is_down)
        self.woken: list[str] = []
        self.router = SyncRouter(config(tmp_path), name, manifest, self.view,
                                 Breakers(name, EventBus(name), 2, 60),
                                 wake=self.woken.append)
        self.refresher = ClusterViewRefresher(
            name, NODES, "coord", 10.0, view=self.view, peers=client,
            set_capacity=manifest.set_capacity, on_recovered=self.router.node_recovered,
            on_backpressure=self.router.backpressure, members=members)


def cluster_answer(gpu2_state: str, cpu_pressure: bool) -> dict[str, Any]:
    return {
        "coordinator": "coord",
        "members": {
            "gpu-1": {"state": "up", "status": {"disk": {"used_bytes": 1, "total_bytes": 9}}},
            "gpu-2": {"state": gpu2_state, "status": None},
            "cpu-1": {"state": "up", "status": {
                "disk": {"used_bytes": 50, "total_bytes": 100},
                "backpressure": {"active": cpu_pressure, "reason": "disk"}}},
            "stranger": {"state": "down"},  # not in this node's config: ignored
        },
        "self": {"name": "coord", "state": "up",
                 "status": {"disk": {"used_bytes": 7, "total_bytes": 70}}},
    }


async def test_off_the_coordinator_the_view_follows_v1_cluster(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-1")
    answer = {"now": cluster_answer("down", True)}

    async def cluster(_request: web.Request) -> web.Response:
        return web.json_response(answer["now"])

    async with peers({"coord": {"GET /v1/cluster": cluster}}, caller="gpu-1") as client:
        parts = Parts(tmp_path, manifest, client)
        assert await parts.refresher.refresh() is True
        view = parts.view
        assert view.down == {"gpu-2"} and view.is_down("gpu-2") and not view.is_down("cpu-1")
        assert view.backpressure == {"cpu-1": "disk"} and view.last_error is None
        capacity = manifest.capacity()
        assert capacity["cpu-1"]["used_bytes"] == 50 and capacity["coord"]["total_bytes"] == 70
        assert "gpu-1" not in capacity  # about itself it knows better
        assert "stranger" not in capacity
        answer["now"] = cluster_answer("up", False)
        await parts.refresher.step()
    assert view.down == set() and view.backpressure == {}
    assert parts.router.counts == {"recovered": 1, "backpressure_activated": 1,
                                   "backpressure_released": 1}
    assert parts.woken == ["backpressure_released:cpu-1", "node_recovered:gpu-2"]


async def test_without_a_usable_answer_the_last_view_stands(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-1")
    answers = [cluster_answer("down", True), {"coordinator": "coord"}]

    async def cluster(_request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0)) if answers else web.Response(status=500)

    async with peers({"coord": {"GET /v1/cluster": cluster}}, caller="gpu-1") as client:
        parts = Parts(tmp_path, manifest, client)
        assert await parts.refresher.refresh() is True
        refreshed = parts.view.refreshed_at
        assert await parts.refresher.refresh() is False
        assert parts.view.last_error == "coord answered /v1/cluster without members"
        assert await parts.refresher.refresh() is False
        assert parts.view.last_error is not None and "500" in parts.view.last_error
    assert parts.view.down == {"gpu-2"} and parts.view.refreshed_at == refreshed
    async with peers({}, down=["coord"], caller="gpu-1") as client:
        parts.refresher._peers = client  # the coordinator went away
        assert await parts.refresher.refresh() is False
    assert parts.view.last_error is not None and "coord unreachable" in parts.view.last_error
    assert parts.view.to_dict()["down"] == ["gpu-2"]


async def test_on_the_coordinator_the_view_reads_membership_and_asks_nobody(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("coord")
    members = cluster_answer("down", True)["members"]
    async with peers({}, down=list(NODES)) as client:  # any call would fail
        parts = Parts(tmp_path, manifest, client, name="coord", members=lambda: members,
                      is_down=lambda n: n == "gpu-2")
        assert await parts.refresher.refresh() is True
        assert client.counts["calls"] == 0
    assert parts.view.is_down("gpu-2") and parts.view.down == set()
    assert parts.view.backpressure == {"cpu-1": "disk"}
    assert manifest.capacity()["gpu-1"]["total_bytes"] == 9


async def test_a_coordinator_silent_twice_in_a_row_fails_the_step_until_it_answers(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    """One miss (a coordinator still starting) is not a failure; the second in a row is, so
    the supervisor reports it (COMPONENT_FAILED, /health); an answer ends the streak."""
    manifest = open_manifest("gpu-1")
    answers = [cluster_answer("up", False), None, None, None, cluster_answer("down", False)]

    async def cluster(_request: web.Request) -> web.Response:
        answer = answers.pop(0)
        return web.json_response(answer) if answer else web.Response(status=502)

    async with peers({"coord": {"GET /v1/cluster": cluster}}, caller="gpu-1") as client:
        parts = Parts(tmp_path, manifest, client)
        await parts.refresher.step()
        await parts.refresher.step()  # one miss: logged only
        assert parts.refresher.misses == 1
        for misses in (2, 3):
            with pytest.raises(NoClusterView) as failed:
                await parts.refresher.step()
            assert parts.refresher.misses == misses
            assert str(failed.value).startswith(f"no cluster view from coord ({misses} refreshes")
            assert "502" in str(failed.value) and "last answer 0 s ago" in str(failed.value)
        await parts.refresher.step()
    assert parts.refresher.misses == 0 and parts.view.down == {"gpu-2"}


async def test_only_the_service_steps_count_misses_and_a_start_gets_grace(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-1")
    async with peers({}, down=["coord"], caller="gpu-1") as client:
        parts = Parts(tmp_path, manifest, client)
        assert await parts.refresher.refresh() is False  # e.g. a disk-pressure push asking
        assert parts.refresher.misses == 0
        for _ in range(3):  # never answered since start, within the grace: logged only
            await parts.refresher.step()
        assert parts.refresher.misses == 3
        parts.refresher._started -= 31  # the grace is over
        with pytest.raises(NoClusterView, match="4 refreshes in a row, no answer since start"):
            await parts.refresher.step()
