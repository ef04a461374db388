"""Disk pressure on a real cluster: push at 50 %, urgent at 70 %, clean at 75 %, lose nothing.

Every node is its own process; the GPU node's quota is small so a test writer (this test
process, not ringsync) fills it. A source may be deleted only when min_copies (2) other
nodes vouch for it when asked at that moment, so each test checks what is on disk
afterwards, and the negative cases (a tampered copy, a holder that is down, a file held
open) would delete data if the engine trusted its memory.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine.config.schema import PushThresholds
from engine.daemons.push import pressure_level
from tests.support.cluster import Cluster, wait_for
from tests.support.files import rot, sha_of, write

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

KIB = 1024


def game_db(cluster: Cluster, node: str, rel: str, games: int, blob: int) -> dict[str, bytes]:
    """A finished games database (written, committed, closed); returns its rows."""
    path = cluster.data_root(node) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = {f"{path.stem}-g{i}": os.urandom(blob) for i in range(games)}
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE games(game_id TEXT PRIMARY KEY, moves BLOB)")
    db.executemany("INSERT INTO games VALUES (?, ?)", rows.items())
    db.commit()
    db.close()
    return rows


def db_rows(path: Path) -> dict[str, bytes] | None:
    """The rows of an intact database copy, or None when it is missing or unsound."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            return None
        return dict(db.execute("SELECT game_id, moves FROM games"))
    finally:
        db.close()


def levels(cluster: Cluster, node: str) -> list[str]:
    return [e["payload"]["level"] for e in cluster.events(node, "DISK_PRESSURE_CHANGED")]


def deleted(cluster: Cluster, node: str) -> dict[str, list[str]]:
    """artifact -> vouching holders, from the node's ARTIFACT_DELETED events."""
    return {e["payload"]["artifact"]: e["payload"]["vouched_by"]
            for e in cluster.events(node, "ARTIFACT_DELETED")}


def held_file(cluster: Cluster, node: str, rel: str, origin: str = "gpu-1") -> Path | None:
    """``origin``'s source ``rel`` on ``origin`` itself, elsewhere ``node``'s stored copy."""
    if node == origin:
        path = cluster.data_root(node) / rel
        return path if path.exists() else None
    return cluster.stored(node, origin, rel)


def holders(cluster: Cluster, node: str, path: str) -> set[str]:
    for art in cluster.get_json(node, "/v1/artifacts?limit=5000")["artifacts"]:
        if art["path"] == path:
            return {r["node"] for r in art["replicas"]
                    if r["verified_at"] and r["sha256"] == art["sha256"] and r["node"] != node}
    return set()


def test_a_filling_gpu_node_pushes_goes_urgent_cleans_and_loses_no_game(make_cluster) -> None:
    cluster = make_cluster(gpus=2, cpus=1, quota="64MiB", config={
        "hosts": {"gpu-1": {"disk_quota": "2MiB"}},
        "push": {"interval_seconds": 0.3, "batch_files": 2, "urgent_batch_files": 8}})
    gpu = cluster.data_root("gpu-1")
    npz: dict[str, str] = {}
    dbs: dict[str, dict[str, bytes]] = {}
    # A finished file some process still holds open: pushed, never deleted.
    held = write(cluster, "gpu-1", "npz/hex8_2p/held-open.npz", os.urandom(60 * KIB))
    npz["npz/hex8_2p/held-open.npz"] = sha_of(held)
    with open(held, "rb"):
        for i in range(36):  # ~3.6 MiB into a 2 MiB quota, ~0.1 MiB at a time
            if i % 3 == 0:
                dbs[f"games/hex8_2p/d{i:02d}.db"] = game_db(cluster, "gpu-1",
                                                            f"games/hex8_2p/d{i:02d}.db", 8, 12 * KIB)
            else:
                rel = f"npz/hex8_2p/f{i:02d}.npz"
                npz[rel] = sha_of(write(cluster, "gpu-1", rel, os.urandom(100 * KIB)))
            time.sleep(0.25)
        wait_for(lambda: "cleanup" in levels(cluster, "gpu-1"), 30, what="the cleanup level")
        wait_for(lambda: cluster.status("gpu-1")["push"]["percent"] < 75, 60,
                 what="usage back under 75 %")
        assert held.exists(), "a file held open by a process was deleted"

    # push first; urgent and cleanup reached (a big write may go from push straight to
    # cleanup, and urgent then comes on the way down); every change at the right percentage
    changes = [e["payload"] for e in cluster.events("gpu-1", "DISK_PRESSURE_CHANGED")]
    assert changes[0]["level"] == "push" and changes[0]["previous"] == "normal", changes
    assert {c["level"] for c in changes} >= {"push", "urgent", "cleanup"}, changes
    thresholds = PushThresholds()
    for change in changes:
        assert pressure_level(change["percent"], thresholds, change["previous"]) == \
            change["level"], change

    # usage can read under 75 % while a cleanup run is still deleting its batch: take the
    # deletions once the runs account for every one (a run's ARTIFACT_DELETED events come
    # before its CLEANUP_COMPLETED, and with the writer done no new run starts under 75 %)
    def settled() -> dict[str, list[str]] | None:
        runs = cluster.events("gpu-1", "CLEANUP_COMPLETED")
        gone = deleted(cluster, "gpu-1")
        return gone if sum(r["payload"]["deleted"] for r in runs) == len(gone) else None
    gone = wait_for(settled, 30, what="the last cleanup run to finish")
    assert len(gone) >= 10, gone
    for artifact, vouched in gone.items():
        assert len(set(vouched)) >= 2 and "gpu-1" not in vouched, (artifact, vouched)
        assert not (gpu / artifact).exists()
    def short() -> list[tuple[str, set[str]]]:
        """Files not present and intact on at least 2 nodes (gpu-1's own copy included)."""
        out = []
        for rel, sha in npz.items():
            intact = {n for n in cluster.nodes
                      if (f := held_file(cluster, n, rel)) is not None and sha_of(f) == sha}
            out += [(rel, intact)] if len(intact) < 2 else []
        for rel, rows in dbs.items():
            intact = {n for n in cluster.nodes
                      if (f := held_file(cluster, n, rel)) is not None and db_rows(f) == rows}
            out += [(rel, intact)] if len(intact) < 2 else []
        return out

    # the newest files may still be on their way to a second node
    wait_for(lambda: not short(), 30, what=f"every file intact on 2 nodes: {short()}")
    for rel in dbs:
        copies = [f for n in cluster.nodes if n != "gpu-1"
                  for f in cluster.copies(n, "gpu-1", rel)]
        assert len({sha_of(f) for f in copies}) == 1, (rel, copies)  # one snapshot everywhere

    pushed = [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_COMPLETED")
              if e["payload"]["reason"] == "disk_pressure"]
    assert {p["urgency"] for p in pushed} >= {"normal", "urgent"}, pushed
    started = [e["payload"] for e in cluster.events("gpu-1", "DATA_SYNC_STARTED")
               if e["payload"]["reason"] == "disk_pressure"]
    assert started and all(p["files"] >= 1 for p in started)
    runs = [e["payload"] for e in cluster.events("gpu-1", "CLEANUP_COMPLETED")]
    assert sum(r["deleted"] for r in runs) == len(gone) and all(r["required"] == 2 for r in runs)
    assert any(r["unfinished"] >= 1 for r in runs)  # the held-open file was looked at, and left
    metrics = cluster.request("gpu-1", "GET", "/metrics").body.decode()
    assert f'ringsync_cleanup_deleted_total{{node="gpu-1"}} {float(len(gone))}' in metrics
    assert 'ringsync_disk_pressure_level{node="gpu-1"}' in metrics
    # the manifest logs each deletion with its vouching holders, and travels as a delta
    rows = cluster.get_json("gpu-1", "/v1/manifest?since=0")["deletions"]
    assert {r["origin"] for r in rows} == {"gpu-1"} and not [r for r in rows if "node" in r]
    assert {f"{r['data_type']}/{r['path']}": sorted(__import__("json").loads(r["vouched_by"]))
            for r in rows} == {a: sorted(v) for a, v in gone.items()}


def _cleanups(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in cluster.events(node, "CLEANUP_COMPLETED")]


def test_only_live_vouches_count_a_tampered_copy_and_a_down_holder_do_not(make_cluster) -> None:
    cluster = make_cluster(gpus=1, cpus=1, quota="64MiB", config={
        "hosts": {"gpu-1": {"disk_quota": "1MiB"}},
        "push": {"interval_seconds": 0.3}})  # a vouch always re-hashes: no max age to set
    size = 200 * KIB
    bodies = {"npz/k/a.npz": os.urandom(size), "npz/k/b.npz": os.urandom(2 * size),
              "npz/k/c.npz": os.urandom(size + 100 * KIB), "npz/k/d.npz": os.urandom(2 * size)}
    a = write(cluster, "gpu-1", "npz/k/a.npz", bodies["npz/k/a.npz"])
    time.sleep(0.3)
    b = write(cluster, "gpu-1", "npz/k/b.npz", bodies["npz/k/b.npz"])  # 60 %: push level
    for path in ("k/a.npz", "k/b.npz"):
        wait_for(lambda p=path: holders(cluster, "gpu-1", p) == {"coord", "cpu-1"}, 20,
                 what=f"{path} on coord and cpu-1")

    # 1. cpu-1's copy of a rots (same size, same mtime): the manifest still says verified.
    rotted = cluster.stored("cpu-1", "gpu-1", "npz/k/a.npz")
    rot(rotted)
    rotted_bytes = rotted.read_bytes()
    c = write(cluster, "gpu-1", "npz/k/c.npz", bodies["npz/k/c.npz"])  # ~90 %: cleanup
    wait_for(lambda: "npz/k/b.npz" in deleted(cluster, "gpu-1"), 20, what="b deleted")
    assert a.exists(), "a was deleted on the manifest's word while cpu-1's copy no longer matches"
    assert sorted(deleted(cluster, "gpu-1")["npz/k/b.npz"]) == ["coord", "cpu-1"]
    assert "npz/k/a.npz" not in deleted(cluster, "gpu-1")
    assert not b.exists()
    # the live vouch read the rotted bytes: cpu-1 quarantined its copy on the spot
    (bad,) = [e["payload"] for e in cluster.events("cpu-1", "REPLICA_QUARANTINED")
              if e["payload"]["artifact"] == "npz/k/a.npz"]
    assert bad["expected_sha256"] == sha_of(a) and bad["actual_sha256"] != sha_of(a)
    assert (cluster.data_root("cpu-1") / bad["quarantined_to"]).read_bytes() == rotted_bytes
    # (a push may already have repaired it: a copy under that version's name is intact)
    assert all(f.read_bytes() == bodies["npz/k/a.npz"]
               for f in cluster.copies("cpu-1", "gpu-1", "npz/k/a.npz"))

    # 2. cpu-1 goes down (a + c = 49 %): nothing it would have to vouch for is deleted.
    cluster.stop_node("cpu-1")
    runs_before = len(_cleanups(cluster, "gpu-1"))
    d = write(cluster, "gpu-1", "npz/k/d.npz", bodies["npz/k/d.npz"])  # ~88 %
    wait_for(lambda: len(_cleanups(cluster, "gpu-1")) >= runs_before + 5, 20,
             what="cleanup runs while cpu-1 is down")
    assert set(deleted(cluster, "gpu-1")) == {"npz/k/b.npz"}
    assert a.exists() and c.exists() and d.exists()
    assert all(r["short_of_copies"] >= 1 for r in _cleanups(cluster, "gpu-1")[runs_before:])
    health = cluster.request("gpu-1", "GET", "/health")  # over 75 % and stuck: says so
    assert health.status == 503 and "short of verified copies" in health.json()["details"][
        "sync_push"]["message"]

    # 3. cpu-1 is back: what it lacks reaches it (its quarantined copy of a is repaired by
    # the push), and sources go again, each only on coord's and cpu-1's live vouches, until
    # usage is under 75 %. Every deleted source is intact on both vouching holders.
    cluster.start_node("cpu-1")
    wait_for(lambda: len(deleted(cluster, "gpu-1")) >= 2, 30,
             what="a deletion once cpu-1 vouches again")
    wait_for(lambda: cluster.status("gpu-1")["push"]["percent"] < 75, 30, what="under 75 %")
    for artifact, vouched in deleted(cluster, "gpu-1").items():
        assert sorted(vouched) == ["coord", "cpu-1"], (artifact, vouched)
        assert not (cluster.data_root("gpu-1") / artifact).exists()
        for holder in vouched:
            assert [f for f in cluster.copies(holder, "gpu-1", artifact)
                    if f.read_bytes() == bodies[artifact]], (artifact, holder)


def test_the_coordinator_rehomes_a_deleted_source_whose_copy_was_lost(make_cluster) -> None:
    """After gpu-1 deleted a behind two vouched copies, one copy is lost: the coordinator
    (which learned the deletion and the loss by manifest deltas) pushes its own copy on,
    by itself (every sync cycle), without an operator asking."""
    cluster = make_cluster(gpus=2, cpus=1, quota="64MiB", config={
        "hosts": {"gpu-1": {"disk_quota": "1MiB"}}, "push": {"interval_seconds": 0.3}})
    body = os.urandom(200 * KIB)
    a = write(cluster, "gpu-1", "npz/k/a.npz", body)
    time.sleep(0.3)
    write(cluster, "gpu-1", "npz/k/b.npz", os.urandom(400 * KIB))            # 59 %: push
    wait_for(lambda: len(holders(cluster, "gpu-1", "k/a.npz")) >= 2, 20, what="a twice")
    write(cluster, "gpu-1", "npz/k/c.npz", os.urandom(200 * KIB))            # 78 %: cleanup
    wait_for(lambda: "npz/k/a.npz" in deleted(cluster, "gpu-1"), 20, what="a deleted")
    assert not a.exists()
    other = next(n for n in deleted(cluster, "gpu-1")["npz/k/a.npz"] if n != "coord")
    wait_for(lambda: other in {r["node"] for r in _coord_replicas(cluster, "k/a.npz")}
             and cluster.get_json("coord", "/v1/manifest?since=0")["deletions"], 15,
             what="the coordinator learning the deletion and the other copy by deltas")

    cluster.stored(other, "gpu-1", "npz/k/a.npz").unlink()  # a disk loses the copy
    verified = cluster.request(other, "POST", "/v1/control/verify", body=b"{}")
    assert verified.status == 202
    # the coordinator learns the loss by delta and re-homes its own copy by itself

    def copies() -> set[str]:
        return {n for n in cluster.nodes if n != "gpu-1"
                and any(f.read_bytes() == body
                        for f in cluster.copies(n, "gpu-1", "npz/k/a.npz"))}

    wait_for(lambda: len(copies()) >= 2, 15, what="a second copy again")
    assert "coord" in copies()
    # the run reports once its pushes are done (the copy lands a moment before that)
    done = wait_for(lambda: [e["payload"] for e in cluster.events("coord", "DATA_SYNC_COMPLETED")
                             if e["payload"]["reason"] == "orphan_games_recovery"], 10,
                    what="the re-homing run's DATA_SYNC_COMPLETED")
    assert done[0]["artifacts"] == ["npz/k/a.npz"]

    # a new file under the deleted name is a new version: synced beside the vouched copies
    # of the deleted one, which it never replaces
    holding = copies()
    old = {n: cluster.copies(n, "gpu-1", "npz/k/a.npz") for n in holding}
    newer = os.urandom(100 * KIB)
    write(cluster, "gpu-1", "npz/k/a.npz", newer)
    wait_for(lambda: any(f.read_bytes() == newer for f in cluster.copies("coord", "gpu-1",
                                                                           "npz/k/a.npz")),
             15, what="the new version on the coordinator")
    assert not [e for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
                if e["payload"]["reason"] == "scan"]
    time.sleep(1.0)
    assert copies() >= holding
    for n, files in old.items():
        assert [f for f in files if f.exists() and f.read_bytes() == body], n


def _coord_replicas(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    for art in cluster.get_json("coord", "/v1/artifacts?limit=5000")["artifacts"]:
        if art["path"] == path:
            return art["replicas"]
    return []
