"""MembershipDaemon without a Node: real peers on loopback (a real PeerClient), a real
EventBus and a real ClusterManifest for the capacity rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from engine.config.schema import Membership
from engine.daemons.membership import MembershipDaemon
from engine.events import EventBus, EventType
from engine.manifest import ClusterManifest
from engine.peer_client import PeerClient
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def daemon(client: PeerClient, bus: EventBus, manifest: ClusterManifest,
           nodes: tuple[str, ...] = ("coord", "gpu-1", "cpu-1")) -> MembershipDaemon:
    cfg = Membership(interval_seconds=0.2, suspect_after_misses=1, down_after_misses=3)
    return MembershipDaemon("coord", nodes, cfg, peers=client, emit=bus.emit,
                            manifest=manifest)


def status_route(answer: Callable[[], web.Response]) -> dict[str, Callable]:
    async def status(_request: web.Request) -> web.Response:
        return answer()
    return {"GET /status": status}


def types(bus: EventBus) -> list[tuple[str, str]]:
    return [(e.type.value, e.payload.node) for e in bus.recent()]  # type: ignore[attr-defined]


async def test_an_answer_is_up_with_its_status_and_capacity_row(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest, bus = open_manifest("coord"), EventBus("coord")
    status = {"node": "gpu-1", "disk": {"used_bytes": 300, "total_bytes": 1000}}
    async with peers({"gpu-1": status_route(lambda: web.json_response(status))},
                     down=["cpu-1"]) as client:
        members = daemon(client, bus, manifest)
        assert set(members.members) == {"gpu-1", "cpu-1"}  # never itself
        await members.check_all()
    gpu = members.members["gpu-1"]
    assert (gpu.state, gpu.misses, gpu.status, gpu.last_error) == ("up", 0, status, None)
    assert gpu.last_seen is not None
    assert manifest.capacity()["gpu-1"]["used_bytes"] == 300
    assert manifest.capacity()["gpu-1"]["total_bytes"] == 1000
    cpu = members.members["cpu-1"]
    assert cpu.state == "unknown" and cpu.misses == 1  # never seen: not suspect, just not up
    assert cpu.last_error is not None and "cpu-1 unreachable" in cpu.last_error
    assert "cpu-1" not in manifest.capacity()
    assert bus.recent() == []


async def test_a_node_that_stops_answering_is_suspect_then_down_then_recovers(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest, bus = open_manifest("coord"), EventBus("coord")
    answering = {"ok": True}

    def answer() -> web.Response:
        if answering["ok"]:
            return web.json_response({"disk": {}})
        return web.json_response({"error": "draining"}, status=503)

    async with peers({"gpu-1": status_route(answer)}) as client:
        members = daemon(client, bus, manifest, ("coord", "gpu-1"))
        await members.check_all()
        assert members.members["gpu-1"].state == "up"
        answering["ok"] = False
        await members.check_all()
        gpu = members.members["gpu-1"]
        assert gpu.state == "suspect" and gpu.last_error is not None
        assert "503" in gpu.last_error and "draining" in gpu.last_error
        await members.check_all()
        assert gpu.state == "suspect" and not members.is_down("gpu-1")
        await members.check_all()
        assert gpu.state == "down" and members.is_down("gpu-1")
        assert members.health_check().details["down"] == ["gpu-1"]
        answering["ok"] = True
        await members.check_all()
    assert gpu.state == "up" and gpu.misses == 0 and gpu.down_since is None
    assert types(bus) == [("NODE_SUSPECT", "gpu-1"), ("NODE_DOWN", "gpu-1"),
                          ("NODE_RECOVERED", "gpu-1")]
    down = next(e for e in bus.recent() if e.type == EventType.NODE_DOWN)
    assert down.payload.misses == 3  # type: ignore[attr-defined]
    assert members.health_check().message == "all nodes up"


async def test_an_answer_that_is_not_a_status_object_is_a_miss(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest, bus = open_manifest("coord"), EventBus("coord")
    async with peers({"gpu-1": status_route(lambda: web.Response(text="<html>"))}) as client:
        members = daemon(client, bus, manifest, ("coord", "gpu-1"))
        await members.check_all()
    gpu = members.members["gpu-1"]
    assert gpu.state == "unknown" and gpu.misses == 1
    assert gpu.last_error is not None and "no JSON" in gpu.last_error


async def test_a_refused_capacity_row_fails_the_round(tmp_path: Path) -> None:
    """Anything but the peer's answer failing is the step's failure (the supervisor's)."""
    manifest = ClusterManifest(tmp_path / "m.db", "coord")
    manifest.close()  # the database is gone: set_capacity raises
    status = {"disk": {"used_bytes": 1, "total_bytes": 2}}
    async with peers({"gpu-1": status_route(lambda: web.json_response(status))}) as client:
        members = daemon(client, EventBus("coord"), manifest, ("coord", "gpu-1"))
        with pytest.raises(Exception, match="closed"):
            await members.check_all()
