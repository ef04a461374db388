"""The cluster-wide event stream: every node's events, once each, across node restarts."""

from __future__ import annotations

import asyncio
import collections
import shutil

import pytest

from engine.facade import get_sync_facade
from tests.support.cluster import Cluster, embedded_node, until

pytestmark = pytest.mark.cluster


def toggle(cluster: Cluster, node: str) -> None:
    """Make ``node`` emit two events (SYNC_PAUSED, SYNC_RESUMED)."""
    for action in ("pause", "resume"):
        assert cluster.request(node, "POST", f"/v1/control/{action}", body=b"{}").status == 200


async def test_feed_merges_every_node_once_and_survives_restarts(make_cluster) -> None:
    cluster = make_cluster(gpus=2, skip=("coord",))
    async with embedded_node(cluster, "coord"):
        feed = await get_sync_facade().cluster_events(keep=1000)
        seen: list = []
        feed.listen(seen.append)
        await asyncio.to_thread(toggle, cluster, "gpu-1")
        await asyncio.to_thread(toggle, cluster, "gpu-2")
        await get_sync_facade().pause()  # the coordinator's own events come through too
        await until(lambda: {e.node for e in seen} >= {"gpu-1", "gpu-2", "coord"}, 10,
                    "events from every node")

        # A node restarts (same log: numbering continues) ...
        cluster.stop_node("gpu-1")
        await until(lambda: not feed.connected["gpu-1"], 10, "the dropped stream")
        await asyncio.to_thread(cluster.start_node, "gpu-1")
        await asyncio.to_thread(toggle, cluster, "gpu-1")
        # ... and another comes back with a fresh data root (numbering starts at 1 again).
        cluster.stop_node("gpu-2")
        shutil.rmtree(cluster.data_root("gpu-2"))
        await asyncio.to_thread(cluster.start_node, "gpu-2")
        await asyncio.to_thread(toggle, cluster, "gpu-2")

        def resumed() -> bool:
            kinds = collections.Counter((e.node, e.type.value) for e in seen)
            return kinds[("gpu-1", "SYNC_RESUMED")] == 2 and kinds[("gpu-2", "SYNC_RESUMED")] == 2

        await until(resumed, 15, "events after both restarts")
        gpu1 = [e.seq for e in seen if e.node == "gpu-1"]
        assert gpu1 == sorted(set(gpu1)), "duplicates or disorder from a resumed stream"
        assert len(feed.recent) == len(seen) <= 1000
    assert len(feed._follows) == 0  # stopped with the node


async def test_feed_is_bounded(make_cluster) -> None:
    cluster = make_cluster(gpus=1, skip=("coord",))
    async with embedded_node(cluster, "coord"):
        feed = await get_sync_facade().cluster_events(keep=5)
        for _ in range(6):
            await asyncio.to_thread(toggle, cluster, "gpu-1")
        await until(lambda: feed.cursors["gpu-1"] >= 12, 10, "all events")
        assert len(feed.recent) == 5
        assert [e.seq for e in feed.recent] == list(range(feed.cursors["gpu-1"] - 4,
                                                          feed.cursors["gpu-1"] + 1))
