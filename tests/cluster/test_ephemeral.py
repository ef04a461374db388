"""The ephemeral strategy on a real cluster: gpu-1 is a spot host (``ephemeral: true``).

What it reports safe is on a durable node, verified, even if it is killed that instant; what
it queued survives SIGKILL and is pushed first when it comes back; SIGTERM makes it push what
is not safe yet before it exits. Every node is its own ``ringsync --engine-only`` process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from typing import Any

import pytest

from engine.daemons.write_through import QUEUE_FILE, WriteThroughQueue
from tests.support.cluster import Cluster, wait_for
from tests.support.files import sha_of, write

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

EPHEMERAL = {"hosts": {"gpu-1": {"ephemeral": True}},
             "auto_sync": {"ephemeral_interval_seconds": 5, "final_push_seconds": 3}}
DURABLE = ("coord", "gpu-2", "cpu-1")


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def safe_events(cluster: Cluster, node: str = "gpu-1") -> dict[str, dict[str, Any]]:
    """artifact -> ARTIFACT_SAFE payload (the last one for each artifact)."""
    return {e["payload"]["artifact"]: e["payload"]
            for e in cluster.events(node, "ARTIFACT_SAFE")}


def queued(cluster: Cluster, node: str = "gpu-1") -> int:
    return cluster.status(node)["sync"]["write_through"]["queued"]


def assert_stored(cluster: Cluster, payload: dict[str, Any], body: bytes) -> None:
    """The artifact of an ARTIFACT_SAFE is on every durable node it names, byte for byte."""
    assert payload["sha256"] == sha(body) and payload["bytes"] == len(body), payload
    assert payload["durable_on"] and "gpu-1" not in payload["durable_on"], payload  # the
    # only ephemeral host is gpu-1: every other node is durable
    for node in payload["durable_on"]:
        stored = cluster.version(node, "gpu-1", payload["artifact"], payload["sha256"])
        assert stored, f"{payload['artifact']} reported safe on {node}, not there"
        assert sha_of(stored) == payload["sha256"], f"{node} holds other bytes"


def test_reported_safe_means_on_a_durable_node_even_if_killed_that_instant(make_cluster) -> None:
    cluster = make_cluster(gpus=4, cpus=1, config=EPHEMERAL)  # six nodes
    assert cluster.status("gpu-1")["strategy"] == "ephemeral"
    body = os.urandom(400_000)
    write(cluster, "gpu-1", "npz/hex8_2p/spot_0001.npz", body)
    key = "npz/hex8_2p/spot_0001.npz"
    payload = wait_for(lambda: safe_events(cluster).get(key), 15, interval=0.01,
                       what="ARTIFACT_SAFE on gpu-1")
    cluster.nodes["gpu-1"].proc.send_signal(signal.SIGKILL)  # the spot host is gone, now
    cluster.nodes["gpu-1"].proc.wait(5)
    assert_stored(cluster, payload, body)
    assert payload["node"] == "gpu-1" and payload["queued_seconds"] >= 0


def test_a_queue_built_while_no_durable_node_answers_survives_sigkill_and_drains(
        make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, config=EPHEMERAL)
    for node in DURABLE:
        assert cluster.stop_node(node) == 0
    bodies = {f"npz/hex8_2p/outage_{i}.npz": os.urandom(150_000 + i) for i in range(4)}
    for rel, body in bodies.items():
        write(cluster, "gpu-1", rel, body)
    doomed = write(cluster, "gpu-1", "npz/hex8_2p/deleted_by_its_writer.npz", b"x" * 1000)
    written = time.time()
    wait_for(lambda: queued(cluster) == len(bodies) + 1, 15, what="five queued artifacts")
    scraped = cluster.request("gpu-1", "GET", "/metrics").body.decode()
    assert f'ringsync_write_through_queued{{node="gpu-1"}} {len(bodies) + 1}.0' in scraped
    assert not safe_events(cluster)
    # bytes that leave the node before they are safe can never be pushed: reported, dropped
    doomed.unlink()
    wait_for(lambda: queued(cluster) == len(bodies), 10, what="the deleted file off the queue")
    [lost] = [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
              if e["payload"]["reason"] == "write_through"]
    assert lost["artifact"] == "npz/hex8_2p/deleted_by_its_writer.npz"
    assert lost["retry_in_seconds"] is None
    cluster.nodes["gpu-1"].proc.send_signal(signal.SIGKILL)
    cluster.nodes["gpu-1"].proc.wait(5)
    killed_at = max(e["seq"] for e in cluster.events("gpu-1"))

    queue = WriteThroughQueue(cluster.data_root("gpu-1") / ".ringsync" / QUEUE_FILE)
    try:  # what the killed process left on disk
        assert {e.key: e.sha256 for e in queue.pending()} == \
            {rel: sha(body) for rel, body in bodies.items()}
    finally:
        queue.close()

    for node in DURABLE:
        cluster.start_node(node, wait=False)
    for node in DURABLE:
        cluster.wait_healthy(node)
    restarted = time.time()
    cluster.start_node("gpu-1")
    wait_for(lambda: len(safe_events(cluster)) == len(bodies), 20, what="every artifact safe")
    assert set(safe_events(cluster)) == set(bodies)
    assert queued(cluster) == 0
    for rel, body in bodies.items():
        assert_stored(cluster, safe_events(cluster)[rel], body)
    for event in cluster.events("gpu-1", "ARTIFACT_SAFE"):  # queued before the kill, not anew
        assert written - 1 < event["ts"] - event["payload"]["queued_seconds"] < restarted
    starts = [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_STARTED")
              if e["seq"] > killed_at]  # the restart's first pushes: the queue, before a scan
    assert starts and starts[0]["reason"] == "write_through_restart", starts
    assert starts[0]["urgency"] == "urgent"


def test_sigterm_pushes_what_is_not_safe_before_the_node_exits(make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, finished_after=30.0, config={
        "hosts": {"gpu-1": {"ephemeral": True}},
        "auto_sync": {"interval_seconds": 60, "ephemeral_interval_seconds": 60,
                      "final_push_seconds": 20}})
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= 1, 10, what="the first cycle")
    body = os.urandom(300_000)
    rel = "npz/hex8_2p/last_words.npz"
    write(cluster, "gpu-1", rel, body)
    held = write(cluster, "gpu-1", "npz/hex8_2p/still_writing.npz", os.urandom(1000))
    with open(held, "ab"):  # a writer still has it open: not finished, not pushed
        began = time.monotonic()
        assert cluster.stop_node("gpu-1", signal.SIGTERM, timeout=30) == 0
    took = time.monotonic() - began
    assert took < 20, took
    stored = cluster.version("coord", "gpu-1", rel, sha(body))
    assert stored and sha_of(stored) == sha(body)
    coord = cluster.get_json("coord", "/v1/manifest?since=0")
    assert any(r["path"] == "hex8_2p/last_words.npz" and r["node"] == "coord"
               and r["sha256"] == sha(body) and r["verified_at"] for r in coord["replicas"])
    assert not cluster.copies("coord", "gpu-1", "npz/hex8_2p/still_writing.npz")
    payload = safe_events(cluster)[rel]
    assert payload["durable_on"] == ["coord"]
    assert_stored(cluster, payload, body)
    assert [e["payload"]["reason"] for e in cluster.events("gpu-1", "DATA_SYNC_STARTED")] == \
        ["final_push"]
    queue = WriteThroughQueue(cluster.data_root("gpu-1") / ".ringsync" / QUEUE_FILE)
    try:
        assert len(queue) == 0
    finally:
        queue.close()


def test_with_the_coordinator_down_a_spot_host_goes_safe_on_another_durable_node(
        make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, config={
        **EPHEMERAL, "transfer": {"breaker_failures": 2, "breaker_reset_seconds": 30}})
    assert cluster.stop_node("coord") == 0
    body = os.urandom(200_000)
    rel = "npz/hex8_2p/no_coordinator.npz"
    write(cluster, "gpu-1", rel, body)
    payload = wait_for(lambda: safe_events(cluster).get(rel), 20, what="ARTIFACT_SAFE")
    assert "coord" not in payload["durable_on"]
    assert_stored(cluster, payload, body)
    assert queued(cluster) == 0
