"""The gossip strategy on a real cluster: a file crosses several hops, peer to peer.

Cluster: coordinator (push_from_generator, so not a gossip node), gpu-1..gpu-5 and cpu-1 on
gossip with fanout 2 every 0.5 s; npz replicates to every eligible node (roles gpu and cpu:
not the coordinator). Only the coordinator, gpu-1 and gpu-2 run at first: gpu-1 writes a
file, gpu-2 pulls it, gpu-1 is killed (SIGKILL), and only then do gpu-3..5 and cpu-1 start.
They never talk to gpu-1, so the artifact's row reaches them relayed and every copy they
store comes from a node that is not the origin: two hops at least, made certain. One copy
is all deletion asks for, so the coordinator's orphan re-homing stays out of it: every late
node's copy is one it pulled.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import sha_of, write

pytestmark = pytest.mark.cluster

REL = "npz/k/spread.npz"
PATH = "k/spread.npz"
HOLDERS = ("gpu-2", "gpu-3", "gpu-4", "gpu-5", "cpu-1")
LATE = ("gpu-3", "gpu-4", "gpu-5", "cpu-1")
"""Started only after gpu-1 is gone."""
CONFIG = {
    "auto_sync": {"strategy": "gossip", "gossip_fanout": 2, "interval_seconds": 0.5},
    "sync_routing": {"policies": {"npz": {"replication_target": "all"}},
                     "capacity_refresh_seconds": 1.0},
    "transfer": {"breaker_reset_seconds": 1.0},  # peers that were not up yet are tried again
    # gpu-2's copy alone is enough: with gpu-1 gone the coordinator would otherwise re-home
    # the orphan (ask gpu-2 to send it to a late node), a copy that node never asked for
    "push": {"min_copies_before_delete": 1},
    "hosts": {"coord": {"strategy": "push_from_generator"}},
}


def stored(cluster: Cluster, node: str) -> str | None:
    """SHA-256 of ``node``'s stored copy of gpu-1's file (None: no copy)."""
    path = cluster.stored(node, "gpu-1", REL)
    return sha_of(path) if path is not None else None


def sources(cluster: Cluster, node: str) -> set[str]:
    """Who sent ``node`` its copy, by its receipts (GET /v1/manifest)."""
    rows = cluster.get_json(node, "/v1/manifest?since=0")["receipts"]
    return {r["source_node"] for r in rows if r["path"] == PATH and r["target_node"] == node}


def post(cluster: Cluster, node: str, path: str, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = cluster.request(node, "POST", path, body=raw,
                           headers={"Content-Type": "application/json"})
    return resp.status, resp.json()


def test_a_file_reaches_every_eligible_node_over_several_hops(make_cluster) -> None:
    cluster = make_cluster(skip=LATE, gpus=5, cpus=1, config=CONFIG)
    write(cluster, "gpu-1", REL, os.urandom(300_000))
    sha = sha_of(cluster.data_root("gpu-1") / REL)
    wait_for(lambda: stored(cluster, "gpu-2") == sha, 15, interval=0.05,
             what="gpu-2 to pull gpu-1's file")
    cluster.stop_node("gpu-1", signal.SIGKILL)
    for name in LATE:  # they never talk to gpu-1: its row and its bytes come through others
        cluster.start_node(name, wait=False)
    for name in LATE:
        cluster.wait_healthy(name)
    wait_for(lambda: all(stored(cluster, n) == sha for n in LATE), 25,
             what="every eligible node to store a verified copy")

    by = {n: sources(cluster, n) for n in HOLDERS}
    assert by["gpu-2"] == {"gpu-1"}, by
    for name in LATE:
        assert len(by[name]) == 1 and by[name] <= set(HOLDERS) - {name}, by  # 2 hops or more
        art = [a for a in cluster.get_json(name, "/v1/artifacts")["artifacts"]
               if a["path"] == PATH]
        assert art and art[0]["origin"] == "gpu-1" and art[0]["sha256"] == sha, art
        assert sha in {r["sha256"] for r in art[0]["replicas"] if r["node"] == name}
        wait_for(lambda n=name: cluster.status(n)["gossip"]["pulls_arrived"] >= 1, 20,
                 what=f"{name} to count its pull as arrived")
    scraped = cluster.request("gpu-3", "GET", "/metrics").body.decode()
    assert 'ringsync_gossip_pulls_arrived_total{node="gpu-3"} 1.0' in scraped
    assert stored(cluster, "coord") is None  # the policy does not name the coordinator
    assert cluster.status("coord")["gossip"] is None  # and it runs another strategy


def test_gossip_routes_answer_bad_input_with_json_errors(make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=0, config=CONFIG)
    write(cluster, "gpu-1", REL, os.urandom(10_000))
    sha = sha_of(cluster.data_root("gpu-1") / REL)
    wait_for(lambda: stored(cluster, "gpu-2") == sha, 15, what="gpu-2's copy")

    status, answer = post(cluster, "gpu-1", "/v1/gossip", b"{not json")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = post(cluster, "gpu-1", "/v1/gossip", {"manifest_id": "x", "seq": 0})
    assert status == 400 and "lacks 'node'" in answer["error"]
    status, answer = post(cluster, "gpu-1", "/v1/gossip",
                          {"node": "nobody", "manifest_id": "x", "seq": 0, "since": 0})
    assert status == 400 and "not a host" in answer["error"]
    status, answer = post(cluster, "gpu-1", "/v1/gossip/delta",
                          {"node": "gpu-2", "manifest_id": "x", "since": 0, "seq": 1,
                           "artifacts": [{"path": "../../etc"}]})
    assert status == 400 and "artifacts[0]" in answer["error"]
    status, answer = post(cluster, "coord", "/v1/gossip",
                          {"node": "gpu-1", "manifest_id": "x", "seq": 0, "since": 0})
    assert status == 409 and "gossip" in answer["error"]  # the coordinator runs another strategy

    send = {"origin": "gpu-1", "data_type": "npz", "path": PATH, "sha256": sha, "to": "coord"}
    for bad, word in (({**send, "sha256": "xyz"}, "sha256"), ({**send, "path": "../x"}, "path"),
                      ({k: v for k, v in send.items() if k != "origin"}, "origin"),
                      ({**send, "origin": "nobody"}, "origin"),
                      ({**send, "to": "gpu-1"}, "to"), ({**send, "data_type": "logs"}, "data type"),
                      ({k: v for k, v in send.items() if k != "to"}, "to"), ([], "object")):
        status, answer = post(cluster, "gpu-1", "/v1/gossip/send", bad)
        assert status == 400 and word in answer["error"], (bad, answer)
    status, answer = post(cluster, "gpu-1", "/v1/gossip/send", {**send, "path": "k/none.npz"})
    assert status == 404, answer
    # a version is (origin, path, sha256): another hash is another version, which gpu-2
    # does not know; another origin's file of that name is another artifact
    status, answer = post(cluster, "gpu-2", "/v1/gossip/send", {**send, "sha256": "0" * 64})
    assert status == 404 and "0" * 12 in answer["error"], answer
    status, answer = post(cluster, "gpu-2", "/v1/gossip/send", {**send, "origin": "gpu-2",
                                                                 "to": "gpu-1"})
    assert status == 404, answer
    # every node serves a send, gossip or not: the coordinator holds no copy of it
    status, answer = post(cluster, "coord", "/v1/gossip/send", {**send, "to": "gpu-2"})
    assert status == 404, answer

    # a holder that is not the origin sends its own verified copy on request
    status, answer = post(cluster, "gpu-2", "/v1/gossip/send", send)
    assert status == 202 and answer["started"] is True, answer
    wait_for(lambda: stored(cluster, "coord") == sha, 10, what="the copy gpu-2 sent")
    assert sources(cluster, "coord") == {"gpu-2"}
