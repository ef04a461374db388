"""Membership when the coordinator itself is partitioned from the nodes.

The coordinator sees every node go suspect then down, once each, and recovered after the
heal. The nodes cannot hear the coordinator: after two refreshes in a row without an answer
their cluster view fails (COMPONENT_FAILED, /health names it) instead of routing on an old
view in silence, and recovers by itself after the heal. Their data stays where it is
meanwhile and drains to the coordinator afterwards. The harness still reaches every host,
so the test can watch both sides.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.cluster import wait_for
from tests.support.files import write
from tests.support.hosts import HostsCluster

pytestmark = [pytest.mark.hosts, pytest.mark.serial, pytest.mark.timeout(150)]

GPUS = ("gpu-1", "gpu-2")


def _node_events(cluster: HostsCluster, about: str) -> list[str]:
    return [e["type"] for e in cluster.events("coord")
            if e["type"].startswith("NODE_") and e["payload"].get("node") == about]


def _view_events(cluster: HostsCluster, node: str) -> list[dict]:
    return [e for e in cluster.events(node)
            if e["type"] in ("COMPONENT_FAILED", "COMPONENT_RECOVERED")
            and e["payload"]["component"] == "cluster_view"]


def _health(cluster: HostsCluster, node: str) -> tuple[int, dict]:
    resp = cluster.request(node, "GET", "/health", token=None)
    return resp.status, resp.json()


def test_a_partitioned_coordinator_is_noticed_on_both_sides_and_heals(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(
        gpus=2, config={"sync_routing": {"capacity_refresh_seconds": 1}})
    for gpu in GPUS:
        write(cluster, gpu, "npz/k/before.npz", os.urandom(100_000))
    for gpu in GPUS:
        wait_for(lambda: cluster.stored("coord", gpu, "npz/k/before.npz"), 20, what="first copies")
    wait_for(lambda: all(_health(cluster, gpu)[0] == 200 for gpu in GPUS), 20,
             what="healthy nodes")
    assert all(_view_events(cluster, gpu) == [] for gpu in GPUS), "no failure before the cut"

    cluster.net.partition("coord", from_=list(GPUS))
    backlog = {gpu: {f"npz/k/cut_{i}.npz": os.urandom(150_000 + i) for i in range(3)}
               for gpu in GPUS}
    for gpu, files in backlog.items():
        for rel, body in files.items():
            write(cluster, gpu, rel, body)

    # the coordinator: each node suspect, then down, once
    for gpu in GPUS:
        wait_for(lambda: "NODE_DOWN" in _node_events(cluster, gpu), 20, what=f"{gpu} down")
    # the nodes: their cluster view fails, loudly, naming the coordinator
    for gpu in GPUS:
        [failed, *_] = wait_for(lambda: _view_events(cluster, gpu), 30,
                                what=f"{gpu}'s cluster view to fail")
        assert failed["type"] == "COMPONENT_FAILED"
        assert failed["payload"]["error"].startswith("NoClusterView: no cluster view from coord")
        assert "coord unreachable" in failed["payload"]["error"]
        status, health = _health(cluster, gpu)
        components = health["details"]["components"]
        assert status == 503 and "cluster_view" in components["details"]["failing"], \
            health
    # it keeps failing, and is restarted within its interval (1 s), not after the doubling
    # backoff (2 s at the 2nd failure): a healed coordinator is noticed at once
    for gpu in GPUS:
        wait_for(lambda: any(e["payload"]["streak"] == 2 for e in _view_events(cluster, gpu)),
                 30, what=f"{gpu}'s 2nd failure")
        assert all(e["payload"]["restart_in_seconds"] <= 1 for e in _view_events(cluster, gpu)
                   if e["type"] == "COMPONENT_FAILED"), _view_events(cluster, gpu)
    for gpu, files in backlog.items():
        assert _node_events(cluster, gpu) == ["NODE_SUSPECT", "NODE_DOWN"]
        for rel, body in files.items():
            assert (cluster.data_root(gpu) / rel).read_bytes() == body
            assert cluster.stored("coord", gpu, rel) is None

    healed = time.monotonic()
    cluster.net.heal("coord")
    for gpu in GPUS:
        wait_for(lambda: "NODE_RECOVERED" in _node_events(cluster, gpu), 20,
                 what=f"{gpu} recovered")
        wait_for(lambda: _view_events(cluster, gpu)[-1]["type"] == "COMPONENT_RECOVERED", 15,
                 what=f"{gpu}'s cluster view to recover")
    recovered_in = time.monotonic() - healed
    for gpu, files in backlog.items():
        assert _node_events(cluster, gpu) == ["NODE_SUSPECT", "NODE_DOWN", "NODE_RECOVERED"]
        for rel, body in files.items():
            copy = wait_for(lambda: cluster.stored("coord", gpu, rel), 40, what=f"{gpu}:{rel}")
            assert copy.read_bytes() == body
        wait_for(lambda: _health(cluster, gpu)[0] == 200, 20, what=f"{gpu} healthy again")
    assert recovered_in < 15, f"recovery took {recovered_in:.1f} s after the heal"
