"""BatchRsync on a real cluster: many files in one rsync run over a real OpenSSH server,
each verified and published by the receiver on its own.

gpu-1 pushes to a coordinator whose config says ``transport: rsync``. The pushes of one
cycle go in a few rsync runs, not one per file; a batch in which one source vanished and
one file's bytes are not the version declared publishes every other file and fails just
those two, each with its own reason.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from engine.manifest import Artifact
from engine.transport import PushRequest, PushResult, TransferError
from tests.support.cluster import Cluster, embedded_node, wait_for
from tests.support.sshd import SshServer
from tests.system.test_rsync_transport import _rsync_cluster

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


@pytest.fixture
def sshd():
    with SshServer() as server:
        yield server


def _rsync_health(cluster: Cluster, node: str) -> dict:
    return cluster.request(node, "GET", "/health").json()["details"]["transport:rsync"]["details"]


def test_a_cycles_files_go_in_a_few_rsync_runs_and_all_arrive_verified(
        tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    bodies = {f"npz/b/f{i:03d}.npz": os.urandom(16_384 + i) for i in range(300)}
    for rel, body in bodies.items():  # there before gpu-1 starts: its first cycle has all
        path = cluster.data_root("gpu-1") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (time.time() - 120,) * 2)  # finished long ago
    try:
        cluster.start()

        def arrived() -> int:
            return sum(1 for rel in bodies if cluster.stored("coord", "gpu-1", rel))
        wait_for(lambda: arrived() == len(bodies), 60,
                 what=f"all {len(bodies)} files on coord ({arrived()} so far)")
        for rel, body in bodies.items():
            assert cluster.stored("coord", "gpu-1", rel).read_bytes() == body
        batches = _rsync_health(cluster, "gpu-1")["batches"]
        assert batches["files"] == len(bodies) and batches["failed_files"] == 0, batches
        assert batches["batches"] <= 10, batches  # not one rsync per file
        receipts = [e["payload"] for e in cluster.events("coord", "DATA_SYNC_COMPLETED")
                    if e["payload"]["source"] == "gpu-1"]
        assert {r["artifacts"][0] for r in receipts} == set(bodies)  # each registered alone
        assert not list((cluster.data_root("coord") / ".ringsync/incoming").glob("*.rsync"))
    finally:
        cluster.stop_all()


async def test_a_failed_file_fails_only_itself(tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.start(skip=("gpu-1",))
    try:
        async with embedded_node(cluster, "gpu-1") as node:
            rsync = node.transports.get("rsync")
            where = tmp_path / "outgoing"
            where.mkdir()
            requests, expect = [], {}
            for i in range(12):
                body = os.urandom(40_000)
                source = where / f"g{i:02d}.npz"
                source.write_bytes(body)
                sha = hashlib.sha256(body).hexdigest()
                if i == 4:  # vanished before rsync read it
                    source.unlink()
                if i == 7:  # its bytes are not the version declared (rewritten meanwhile)
                    source.write_bytes(os.urandom(40_000))
                art = Artifact("npz", f"batch/g{i:02d}.npz", None, len(body), sha,
                               time.time(), "gpu-1")
                requests.append(PushRequest(art, source, "coord",
                                            node.config.host("coord").url, "interval"))
                expect[i] = body
            transfers = [node.transfers.start(direction="out", source="gpu-1", target="coord",
                                              artifact=r.artifact.key, size=r.artifact.size,
                                              transport="rsync") for r in requests]
            outcomes = await rsync.push_batch(requests, transfers)
            assert len(outcomes) == 12
            for i, outcome in enumerate(outcomes):
                stored = cluster.stored("coord", "gpu-1", requests[i].artifact.key)
                if i == 4:
                    assert isinstance(outcome, TransferError), outcome
                    assert "404" in str(outcome) and "nothing staged" in str(outcome)
                    assert stored is None
                elif i == 7:
                    assert isinstance(outcome, TransferError), outcome
                    assert "422" in str(outcome) and "sha256 mismatch" in str(outcome)
                    assert stored is None
                else:
                    assert isinstance(outcome, PushResult), (i, outcome)
                    assert outcome.sha256 == requests[i].artifact.sha256
                    assert stored is not None and stored.read_bytes() == expect[i]
                    assert outcome.bytes_sent > 0 and transfers[i].done > 0
            # the same batch again: what coord holds is done without sending a byte
            again = await rsync.push_batch(requests, transfers)
            assert [isinstance(o, PushResult) and o.already_present and o.bytes_sent == 0
                    for o in again] == [i not in (4, 7) for i in range(12)]
            assert not list((cluster.data_root("coord") / ".ringsync/incoming")
                            .glob("*.rsync")), "no staged file left, not even a refused one"
    finally:
        cluster.stop_all()
