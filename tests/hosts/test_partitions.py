"""Partitions on real links: suspect, down, recovered, and the backlog drains after healing."""

from __future__ import annotations

import os

import pytest

from tests.support.cluster import wait_for
from tests.support.files import write
from tests.support.hosts import HostsCluster

pytestmark = [pytest.mark.hosts, pytest.mark.serial, pytest.mark.timeout(120)]


def _types(cluster: HostsCluster, node: str, about: str) -> list[str]:
    return [e["type"] for e in cluster.events(node)
            if e["type"].startswith("NODE_") and e["payload"].get("node") == about]


def test_a_partitioned_node_goes_suspect_then_down_then_recovers_and_drains(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(gpus=2)
    write(cluster, "gpu-1", "npz/k/before.npz", os.urandom(200_000))
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/before.npz"), 20, what="first copy")
    cluster.net.partition("gpu-1")
    backlog = {f"npz/k/during_{i}.npz": os.urandom(300_000 + i) for i in range(3)}
    for rel, body in backlog.items():
        write(cluster, "gpu-1", rel, body)
    wait_for(lambda: "NODE_DOWN" in _types(cluster, "coord", "gpu-1"), 20, what="NODE_DOWN")
    assert _types(cluster, "coord", "gpu-1") == ["NODE_SUSPECT", "NODE_DOWN"]
    assert all(cluster.stored("coord", "gpu-1", rel) is None for rel in backlog)
    cluster.net.heal("gpu-1")
    wait_for(lambda: "NODE_RECOVERED" in _types(cluster, "coord", "gpu-1"), 20,
             what="NODE_RECOVERED")
    assert _types(cluster, "coord", "gpu-1") == ["NODE_SUSPECT", "NODE_DOWN", "NODE_RECOVERED"]
    for rel, body in backlog.items():
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 40, what=rel)
        assert copy.read_bytes() == body
        assert (cluster.data_root("gpu-1") / rel).read_bytes() == body
    # gpu-2 was never cut off: it never went down
    assert "NODE_DOWN" not in _types(cluster, "coord", "gpu-2")
