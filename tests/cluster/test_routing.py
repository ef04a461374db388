"""Routing on real six-node clusters: broadcast, recovery backlog, backpressure, breakers.

Every node is its own process on a loopback port. The router decides from live state —
membership (down, recovered), the receivers' own backpressure, the sender's circuit
breakers — so each test changes that state for real (stopping and restarting processes,
filling a disk) and checks what arrived where, verified by hashing the stored bytes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from typing import Any

import pytest

from tests.support.cluster import TOKEN, Cluster, wait_for
from tests.support.files import sha_of, write

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

KIB = 1024
FAST = {"sync_routing": {"capacity_refresh_seconds": 0.5},
        "transfer": {"breaker_failures": 3, "breaker_reset_seconds": 1.0}}


def six_nodes(make_cluster, **config: Any) -> Cluster:
    """coord, gpu-1..4, cpu-1: six processes."""
    merged: dict[str, Any] = {**FAST}
    for key, value in config.items():
        merged[key] = {**merged.get(key, {}), **value}
    return make_cluster(gpus=4, cpus=1, config=merged)


def stored(cluster: Cluster, node: str, rel: str) -> str | None:
    """SHA-256 of ``node``'s newest stored copy of ``rel``, from whichever origin (None: no
    copy; a node's own source is not a copy)."""
    copies = [c for origin in cluster.nodes for c in cluster.copies(node, origin, rel)]
    return sha_of(max(copies, key=lambda c: c.stat().st_mtime_ns)) if copies else None


def metrics(cluster: Cluster, node: str) -> str:
    return cluster.request(node, "GET", "/metrics").body.decode()


def types(cluster: Cluster, node: str, *wanted: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events(node) if e["type"] in wanted]


def test_broadcast_reaches_every_eligible_node_and_a_restarted_one_gets_its_backlog(
        make_cluster) -> None:
    cluster = six_nodes(make_cluster, hosts={"gpu-1": {"strategy": "broadcast"}},
                        sync_routing={"policies": {"models": {"broadcast": True}}})
    eligible = ["gpu-2", "gpu-3", "gpu-4", "cpu-1"]
    first = write(cluster, "gpu-1", "models/hex8_2p/v1.pt", os.urandom(300 * KIB))
    want = sha_of(first)
    wait_for(lambda: all(stored(cluster, n, "models/hex8_2p/v1.pt") == want for n in eligible),
             20, what="the model on every eligible node")
    assert stored(cluster, "coord", "models/hex8_2p/v1.pt") is None  # not named by the policy
    # npz is not a broadcast type: it goes to the coordinator only
    npz = write(cluster, "gpu-1", "npz/hex8_2p/a.npz", os.urandom(10 * KIB))
    wait_for(lambda: stored(cluster, "coord", "npz/hex8_2p/a.npz") == sha_of(npz), 15,
             what="npz on the coordinator")
    assert all(stored(cluster, n, "npz/hex8_2p/a.npz") is None for n in eligible)

    # cpu-1 goes away: membership calls it down; the next model reaches the others
    cluster.stop_node("cpu-1", signal.SIGKILL)
    wait_for(lambda: types(cluster, "coord", "NODE_DOWN"), 15, what="NODE_DOWN cpu-1")
    wait_for(lambda: "cpu-1" in cluster.status("gpu-1")["routing"]["view"]["down"], 10,
             what="gpu-1 to learn it from the coordinator")
    second = write(cluster, "gpu-1", "models/hex8_2p/v2.pt", os.urandom(200 * KIB))
    wait_for(lambda: all(stored(cluster, n, "models/hex8_2p/v2.pt") == sha_of(second)
                         for n in ("gpu-2", "gpu-3", "gpu-4")), 20, what="v2 on the GPUs")
    time.sleep(1.0)
    assert stored(cluster, "cpu-1", "models/hex8_2p/v2.pt") is None
    # back: NODE_RECOVERED, then gpu-1 sends the backlog because of it
    cluster.start_node("cpu-1")
    wait_for(lambda: stored(cluster, "cpu-1", "models/hex8_2p/v2.pt") == sha_of(second), 20,
             what="the backlog on cpu-1")
    coord = [e["type"] for e in types(cluster, "coord", "NODE_DOWN", "NODE_RECOVERED")
             if e["payload"]["node"] == "cpu-1"]
    assert coord[-2:] == ["NODE_DOWN", "NODE_RECOVERED"]
    # gpu-1 sent the backlog once it learned of the recovery: woken by NODE_RECOVERED, or by
    # its next cycle when its refreshed view showed cpu-1 up first (both happened in CI)
    # (the sender reports after the receiver stored it: wait for its event)
    backlog = wait_for(lambda: [e for e in types(cluster, "gpu-1", "DATA_SYNC_COMPLETED")
                                if e["payload"]["target"] == "cpu-1"
                                and "models/hex8_2p/v2.pt" in e["payload"]["artifacts"]],
                       10, what="gpu-1's DATA_SYNC_COMPLETED of the backlog to cpu-1")
    assert backlog[0]["payload"]["reason"] in ("node_recovered", "interval"), backlog
    wait_for(lambda: cluster.status("gpu-1")["routing"]["recovered"] >= 1, 10,
             what="gpu-1's router to take NODE_RECOVERED (it wakes a cycle for the backlog)")


def stalled_upload(cluster: Cluster, node: str, rel: str, size: int = 1 << 20) -> socket.socket:
    """An urgent upload that sends its headers and 1 KB, then stalls: it stays in the
    receiver's inbound queue until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", cluster.nodes[node].port))
    head = (f"PUT /v1/objects/{rel} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"X-Ringsync-Size: {size}\r\nX-Ringsync-Sha256: {'0' * 64}\r\n"
            f"X-Ringsync-Source: test\r\nX-Ringsync-Origin: gpu-1\r\n"
            f"X-Ringsync-Urgency: urgent\r\n"
            f"Content-Length: {size}\r\n\r\n")
    sock.sendall(head.encode() + b"x" * 1024)
    return sock


@pytest.mark.parametrize("reason", ["disk", "queue"])
def test_backpressure_holds_normal_pushes_and_urgent_ones_go_elsewhere(make_cluster,
                                                                        reason: str) -> None:
    cluster = six_nodes(make_cluster, hosts={"coord": {"disk_quota": "1MiB"},
                                             "gpu-2": {"ephemeral": True}},
                        sync_routing={"max_inbound_queue": 2})
    if reason == "disk":  # 78 % of the quota: over max_disk_usage_percent (70)
        ballast = write(cluster, "coord", "npz/ballast/fill.npz", os.urandom(800 * KIB))
        relieve = ballast.unlink
    else:  # two uploads in progress: the inbound queue is full, the disk is not
        # small: each stalled part reserves its declared size, which counts as used disk
        stalled = [stalled_upload(cluster, "coord", f"npz/stall/s{i}.npz", 64 * KIB)
                   for i in range(2)]
        relieve = lambda: [sock.close() for sock in stalled]  # noqa: E731
    wait_for(lambda: cluster.status("coord")["backpressure"]["active"], 15,
             what="the coordinator's backpressure")
    (activated,) = [e["payload"] for e in types(cluster, "coord", "BACKPRESSURE_ACTIVATED")]
    assert activated["reason"] == reason
    assert activated["disk_percent"] >= 70 if reason == "disk" else activated["queue_depth"] >= 2
    assert 'ringsync_backpressure{node="coord"} 1.0' in metrics(cluster, "coord")
    # senders learn it from the coordinator's view
    for sender in ("gpu-1", "gpu-2"):
        wait_for(lambda n=sender: "coord" in cluster.status(n)["routing"]["view"]["backpressure"],
                 10, what=f"{sender} to know")
    # the receiver itself refuses a normal upload with 503 and takes an urgent one
    body = os.urandom(1000)
    headers = {"X-Ringsync-Size": "1000", "X-Ringsync-Sha256": hashlib.sha256(body).hexdigest(),
               "X-Ringsync-Source": "test", "X-Ringsync-Origin": "gpu-1",
               "Content-Length": "1000"}
    refused = cluster.request("coord", "PUT", "/v1/objects/npz/x/normal.npz", body,
                              {**headers, "X-Ringsync-Urgency": "normal"})
    assert refused.status == 503 and refused.headers["x-ringsync-backpressure"] == reason
    assert not cluster.copies("coord", "gpu-1", "npz/x/normal.npz")
    taken = cluster.request("coord", "PUT", "/v1/objects/npz/x/urgent.npz", body,
                            {**headers, "X-Ringsync-Urgency": "urgent"})
    assert taken.status in (200, 201), taken.body

    normal = write(cluster, "gpu-1", "npz/hex8_2p/held.npz", os.urandom(20 * KIB))
    urgent = write(cluster, "gpu-2", "npz/hex8_2p/spot.npz", os.urandom(20 * KIB))  # ephemeral
    wait_for(lambda: any(stored(cluster, n, "npz/hex8_2p/spot.npz") == sha_of(urgent)
                         for n in ("cpu-1", "gpu-1", "gpu-3", "gpu-4")), 15,
             what="the ephemeral node's urgent push elsewhere")
    time.sleep(1.5)
    assert stored(cluster, "coord", "npz/hex8_2p/held.npz") is None, "a normal push went through"
    assert stored(cluster, "coord", "npz/hex8_2p/spot.npz") is None
    tried = [e for e in types(cluster, "gpu-1", "DATA_SYNC_FAILED")
             if e["payload"]["target"] == "coord"]
    assert tried == [], "the sender should hold the push, not try and be refused"

    relieve()  # room again: released, and the held push goes
    wait_for(lambda: stored(cluster, "coord", "npz/hex8_2p/held.npz") == sha_of(normal), 20,
             what="the held push after BACKPRESSURE_RELEASED")
    released = types(cluster, "coord", "BACKPRESSURE_RELEASED")
    assert released
    arrived = wait_for(lambda: [e for e in types(cluster, "coord", "DATA_SYNC_COMPLETED")
                                if "npz/hex8_2p/held.npz" in e["payload"]["artifacts"]], 10,
                       what="the receiver's event (logged a moment after the file is in place)")
    assert arrived[0]["ts"] >= released[0]["ts"]


def test_a_breaker_opens_on_a_dead_target_and_closes_when_it_returns(make_cluster) -> None:
    cluster = six_nodes(make_cluster)
    cluster.stop_node("coord", signal.SIGKILL)  # no membership either: gpu-1 finds out itself
    files = {f"npz/hex8_2p/b{i}.npz": write(cluster, "gpu-1", f"npz/hex8_2p/b{i}.npz",
                                            os.urandom(5 * KIB)) for i in range(4)}

    def breaker(state: str) -> list[dict[str, Any]]:
        return [e["payload"] for e in types(cluster, "gpu-1", "CIRCUIT_BREAKER_CHANGED")
                if e["payload"]["target"] == "coord" and e["payload"]["state"] == state]

    wait_for(lambda: breaker("open"), 20, what="the breaker to open")
    opened = breaker("open")[0]
    assert opened["previous"] == "closed" and opened["failures"] >= 3 and opened["error"]
    failures = [e for e in types(cluster, "gpu-1", "DATA_SYNC_FAILED")
                if e["payload"]["target"] == "coord"]
    assert len(failures) >= 3  # every failure is an event
    health = cluster.request("gpu-1", "GET", "/health", token=None).json()
    assert "coord" in health["details"]["router"]["details"]["open_breakers"]
    assert 'ringsync_breaker_open{node="gpu-1",target="coord"} 1.0' in metrics(cluster, "gpu-1")
    # while open, probes are spaced: attempts do not keep hammering the dead target
    time.sleep(2.0)
    attempts_open = len([e for e in types(cluster, "gpu-1", "DATA_SYNC_FAILED")
                         if e["payload"]["target"] == "coord"])
    assert attempts_open - len(failures) <= 4 * 2  # at most one probe per reset period-ish

    cluster.start_node("coord")
    wait_for(lambda: breaker("closed"), 30, what="the breaker to close")
    assert breaker("half_open"), "it closed without a half-open probe"
    wait_for(lambda: all(stored(cluster, "coord", rel) == sha_of(path)
                         for rel, path in files.items()), 20, what="the files after closing")
