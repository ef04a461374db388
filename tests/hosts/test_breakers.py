"""Breakers and backpressure across a partition, on real links.

A partition sends no FIN and no RST: a push in the middle of its body just stops being
acknowledged. Both ends give it up after ``RINGSYNC_UPLOAD_IDLE_SECONDS`` without a byte
(engine/stall.py), the receiver keeping the partial; the sender's failures open its breaker
to the target, so no transfer slot is spent on it while it is cut off; after the heal the
breaker's probe closes it and the push resumes from the partial. A receiver under
backpressure that releases it while partitioned is sent to again once the heal lets its
senders learn that.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.hosts.test_links import _incoming_bytes
from tests.support.cluster import wait_for
from tests.support.files import sha_of, write
from tests.support.hosts import HostsCluster

pytestmark = [pytest.mark.hosts, pytest.mark.serial, pytest.mark.timeout(150)]

MB = 1_000_000
IDLE = 3.0
"""RINGSYNC_UPLOAD_IDLE_SECONDS on both ends (30 s by default)."""


def _breaker_states(cluster: HostsCluster, node: str, target: str) -> list[str]:
    return [e["payload"]["state"] for e in cluster.events(node, "CIRCUIT_BREAKER_CHANGED")
            if e["payload"]["target"] == target]


def _view(cluster: HostsCluster, node: str) -> dict:
    return cluster.status(node)["routing"]["view"]


def _failures(cluster: HostsCluster, node: str, artifact: str) -> list[str]:
    return [e["payload"]["error"] for e in cluster.events(node, "DATA_SYNC_FAILED")
            if e["payload"]["artifact"] == artifact]


def test_a_partition_mid_upload_fails_the_push_opens_the_breaker_and_resumes_after_heal(
        make_hosts) -> None:
    env = {name: {"RINGSYNC_UPLOAD_IDLE_SECONDS": str(IDLE)} for name in ("coord", "gpu-1")}
    cluster: HostsCluster = make_hosts(
        gpus=1, links={"coord": 2.0, "gpu-1": 100.0}, env=env,
        config={"transfer": {"breaker_failures": 2, "breaker_reset_seconds": 2}})
    body = os.urandom(12 * MB)
    write(cluster, "gpu-1", "npz/k/big.npz", body)
    wait_for(lambda: _incoming_bytes(cluster.data_root("coord")) > 3 * MB, 30,
             what="the upload under way")
    cut = time.monotonic()
    cluster.net.partition("coord", from_=["gpu-1"])  # the harness still reaches both

    # the sender gives the push up (before: never, until TCP's own ~15 min timeout)
    [error, *_] = wait_for(lambda: _failures(cluster, "gpu-1", "npz/k/big.npz"), 4 * IDLE + 5,
                           what="the sender to give up the stalled push")
    given_up = time.monotonic() - cut
    assert "took no bytes of npz/k/big.npz" in error and "handed to the connection" in error, error
    assert given_up < 3 * IDLE + 3, f"gave up after {given_up:.1f} s"
    # the receiver gave its side up too, kept the partial and published nothing
    wait_for(lambda: any("upload stalled" in e for e in _failures(cluster, "coord",
                                                                  "npz/k/big.npz")),
             3 * IDLE, what="the receiver to give up the upload")
    assert cluster.stored("coord", "gpu-1", "npz/k/big.npz") is None
    kept = _incoming_bytes(cluster.data_root("coord"))
    assert kept > 3 * MB

    # more failures open the breaker; while it is open, pushes to coord are probes only
    for i in range(3):
        write(cluster, "gpu-1", f"npz/k/small_{i}.npz", os.urandom(100_000 + i))
    wait_for(lambda: "open" in _breaker_states(cluster, "gpu-1", "coord"), 40,
             what="the breaker to coord to open")
    opened = len(cluster.events("gpu-1", "DATA_SYNC_FAILED"))
    time.sleep(8)
    attempts = len(cluster.events("gpu-1", "DATA_SYNC_FAILED")) - opened
    # 8 s of an open breaker (2 s, then 4 s, ...) lets at most a few probes through, one at a time
    assert attempts <= 3, f"{attempts} failed pushes to an open breaker's target in 8 s"

    cluster.net.heal("coord")
    wait_for(lambda: _breaker_states(cluster, "gpu-1", "coord")[-1:] == ["closed"], 40,
             what="the breaker to close after the heal")
    copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/big.npz"), 40,
                    what="the big file after the heal")
    assert sha_of(copy) == sha_of(cluster.data_root("gpu-1") / "npz/k/big.npz")
    assert copy.read_bytes() == body
    for i in range(3):
        wait_for(lambda: cluster.stored("coord", "gpu-1", f"npz/k/small_{i}.npz"), 30,
                 what=f"small_{i}")
    # it resumed from the partial instead of sending everything again
    done = [t for t in cluster.status("coord")["transfers"]["recent"]
            if t["artifact"] == "npz/k/big.npz" and t["error"] is None]
    assert done and done[-1]["offset"] >= 3 * MB, done


def test_backpressure_released_during_a_partition_is_learned_after_the_heal(make_hosts) -> None:
    # coord's 40 MB quota, 60 % full with a file of its own, is over the 50 % limit
    cluster: HostsCluster = make_hosts(
        gpus=1, config={"sync_routing": {"max_disk_usage_percent": 50,
                                         "capacity_refresh_seconds": 1},
                        "hosts": {"coord": {"disk_quota": "40MB"}}},
        env={"coord": {"RINGSYNC_UPLOAD_IDLE_SECONDS": str(IDLE)}})
    filler = cluster.data_root("coord") / "scratch" / "filler.bin"
    filler.parent.mkdir(parents=True, exist_ok=True)
    filler.write_bytes(os.urandom(24 * MB))
    wait_for(lambda: cluster.events("coord", "BACKPRESSURE_ACTIVATED"), 30,
             what="coord's backpressure")
    write(cluster, "gpu-1", "npz/k/held_0.npz", os.urandom(200_000))
    wait_for(lambda: _view(cluster, "gpu-1")["backpressure"].get("coord"), 20,
             what="gpu-1 to learn coord's backpressure")
    cluster.net.partition("coord", from_=["gpu-1"])
    write(cluster, "gpu-1", "npz/k/held_1.npz", os.urandom(200_000))
    filler.unlink()  # coord has room again, but gpu-1 cannot hear it
    wait_for(lambda: cluster.events("coord", "BACKPRESSURE_RELEASED"), 30,
             what="coord to release its backpressure")
    time.sleep(3)
    assert _view(cluster, "gpu-1")["backpressure"].get("coord") == "disk", \
        "gpu-1 cannot have heard of the release"
    for i in range(2):
        assert cluster.stored("coord", "gpu-1", f"npz/k/held_{i}.npz") is None
    cluster.net.heal("coord")
    for i in range(2):
        wait_for(lambda: cluster.stored("coord", "gpu-1", f"npz/k/held_{i}.npz"), 40,
                 what=f"held_{i} after the heal")
    assert "coord" not in _view(cluster, "gpu-1")["backpressure"]


def test_a_slow_link_with_big_chunks_is_not_a_stall(make_hosts) -> None:
    # a 12 MiB chunk on a 1 MB/s link takes seconds to be taken whole; its 64 KiB pieces
    # (engine/transport/http.py PROGRESS_BYTES) are progress, so a 2 s idle bound never fires
    env = {name: {"RINGSYNC_UPLOAD_IDLE_SECONDS": "2"} for name in ("coord", "gpu-1")}
    cluster: HostsCluster = make_hosts(gpus=1, links={"coord": 1.0, "gpu-1": 100.0}, env=env,
                                       config={"transfer": {"chunk_bytes": "12MiB"}})
    body = os.urandom(12 * MB)
    write(cluster, "gpu-1", "npz/k/slow.npz", body)
    copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/slow.npz"), 60,
                    what="the copy over the slow link")
    assert copy.read_bytes() == body
    assert _failures(cluster, "gpu-1", "npz/k/slow.npz") == []
