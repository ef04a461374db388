"""Replica knowledge spreads: the coordinator learns every node's replicas by manifest deltas.

Cluster: coordinator, gpu-1, cpu-1 (min_copies_before_delete = 2). gpu-1's regular push
reaches the coordinator; a recovery run on gpu-1 sends the second copy to cpu-1. Nothing
about cpu-1's copy is ever sent to the coordinator except by its ManifestPuller asking
cpu-1 for ``/v1/manifest?since=<cursor>``, so each assertion about cpu-1's row fails if the
pull, the merge or the tombstones do not work.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import sha_of, write

pytestmark = pytest.mark.cluster

REL = "npz/k/spread.npz"
PATH = "k/spread.npz"
PEERS = ("gpu-1", "cpu-1")


def replicas(cluster: Cluster, node: str) -> dict[str, dict[str, Any]]:
    """``node``'s live replica rows of the artifact, by holder (GET /v1/artifacts)."""
    for art in cluster.get_json(node, "/v1/artifacts?limit=5000")["artifacts"]:
        if art["path"] == PATH:
            return {r["node"]: r for r in art["replicas"]}
    return {}


def pulls(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The coordinator's ManifestPuller figures per node (its /status)."""
    return cluster.status("coord")["manifest_pull"]["peers"]


def test_the_coordinator_learns_every_replica_by_deltas(make_cluster) -> None:
    cluster = make_cluster(gpus=1, cpus=1)
    body = os.urandom(90_000)
    write(cluster, "gpu-1", REL, body)
    sha = sha_of(cluster.data_root("gpu-1") / REL)
    wait_for(lambda: (replicas(cluster, "gpu-1").get("coord") or {}).get("verified_at"), 15,
             what="the first copy, verified on the coordinator")
    assert not cluster.copies("cpu-1", "gpu-1", REL)

    # The second copy: gpu-1 pushes to cpu-1; the coordinator is not part of that transfer.
    resp = cluster.request("gpu-1", "POST", "/v1/control/recover",
                           body=json.dumps({"by": "test"}).encode())
    assert resp.status == 202 and resp.json()["scheduled"] == 1, resp.body
    own = wait_for(lambda: (replicas(cluster, "cpu-1").get("cpu-1") or {}).get("verified_at")
                   and replicas(cluster, "cpu-1")["cpu-1"], 15, what="cpu-1's verified copy")
    assert own["sha256"] == sha

    # The coordinator learns cpu-1's own row (its hash, its verified_at) from cpu-1's deltas.
    learned = wait_for(lambda: replicas(cluster, "coord").get("cpu-1"), 10,
                       what="the coordinator to learn cpu-1's replica")
    assert learned == own
    coord_manifest = cluster.get_json("coord", "/v1/manifest?since=0")
    assert {r["target_node"] for r in coord_manifest["receipts"]} == {"coord"}  # never direct
    assert [(r["node"], r["removed"]) for r in coord_manifest["replicas"]
            if r["path"] == PATH and r["node"] == "cpu-1"] == [("cpu-1", 0)]  # in its own deltas

    # By deltas: each cursor reaches the node's own manifest seq, and quiet rounds fetch nothing.
    seqs = {p: cluster.status(p)["manifest_seq"] for p in PEERS}
    wait_for(lambda: all(pulls(cluster)[p]["cursor"] == seqs[p] for p in PEERS), 10,
             what=f"the coordinator's cursors to reach {seqs}")
    quiet = pulls(cluster)
    wait_for(lambda: all(pulls(cluster)[p]["requests"] >= quiet[p]["requests"] + 3
                         for p in PEERS), 10, what="three more pulls of each node")
    after = pulls(cluster)
    assert {p: cluster.status(p)["manifest_seq"] for p in PEERS} == seqs  # the nodes were quiet
    for p in PEERS:
        assert after[p]["cursor"] == seqs[p], p
        assert after[p]["rows_received"] == quiet[p]["rows_received"], p  # zero rows per round
        assert after[p]["rows_merged"] == quiet[p]["rows_merged"], p
        assert after[p]["last_error"] is None, p
    assert cluster.get_json("coord", "/health")["details"]["manifest_pull"]["is_healthy"]

    # cpu-1's copy goes bad; its verification removes its row; the coordinator follows.
    stored = cluster.stored("cpu-1", "gpu-1", REL)
    tampered = bytearray(stored.read_bytes())
    tampered[500] ^= 0xFF
    stored.write_bytes(bytes(tampered))
    resp = cluster.request("cpu-1", "POST", "/v1/control/verify", body=b'{"by": "test"}')
    assert resp.status == 202, resp.body
    wait_for(lambda: cluster.events("cpu-1", "REPLICA_QUARANTINED"), 15, what="the quarantine")
    assert "cpu-1" not in replicas(cluster, "cpu-1")
    wait_for(lambda: "cpu-1" not in replicas(cluster, "coord"), 10,
             what="the coordinator to drop cpu-1's row")
    assert set(replicas(cluster, "coord")) >= {"coord"}  # its own copy still counts
    since = quiet["cpu-1"]["cursor"]
    wait_for(lambda: pulls(cluster)["cpu-1"]["cursor"] == cluster.status("cpu-1")["manifest_seq"],
             10, what="the cursor to follow cpu-1's verification")
    grown = pulls(cluster)["cpu-1"]
    assert grown["cursor"] > since and grown["rows_received"] > quiet["cpu-1"]["rows_received"]
