"""Bandwidth limits and loss against real links: tbf-shaped veths between namespaces."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.cluster import wait_for
from tests.support.files import sha_of, write
from tests.support.hosts import HostsCluster

pytestmark = [pytest.mark.hosts, pytest.mark.serial, pytest.mark.timeout(120)]

MB = 1_000_000


def _incoming_bytes(root: Path) -> int:
    incoming = root / ".ringsync" / "incoming"
    total = 0
    for path in incoming.rglob("*") if incoming.is_dir() else ():
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total


def _steady_rate(root: Path, size: int, timeout: float = 60.0) -> float:
    """MB/s at which the receiver's part file grew between 20 % and 80 % of ``size``."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _incoming_bytes(root)
        samples.append((time.monotonic(), got))
        if got >= 0.8 * size:
            break
        time.sleep(0.1)
    window = [(t, b) for t, b in samples if 0.2 * size <= b <= 0.8 * size]
    assert len(window) >= 5, f"too few samples in the steady part: {samples[-5:]}"
    (t0, b0), (t1, b1) = window[0], window[-1]
    return (b1 - b0) / (t1 - t0) / MB


def test_a_5_mbps_limit_holds_on_a_10_mbps_link(make_hosts) -> None:
    # a host's limit is what senders may push to it (BandwidthCoordinator.allocate(target))
    cluster: HostsCluster = make_hosts(gpus=1, links={"coord": 10.0, "gpu-1": 100.0},
                                       config={"hosts": {"coord": {"bandwidth_mbps": 5}}})
    size = 30 * MB
    body = os.urandom(size)
    write(cluster, "gpu-1", "npz/k/big.npz", body)
    rate = _steady_rate(cluster.data_root("coord"), size)
    copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/big.npz"), 30, what="copy")
    assert sha_of(copy) == sha_of(cluster.data_root("gpu-1") / "npz/k/big.npz")
    assert 4.75 <= rate <= 5.25, f"{rate:.2f} MB/s against a 5 MB/s limit on a 10 MB/s link"


def test_a_node_behind_2_percent_loss_delivers_verified_copies(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(gpus=1, links={"gpu-1": 20.0})
    cluster.net.loss("gpu-1", 2)
    bodies = {f"npz/k/lossy_{i}.npz": os.urandom(1_500_000 + i) for i in range(4)}
    for rel, body in bodies.items():
        write(cluster, "gpu-1", rel, body)
    for rel, body in bodies.items():
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 60, what=rel)
        assert copy.read_bytes() == body
    assert not cluster.events("coord", "REPLICA_QUARANTINED")
    packets = cluster.net.counters("gpu-1")  # the loss really was there, at the rate asked
    assert packets["seen"] > 2000, packets
    assert 0.01 <= packets["lost"] / packets["seen"] <= 0.03, packets


def test_a_link_rate_changed_at_runtime_holds(make_hosts) -> None:
    """``shape`` on a running cluster: a transfer after the change runs at the new rate."""
    cluster: HostsCluster = make_hosts(gpus=1, links={"coord": 12.0, "gpu-1": 100.0})
    size = 24 * MB
    rates = []
    for n, mbps in enumerate((12.0, 4.0)):
        cluster.net.shape("coord", mbps)
        body = os.urandom(size)
        rel = f"npz/k/shaped_{n}.npz"
        write(cluster, "gpu-1", rel, body)
        rates.append(_steady_rate(cluster.data_root("coord"), size))
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 30, what=rel)
        assert sha_of(copy) == sha_of(cluster.data_root("gpu-1") / rel)
    fast, slow = rates
    assert 0.85 * 12 <= fast <= 1.05 * 12, f"{fast:.2f} MB/s on a 12 MB/s link"
    assert 0.85 * 4 <= slow <= 1.05 * 4, f"{slow:.2f} MB/s after the link went to 4 MB/s"
