"""The harness itself: hosts on their own addresses and port, a copy across a real link,
SSH reachable while HTTP is blocked, and nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.support.cluster import wait_for
from tests.support.files import write
from tests.support.hosts import PORT, HostsCluster

pytestmark = pytest.mark.hosts


def test_nodes_are_hosts_with_their_own_address_and_the_default_port(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(gpus=1)
    addresses = {n.address for n in cluster.nodes.values()}
    assert len(addresses) == 2 and all(n.port == PORT for n in cluster.nodes.values())
    assert not any(a.startswith("127.") for a in addresses)
    body = os.urandom(300_000)
    write(cluster, "gpu-1", "npz/k/a.npz", body)
    copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/a.npz"), 20, what="the copy")
    assert copy.read_bytes() == body
    # The coordinator sees gpu-1 at its own address (the config's), not loopback.
    members = cluster.get_json("coord", "/v1/cluster")["members"]
    assert members["gpu-1"]["state"] == "up"


def test_http_blocked_while_ssh_stays_open(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(gpus=1, ssh=True)
    sshd = cluster.start_sshd("gpu-1")
    address = cluster.nodes["gpu-1"].address
    cluster.net.block_port("gpu-1", PORT)
    with pytest.raises(OSError):
        socket.create_connection((address, PORT), timeout=1.5).close()
    ran = subprocess.run([*sshd.ssh_args(), sshd.target, "echo", "ok"], capture_output=True,
                         text=True, timeout=20)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr
    cluster.net.block_port("gpu-1", PORT, blocked=False)
    assert cluster.request("gpu-1", "GET", "/health", token=None).status in (200, 503)
