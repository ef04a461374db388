"""SyncFacade on a coordinator embedded in this process (as the dashboard embeds it),
driving GPU nodes that run as their own processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from engine.facade import FacadeError, get_sync_facade
from tests.support.cluster import Cluster, embedded_node, until

pytestmark = pytest.mark.cluster


@pytest.fixture
def slow_cluster(make_cluster) -> Cluster:
    """GPU nodes whose own interval is far too long to explain a prompt push."""
    return make_cluster(gpus=2, interval=600, skip=("coord",))


async def test_priority_sync_makes_another_node_push_now(slow_cluster: Cluster) -> None:
    async with embedded_node(slow_cluster, "coord"):
        facade = get_sync_facade()
        artifact = slow_cluster.data_root("gpu-2") / "npz" / "hex8_2p" / "orphan.npz"
        artifact.parent.mkdir(parents=True)
        artifact.write_bytes(os.urandom(64_000))
        await asyncio.sleep(0.6)  # let it become finished (idle 0.3 s)
        answer = await facade.trigger_priority_sync(
            reason="orphan_games_recovery", source_node="gpu-2", config_key="hex8_2p")
        assert answer["accepted"] and answer["node"] == "gpu-2"
        target = slow_cluster.data_root("coord") / "npz" / "hex8_2p" / "orphan.npz"
        await until(target.exists, 10, "the priority push")
        assert target.read_bytes() == artifact.read_bytes()
        requested = slow_cluster.events("gpu-2", "PRIORITY_SYNC_REQUESTED")
        assert requested[-1]["payload"]["reason"] == "orphan_games_recovery"
        assert requested[-1]["payload"]["config_key"] == "hex8_2p"


async def test_pause_resume_status_and_health_through_the_facade(slow_cluster: Cluster) -> None:
    async with embedded_node(slow_cluster, "coord") as node:
        facade = get_sync_facade()
        assert (await facade.pause("gpu-1", by="test"))["paused"] is True
        assert (await facade.pause())["paused"] is True  # this node
        status = await facade.get_sync_status()
        assert status["node"]["paused"] is True
        member = node.membership.members["gpu-1"]
        await until(lambda: member.status and member.status["paused"], 10, "a fresh status")
        status = await facade.get_sync_status()
        assert status["cluster"]["gpu-1"]["state"] == "up"
        assert (await facade.resume("gpu-1"))["paused"] is False
        assert (await facade.resume())["paused"] is False
        health = facade.health_check()
        assert health.is_healthy and "membership" in health.details
        with pytest.raises(FacadeError, match="unknown node"):
            await facade.pause("no-such-node")


async def test_facade_reports_an_unreachable_node(slow_cluster: Cluster) -> None:
    slow_cluster.stop_node("gpu-1")
    async with embedded_node(slow_cluster, "coord"):
        with pytest.raises(FacadeError, match="unreachable"):
            await get_sync_facade().trigger_priority_sync("operator_priority", "gpu-1")
