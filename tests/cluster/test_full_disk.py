"""Issue 12: a receiver whose filesystem is really full (a small tmpfs as its data root).

The coordinator's data root is a 12 MiB tmpfs while its quota says 64 GiB. Its capacity is
capped at what the disk can take, so a 16 MiB upload is refused before a byte is written
("no room"); one that gets in as the disk fills is refused by the kernel (a real ENOSPC).
Either way the upload is a retryable 507, any part is discarded (its blocks freed), nothing
is published, and the sender backs off and retries. Once the filesystem grows
(``mount -o remount,size=``) the retry delivers a verified copy.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import write
from tests.support.objects import sha

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SMALL = "12m"
BIG = "96m"


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"mount {' '.join(args)}: {done.stderr.strip()}"


@pytest.fixture
def small_coordinator(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster whose coordinator's data root is a 12 MiB tmpfs (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    cluster = Cluster(tmp_path / "full", gpus=1)
    root = cluster.data_root("coord")
    root.mkdir(parents=True)
    _mount(["-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(root)])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_really_full_receiver_answers_507_and_the_sender_retries_until_it_has_room(
        small_coordinator: Cluster) -> None:
    cluster = small_coordinator
    root = cluster.data_root("coord")
    data = os.urandom(16 * 2**20)
    write(cluster, "gpu-1", "npz/k/big.npz", data)

    def refused() -> list[dict]:
        return [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
                if "507" in e["payload"]["error"]]

    failures = wait_for(lambda: len(refused()) >= 2 and refused(), 40,
                        what="two pushes refused with 507")
    # refused before a byte is written (its capacity is capped at what the disk can take:
    # "no room"), or by the write itself (ENOSPC): 507 either way
    assert all("ENOSPC" in f["error"] or "has no room" in f["error"] for f in failures), failures
    assert all(f["retry_in_seconds"] is not None and f["retry_in_seconds"] > 0
               for f in failures), failures  # retryable, with backoff
    assert cluster.version("coord", "gpu-1", "npz/k/big.npz", sha(data)) is None
    incoming = root / ".ringsync" / "incoming"
    # each refused part is discarded: its blocks go back (one may be arriving right now)
    assert sum(p.stat().st_size for p in incoming.glob("*")) < len(data)
    health = cluster.request("coord", "GET", "/health", token=None)
    assert health.status in (200, 503) and "details" in health.json()  # it still answers
    _mount(["-o", f"remount,size={BIG}", str(root)])
    copy = wait_for(lambda: cluster.version("coord", "gpu-1", "npz/k/big.npz", sha(data)), 40,
                    what="the copy once the filesystem has room")
    assert copy.read_bytes() == data
    replicas = wait_for(lambda: [r for r in cluster.get_json("coord", "/v1/manifest?since=0")[
        "replicas"] if r["node"] == "coord" and r["sha256"] == sha(data) and r["verified_at"]],
        10, what="the verified replica")
    assert replicas
    assert list(incoming.glob("*")) == []
