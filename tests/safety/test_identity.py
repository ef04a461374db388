"""An artifact is (origin, data type, path, version): nothing collides, nothing is stuck.

Issue 11, defects 6 and 7: the same relative path on two nodes, a database held open but
idle, a file that changes after it was pushed, a name reused after a deletion.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from tests.safety.conftest import (KIB, deleted, fill, intact_copies, pressure_config, sha,
                                   write)
from tests.support.cluster import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def test_the_same_path_on_two_nodes_is_two_artifacts(safety_cluster):
    cluster = safety_cluster(gpus=2, quota="64MiB")
    rel = "npz/hex8_2p/batch_0001.npz"
    bodies = {"gpu-1": os.urandom(50 * KIB), "gpu-2": os.urandom(60 * KIB)}
    for node, body in bodies.items():
        write(cluster, node, rel, body)
    for node, body in bodies.items():
        wait_for(lambda n=node: cluster.stored("coord", n, rel), 20, what=f"{node}'s file")
        assert cluster.stored("coord", node, rel).read_bytes() == body
    listed = cluster.get_json("coord", "/v1/artifacts?limit=100")["artifacts"]
    mine = {(a["origin"], a["sha256"]) for a in listed if a["path"] == "hex8_2p/batch_0001.npz"}
    assert mine == {(n, sha(b)) for n, b in bodies.items()}
    failed = [e for e in cluster.events("coord", "DATA_SYNC_FAILED")]
    assert not failed, failed


def _rows(path) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {r[0] for r in db.execute("SELECT game_id FROM games")}
    finally:
        db.close()


def test_an_open_database_waits_and_rows_appended_later_are_a_new_version(safety_cluster):
    cluster = safety_cluster(gpus=1, quota="64MiB")
    rel = "games/k/open.db"
    path = cluster.data_root("gpu-1") / rel
    path.parent.mkdir(parents=True)
    writer = sqlite3.connect(path)  # rollback journal: no sidecar between transactions
    writer.execute("CREATE TABLE games(game_id TEXT PRIMARY KEY)")
    writer.executemany("INSERT INTO games VALUES (?)", [(f"g{i}",) for i in range(20)])
    writer.commit()  # idle from here on, but still open
    cycles = cluster.status("gpu-1")["sync"]["cycles"]
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= cycles + 6, 20, what="cycles")
    assert cluster.stored("coord", "gpu-1", rel) is None, "pushed while a writer held it open"
    writer.close()
    wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 20, what="the closed database")
    assert _rows(cluster.stored("coord", "gpu-1", rel)) == {f"g{i}" for i in range(20)}

    again = sqlite3.connect(path)  # the writer comes back and appends
    again.executemany("INSERT INTO games VALUES (?)", [(f"g{i}",) for i in range(20, 30)])
    again.commit()
    again.close()
    wait_for(lambda: len(cluster.copies("coord", "gpu-1", rel)) == 2, 20, what="a second version")
    versions = [_rows(p) for p in cluster.copies("coord", "gpu-1", rel)]
    assert {f"g{i}" for i in range(30)} in versions
    assert {f"g{i}" for i in range(20)} in versions  # the old version stays where it is
    health = cluster.request("gpu-1", "GET", "/health").json()
    assert "need an operator" not in health["details"]["auto_sync"]["message"]


def _deleted_under_pressure(safety_cluster, rel: str, body: bytes):
    """gpu-1 writes ``rel`` and deletes it under disk pressure behind two copies; the
    ballast is gone again afterwards. Returns the cluster and the source's path."""
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    source = write(cluster, "gpu-1", rel, body)
    ballast = fill(cluster, "gpu-1", "a", 700 * KIB)
    wait_for(lambda: not source.exists(), 30, what=f"{rel} deleted")
    ballast.unlink()
    return cluster, source


def test_a_name_reused_after_a_deletion_is_a_new_version(safety_cluster):
    rel = "npz/k/reused.npz"
    first = os.urandom(200 * KIB)
    cluster, _source = _deleted_under_pressure(safety_cluster, rel, first)
    second = os.urandom(200 * KIB)
    write(cluster, "gpu-1", rel, second)
    wait_for(lambda: intact_copies(cluster, "gpu-1", rel, sha(second)), 20,
             what="the new file under the old name on a holder")
    assert sorted(intact_copies(cluster, "gpu-1", rel, sha(first))) == ["coord", "cpu-1"]
    assert deleted(cluster, "gpu-1")[rel]["sha256"] == sha(first)


def test_the_same_bytes_back_under_a_deleted_name_are_an_own_source_again(safety_cluster):
    rel = "npz/k/again.npz"
    body = os.urandom(200 * KIB)
    cluster, source = _deleted_under_pressure(safety_cluster, rel, body)
    write(cluster, "gpu-1", rel, body)  # a restore puts the very same bytes back
    fill(cluster, "gpu-1", "b", 700 * KIB)
    wait_for(lambda: not source.exists(), 30,
             what="the restored file deleted again behind its copies (never stuck)")
    deletions = wait_for(lambda: len(d := [e for e in cluster.events("gpu-1", "ARTIFACT_DELETED")
                                           if e["payload"]["artifact"] == rel]) == 2 and d,
                         10, what="both deletion records")  # each follows its unlink
    assert len(deletions) == 2
    assert sorted(intact_copies(cluster, "gpu-1", rel, sha(body))) == ["coord", "cpu-1"]
