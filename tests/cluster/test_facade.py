"""SyncFacade on a coordinator embedded in this process (as the dashboard embeds it),
driving GPU nodes that run as their own processes."""

from __future__ import annotations

import asyncio
import os

import pytest

from engine.facade import FacadeError, get_sync_facade
from tests.support.cluster import Cluster, embedded_node, until
from tests.support.files import write

pytestmark = pytest.mark.cluster


@pytest.fixture
def slow_cluster(make_cluster) -> Cluster:
    """GPU nodes whose own interval is far too long to explain a prompt push."""
    return make_cluster(gpus=2, interval=600, skip=("coord",))


async def test_priority_sync_makes_another_node_push_now(slow_cluster: Cluster) -> None:
    async with embedded_node(slow_cluster, "coord"):
        facade = get_sync_facade()
        artifact = write(slow_cluster, "gpu-2", "npz/hex8_2p/orphan.npz", os.urandom(64_000))
        await asyncio.sleep(0.6)  # let it become finished (idle 0.3 s)
        answer = await facade.trigger_priority_sync(
            reason="orphan_games_recovery", source_node="gpu-2", config_key="hex8_2p")
        assert answer["accepted"] and answer["node"] == "gpu-2"
        target = await until(lambda: slow_cluster.stored("coord", "gpu-2",
                                                         "npz/hex8_2p/orphan.npz"),
                             10, "the priority push")
        assert target.read_bytes() == artifact.read_bytes()
        requested = [e["payload"] for e in slow_cluster.events("gpu-2", "PRIORITY_SYNC_REQUESTED")]
        assert {"reason": "orphan_games_recovery", "source_node": "gpu-2",
                "config_key": "hex8_2p"} in requested
        # the orphan reason is also a recovery, on the source node and the coordinator
        assert set(answer["recovery"]["nodes"]) == {"gpu-2", "coord"}
        assert answer["recovery"]["nodes"]["coord"]["reason"] == "orphan_games_recovery"


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


async def test_pause_and_resume_the_whole_cluster(make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, interval=600, skip=("coord",))
    cluster.stop_node("cpu-1")
    async with embedded_node(cluster, "coord") as node:
        facade = get_sync_facade()
        paused = await facade.pause_cluster(by="test")
        assert paused["paused"] is True
        assert {n: paused["nodes"][n] for n in ("coord", "gpu-1", "gpu-2")} == \
            {"coord": "ok", "gpu-1": "ok", "gpu-2": "ok"}
        assert "cpu-1 unreachable for pause" in paused["nodes"]["cpu-1"]
        assert node.status()["paused"] is True
        assert [cluster.status(n)["paused"] for n in ("gpu-1", "gpu-2")] == [True, True]
        assert cluster.events("gpu-2", "SYNC_PAUSED")[-1]["payload"]["requested_by"] == "test"

        resumed = await facade.resume_cluster(by="test")
        assert resumed["paused"] is False and resumed["nodes"]["gpu-1"] == "ok"
        assert "unreachable" in resumed["nodes"]["cpu-1"]
        assert node.status()["paused"] is False
        assert [cluster.status(n)["paused"] for n in ("gpu-1", "gpu-2")] == [False, False]


async def test_node_artifacts_verify_and_recover_name_their_node(slow_cluster: Cluster) -> None:
    async with embedded_node(slow_cluster, "coord"):
        facade = get_sync_facade()
        source = write(slow_cluster, "gpu-1", "npz/k/listed.npz", os.urandom(20_000))
        await asyncio.sleep(0.6)  # finished (idle 0.3 s)
        await facade.trigger_priority_sync("test", source_node="gpu-1")
        await until(lambda: slow_cluster.stored("coord", "gpu-1", "npz/k/listed.npz"), 10,
                    "the push")

        async def figures() -> dict:
            return (await facade.get_sync_status())["sync"]

        node_status: dict = {}
        for _ in range(100):  # membership's next status carries the push
            sync = await figures()
            node_status = sync["nodes"]["gpu-1"]
            if node_status["done"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert node_status["done"] >= 1 and node_status["bytes"] >= 20_000
        assert node_status["strategy"] == "push_from_generator" and node_status["failed"] == 0
        cluster = sync["cluster"]
        assert cluster["nodes"] == len(slow_cluster.nodes) and cluster["done"] >= 1
        assert cluster["strategies"]["push_from_generator"]["done"] == cluster["done"]
        remote = await facade.node_artifacts("gpu-1", limit=10)
        assert remote["node"] == "gpu-1" and remote["total"] == 1
        (art,) = remote["artifacts"]
        assert art["path"] == "k/listed.npz" and art["origin"] == "gpu-1"
        assert {r["node"] for r in art["replicas"]} == {"gpu-1", "coord"}
        local = await facade.node_artifacts("coord")
        assert local["node"] == "coord" and local["artifacts"][0]["sha256"] == art["sha256"]
        # a verification checks the copies a node stores: gpu-1 stores none (its source is
        # not a copy), the coordinator stores gpu-1's
        assert (await facade.verify("gpu-1"))["replicas"] == 0
        assert (await facade.verify("coord"))["replicas"] == 1
        for call in (facade.node_artifacts("nope"), facade.verify("nope"), facade.recover("nope")):
            with pytest.raises(FacadeError, match="unknown node 'nope'"):
                await call
        with pytest.raises(FacadeError, match="limit"):
            await facade.node_artifacts("gpu-1", limit=0)
        one = await facade.recover("gpu-1")
        assert set(one["nodes"]) == {"gpu-1"} and one["nodes"]["gpu-1"]["node"] == "gpu-1"
