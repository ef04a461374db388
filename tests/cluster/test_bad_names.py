"""A file name that is not valid UTF-8 is refused on its own; the node keeps syncing (issue 12)."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import write

pytestmark = pytest.mark.cluster


def _bad_file(cluster: Cluster, node: str, rel: bytes, data: bytes) -> None:
    """Create ``<data_root>/<rel>`` through a bytes path (the name need not decode)."""
    path = os.fsencode(cluster.data_root(node)) + b"/" + rel
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _health(cluster: Cluster, node: str) -> dict:
    return cluster.request(node, "GET", "/health", token=None).json()


def test_a_badly_named_file_is_refused_and_the_rest_keeps_syncing(cluster: Cluster) -> None:
    write(cluster, "gpu-1", "npz/k/good.npz", os.urandom(50_000))
    _bad_file(cluster, "gpu-1", b"games/hex8_2p/bad\xff.db", b"not utf-8 named")
    _bad_file(cluster, "gpu-1", b"npz/dir\xfe/inside.npz", os.urandom(1000))
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/good.npz"), 20,
             what="the good file on the coordinator")

    def refused() -> list[dict]:
        return [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
                if e["payload"]["reason"] == "scan"]

    wait_for(lambda: len(refused()) >= 2, 10, what="DATA_SYNC_FAILED (scan) for the bad names")
    names = sorted(p["artifact"] for p in refused())
    assert names == ["games/hex8_2p/bad\\xff.db", "npz/dir\\xfe"], names
    assert all("UTF-8" in p["error"] for p in refused())

    auto = _health(cluster, "gpu-1")["details"]["auto_sync"]
    assert auto["is_healthy"] is True
    assert "2 file names refused" in auto["message"], auto["message"]
    assert auto["details"]["refused_names_count"] == 2
    assert sorted(auto["details"]["refused_names"]) == names

    # Cycles keep running: a file written later syncs too, and each name is reported once.
    cycles = cluster.status("gpu-1")["sync"]["cycles"]
    write(cluster, "gpu-1", "npz/k/later.npz", os.urandom(40_000))
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/later.npz"), 20,
             what="the later good file on the coordinator")
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= cycles + 3, 15,
             what="more sync cycles")
    time.sleep(0.2)
    assert len(refused()) == 2, refused()
    log = cluster.nodes["gpu-1"].log.read_text(errors="replace")
    assert "refused file name on gpu-1: games/hex8_2p/bad\\xff.db" in log
    assert log.count("refused file name") == 2
    assert "UnicodeEncodeError" not in log and "sync cycle failed" not in log
