"""Clusters for the copy-truth tests: real node processes, some under libfaketime or strace.

Each test here reproduces one way the deletion promise broke before (issue 11) and checks
the disk afterwards, never a manifest's claim.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import rot, write  # noqa: F401 (the safety tests import them here)

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
KIB = 1024


class SafetyCluster(Cluster):
    """A Cluster whose nodes may get extra environment (``Cluster.env``: libfaketime)."""


@pytest.fixture
def safety_cluster(tmp_path: Path) -> Iterator:
    """``safety_cluster(start=True, **Cluster kwargs)``: always torn down."""
    made: list[SafetyCluster] = []

    def factory(start: bool = True, **kwargs: Any) -> SafetyCluster:
        cluster = SafetyCluster(tmp_path / f"cluster{len(made)}", **kwargs)
        made.append(cluster)
        if start:
            cluster.start()
        return cluster

    try:
        yield factory
    finally:
        for cluster in made:
            cluster.stop_all()


def pressure_config(**push: Any) -> dict[str, Any]:
    """gpu-1 with a 1 MiB quota (its files reach the cleanup level quickly), fast cycles."""
    return {"hosts": {"gpu-1": {"disk_quota": "1MiB"}},
            "push": {"interval_seconds": 0.3, **push},
            "scrub": {"enabled": False}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Other bytes of the same size and mtime under the same name, as ``cp -p`` leaves."""
    st = path.stat()
    assert len(data) == st.st_size
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def deleted(cluster: Cluster, node: str) -> dict[str, dict[str, Any]]:
    """artifact -> the ARTIFACT_DELETED payload (the last one), from the node's event log."""
    return {e["payload"]["artifact"]: e["payload"]
            for e in cluster.events(node, "ARTIFACT_DELETED")}


def intact_copies(cluster: Cluster, origin: str, rel: str, digest: str) -> list[str]:
    """Nodes (other than ``origin``) whose disk holds a file with exactly these bytes."""
    out = []
    for name in cluster.nodes:
        if name == origin:
            continue
        for path in cluster.copies(name, origin, rel):
            if hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                out.append(name)
                break
    return out


def holders(cluster: Cluster, node: str, rel: str, digest: str) -> set[str]:
    """What ``node``'s manifest remembers: verified holders of that version (not ``node``)."""
    rows = cluster.get_json(node, "/v1/manifest?since=0")["replicas"]
    dt, _, path = rel.partition("/")
    return {r["node"] for r in rows if r["data_type"] == dt and r["path"] == path
            and r["sha256"] == digest and not r["removed"] and r["verified_at"]
            and r["node"] != node}


def fill(cluster: Cluster, node: str, name: str, nbytes: int) -> Path:
    """Ballast that takes ``node`` over a level but is never an artifact (a ``*.tmp`` file a
    generator is still writing: excluded), so the only files cleanup may delete are the
    test's own."""
    path = cluster.data_root(node) / "npz" / "ballast" / f"{name}.tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(nbytes))
    return path


def wait_cleanups(cluster: Cluster, node: str, runs: int, timeout: float = 20) -> None:
    before = len(cluster.events(node, "CLEANUP_COMPLETED"))
    wait_for(lambda: len(cluster.events(node, "CLEANUP_COMPLETED")) >= before + runs, timeout,
             what=f"{runs} cleanup runs on {node}")


def start_strace(pid: int, out: Path, inject: str) -> subprocess.Popen:
    """Attach strace to ``pid`` with one injection on unlink (a real fault)."""
    proc = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-o", str(out),
                             "-e", "trace=unlink,unlinkat", "-e", f"inject=unlink,unlinkat:{inject}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return proc


PY = sys.executable
