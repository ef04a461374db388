"""``transport: auto`` when only SSH gets through, on real hosts.

coord's HTTP port is blocked from outside its namespace (nftables; what a cloud security
group does) while its sshd stays reachable. gpu-1's pushes to coord, whose config says
``transport: auto``, cannot connect over HTTP, so they go by rsync over SSH, and coord's
API is reached through an SSH tunnel: coord itself hashes and publishes what arrived. The
transfer names the transport that carried it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.support.cluster import wait_for
from tests.support.files import sha_of, write
from tests.support.hosts import PORT, HostsCluster

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]


def _auto(cluster: HostsCluster) -> dict:
    health = cluster.request("gpu-1", "GET", "/health").json()["details"]
    return health["transport:auto"]["details"]


def test_pushes_fall_back_to_rsync_over_ssh_when_http_is_blocked(make_hosts) -> None:
    cluster: HostsCluster = make_hosts(gpus=1, ssh=True, skip=("coord", "gpu-1"), env={
        "gpu-1": {"RINGSYNC_UPLOAD_IDLE_SECONDS": "4"}})  # a kept-alive connection stalls
    server = cluster.start_sshd("coord")
    cluster.settings["hosts"]["coord"]["ssh"].update({
        "user": server.user, "key": str(server.client_key),
        "host_key": " ".join(Path(f"{server.host_key}.pub").read_text().split()[:2])})
    cluster.settings["hosts"]["coord"]["transport"] = "auto"
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    cluster.start_node("coord")
    cluster.start_node("gpu-1")

    before = os.urandom(500_000)  # over HTTP while it is open
    write(cluster, "gpu-1", "npz/k/open.npz", before)
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/open.npz"), 30,
             what="the copy over http")

    cluster.net.block_port("coord", PORT)  # HTTP from outside coord's namespace: dropped
    body = os.urandom(2_000_000)
    write(cluster, "gpu-1", "npz/k/blocked.npz", body)
    copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/blocked.npz"), 60,
                    what="the copy over ssh")
    assert copy.read_bytes() == body
    assert sha_of(copy) == sha_of(cluster.data_root("gpu-1") / "npz/k/blocked.npz")
    recent = {t["artifact"]: t for t in cluster.status("gpu-1")["transfers"]["recent"]
              if t["error"] is None}
    assert recent["npz/k/open.npz"]["transport"] == "http"
    assert recent["npz/k/blocked.npz"]["transport"] == "rsync"
    auto = _auto(cluster)
    assert "coord" in auto["over_ssh"] and auto["fallbacks"] >= 1, auto
    assert "unreachable" in auto["over_ssh"]["coord"]["http_error"], auto
    assert auto["ssh"]["connected"] == ["coord"], auto  # the tunnel's pooled connection
    # coord published it itself: its own receipt, by rsync, from gpu-1
    received = [e["payload"] for e in cluster.events("coord", "DATA_SYNC_COMPLETED")
                if e["payload"]["artifacts"] == ["npz/k/blocked.npz"]]
    assert received and received[0]["source"] == "gpu-1", received
    assert not list((cluster.data_root("coord") / ".ringsync/incoming").glob("*.rsync"))
