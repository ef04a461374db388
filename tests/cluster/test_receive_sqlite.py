"""The receiver checks a database before it counts (issue 4): a copy with the declared hash
that SQLite finds unsound is quarantined, never published nor registered, and answered 422;
the sender reports that and backs off."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.objects import put, sha

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

INTEGRITY_LIMIT = 120_000
"""transfer.integrity_check_max_bytes here: smaller databases get integrity_check, larger
ones quick_check."""
PAGE = 4096


@pytest.fixture(scope="module")
def two(make_module_cluster) -> Cluster:
    return make_module_cluster(gpus=1, config={
        "transfer": {"integrity_check_max_bytes": INTEGRITY_LIMIT}})


# -- databases, sound and not ------------------------------------------------------------------

def make_db(path: Path, rows: int = 300, pad_kib: int = 0) -> bytes:
    """A sound database: games(name indexed) and, to make it bigger, a table of blobs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA page_size={PAGE}")
        conn.execute("CREATE TABLE games(id INTEGER PRIMARY KEY, name TEXT, moves TEXT)")
        conn.execute("CREATE INDEX games_name ON games(name)")
        conn.executemany("INSERT INTO games(name, moves) VALUES (?, ?)",
                         [(f"k{i:05d}" + "x" * 20, "e2e4 " * 20) for i in range(rows)])
        if pad_kib:
            conn.execute("CREATE TABLE pad(b BLOB)")
            conn.executemany("INSERT INTO pad VALUES (?)", [(os.urandom(1024),)] * pad_kib)
        conn.commit()
    finally:
        conn.close()
    return path.read_bytes()


def pages_of_type(data: bytes, kind: int) -> list[int]:
    """Indexes of the pages whose b-tree page type byte is ``kind`` (page 1 has a header)."""
    return [n for n in range(1, len(data) // PAGE) if data[n * PAGE] == kind]


def with_broken_btree_page(db: bytes) -> bytes:
    """Overwrite the cell pointer array in the middle of a table leaf page."""
    data = bytearray(db)
    leaves = pages_of_type(db, 0x0D)
    start = leaves[len(leaves) // 2] * PAGE + 8
    data[start:start + 64] = b"\xff" * 64
    return bytes(data)


def with_index_out_of_step(db: bytes) -> bytes:
    """Change one key in an index leaf page (still in order): every page is well formed, so
    quick_check passes, but the index no longer matches the table (integrity_check fails)."""
    data = bytearray(db)
    needle = b"k00050" + b"x" * 20
    at = next(i for n in pages_of_type(db, 0x0A)
              for i in [db.find(needle, n * PAGE, (n + 1) * PAGE)] if i >= 0)
    data[at + len(needle) - 1] = ord("y")
    return bytes(data)


def check(data: bytes, tmp: Path, pragma: str) -> str:
    tmp.write_bytes(data)
    conn = sqlite3.connect(f"file:{tmp}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute(f"PRAGMA {pragma}").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


# -- what the receiver shows -------------------------------------------------------------------

def coord_state(cluster: Cluster, rel: str) -> dict:
    manifest = cluster.get_json("coord", "/v1/manifest?since=0")
    listed = cluster.get_json("coord", "/v1/artifacts?limit=5000")["artifacts"]
    return {
        "replicas": [r for r in manifest["replicas"] if r["path"] == rel],
        "artifacts": [a for a in manifest["artifacts"] if a["path"] == rel],
        "receipts": [r for r in manifest["receipts"] if r["path"] == rel],
        "listed": [a for a in listed if a["path"] == rel],
    }


def events_for(cluster: Cluster, node: str, type_: str, artifact: str) -> list[dict]:
    return [e for e in cluster.events(node, type_) if e["payload"].get("artifact") == artifact]


def assert_quarantined(cluster: Cluster, rel: str, body: bytes, check_name: str) -> None:
    root = cluster.data_root("coord")
    assert not (root / "games" / rel).exists(), "an unsound database was published"
    assert not cluster.copies("coord", "gpu-1", f"games/{rel}"), "an unsound database was published"
    assert coord_state(cluster, rel) == {"replicas": [], "artifacts": [], "receipts": [],
                                         "listed": []}
    quarantined = root / ".ringsync" / "quarantine" / "games" / "gpu-1" / rel
    assert quarantined.read_bytes() == body
    (event,) = events_for(cluster, "coord", "REPLICA_QUARANTINED", f"games/{rel}")
    assert event["payload"] == {"node": "coord", "artifact": f"games/{rel}",
                                "expected_sha256": sha(body), "actual_sha256": sha(body),
                                "quarantined_to": f".ringsync/quarantine/games/gpu-1/{rel}"}
    (failed,) = events_for(cluster, "coord", "DATA_SYNC_FAILED", f"games/{rel}")
    assert f"PRAGMA {check_name} failed" in failed["payload"]["error"]
    incoming = root / ".ringsync" / "incoming"
    assert not [p for p in incoming.iterdir() if not p.name.endswith(".part")], \
        "the check left -wal/-shm files behind"
    assert not [p for p in incoming.iterdir() if sha(body)[:16] in p.name]


@pytest.mark.parametrize("corruption", ["btree_page", "sqlite_header_then_noise"])
def test_a_corrupt_database_with_the_right_hash_is_quarantined(two: Cluster, tmp_path: Path,
                                                               corruption: str) -> None:
    if corruption == "btree_page":
        body = with_broken_btree_page(make_db(tmp_path / "src.db"))
        assert check(body, tmp_path / "probe.db", "integrity_check") != "ok"
    else:
        body = b"SQLite format 3\x00" + os.urandom(20_000)
    rel = f"hex8_2p/{corruption}.db"
    resp = put(two, "coord", "games", rel, body, source="gpu-1")
    assert resp.status == 422, resp.body
    error = resp.json()["error"]
    assert "PRAGMA integrity_check failed" in error, error
    if corruption == "sqlite_header_then_noise":
        assert "file is not a database" in error
    assert resp.json()["quarantined_to"] == f".ringsync/quarantine/games/gpu-1/{rel}"
    assert_quarantined(two, rel, body, "integrity_check")


def test_a_sound_database_is_stored_and_counted(two: Cluster, tmp_path: Path) -> None:
    body = make_db(tmp_path / "good.db")
    resp = put(two, "coord", "games", "hex8_2p/good.db", body, source="gpu-1")
    assert resp.status == 201, resp.body
    assert two.stored("coord", "gpu-1", "games/hex8_2p/good.db").read_bytes() == body
    state = coord_state(two, "hex8_2p/good.db")
    assert [(r["node"], r["sha256"]) for r in state["replicas"]] == [("coord", sha(body))]
    assert not (two.data_root("coord") / ".ringsync/quarantine/games/gpu-1/hex8_2p/good.db").exists()


def test_integrity_check_up_to_the_limit_quick_check_above(two: Cluster, tmp_path: Path) -> None:
    """The index-out-of-step corruption is one only integrity_check sees: refused below
    transfer.integrity_check_max_bytes, where integrity_check runs; above it the configured
    quick_check runs, which passes it."""
    small = with_index_out_of_step(make_db(tmp_path / "small.db"))
    large = with_index_out_of_step(make_db(tmp_path / "large.db", pad_kib=200))
    assert len(small) <= INTEGRITY_LIMIT < len(large)
    for body in (small, large):
        assert check(body, tmp_path / "probe.db", "quick_check") == "ok"
        assert check(body, tmp_path / "probe.db", "integrity_check").startswith("row 51 missing")
    resp = put(two, "coord", "games", "sq8_2p/small.db", small, source="gpu-1")
    assert resp.status == 422, resp.body
    assert "PRAGMA integrity_check failed: row 51 missing from index games_name" \
        in resp.json()["error"]
    assert_quarantined(two, "sq8_2p/small.db", small, "integrity_check")
    assert put(two, "coord", "games", "sq8_2p/large.db", large, source="gpu-1").status == 201


def test_the_sender_reports_a_refused_database_and_backs_off(two: Cluster, tmp_path: Path) -> None:
    """A finished database whose snapshot passes the sender's quick_check but not the
    receiver's integrity_check: every attempt is a DATA_SYNC_FAILED with a retry delay, the
    next attempt waits that long, and the receiver keeps one quarantined copy of the bytes."""
    rel = "hex8_3p/refused.db"
    source = two.data_root("gpu-1") / "games" / rel
    body = with_index_out_of_step(make_db(tmp_path / "refused.db"))
    source.parent.mkdir(parents=True, exist_ok=True)
    hidden = source.with_name("." + source.name)
    hidden.write_bytes(body)
    hidden.rename(source)
    failures = wait_for(lambda: (f := events_for(two, "gpu-1", "DATA_SYNC_FAILED",
                                                 f"games/{rel}")) and len(f) >= 4 and f,
                        30, what="four refused attempts")
    payloads = [e["payload"] for e in failures]
    assert [p["attempt"] for p in payloads[:4]] == [1, 2, 3, 4]
    for p in payloads:
        assert "answered 422" in p["error"] and "PRAGMA integrity_check failed" in p["error"]
        assert p["retry_in_seconds"] is not None and p["retry_in_seconds"] > 0
    for before, after in zip(failures, failures[1:]):
        assert after["ts"] - before["ts"] >= before["payload"]["retry_in_seconds"] - 0.02, \
            "a refused push was retried before its backoff ran out"
    root = two.data_root("coord")
    assert not (root / "games" / rel).exists()
    assert not two.copies("coord", "gpu-1", f"games/{rel}")
    assert coord_state(two, rel)["replicas"] == []
    quarantined = sorted((root / ".ringsync" / "quarantine" / "games" / "gpu-1" / "hex8_3p").iterdir())
    assert [p.name for p in quarantined] == ["refused.db"]  # the same bytes are kept once
    assert len(events_for(two, "coord", "REPLICA_QUARANTINED", f"games/{rel}")) >= 4
    sender = two.get_json("gpu-1", "/v1/manifest?since=0")
    assert not [r for r in sender["replicas"] if r["path"] == rel and r["node"] == "coord"]
    assert source.read_bytes() == body


# -- live snapshots --------------------------------------------------------------------------

def put_live(cluster: Cluster, rel: str, body: bytes, origin: str = "gpu-1",
             live: bool = True) -> tuple[int, dict]:
    headers = {"X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha(body),
               "X-Ringsync-Source": origin, "X-Ringsync-Origin": origin,
               "X-Ringsync-Reason": "live_snapshot" if live else "push",
               "Content-Type": "application/octet-stream"}
    if live:
        headers["X-Ringsync-Live"] = "1"
    resp = cluster.request("coord", "PUT", f"/v1/objects/games/{rel}", body=body, headers=headers)
    return resp.status, resp.json()


def test_a_live_snapshot_is_kept_apart_replaced_and_dropped_when_the_artifact_arrives(
        two: Cluster, tmp_path: Path) -> None:
    rel = "hex8_4p/writing.db"
    root = two.data_root("coord")
    live = root / ".ringsync" / "live" / "gpu-1" / "games" / rel
    first = make_db(tmp_path / "first.db", rows=10)
    second = make_db(tmp_path / "second.db", rows=20)

    status, answer = put_live(two, rel, first)
    assert (status, answer["live"], answer["sha256"]) == (201, True, sha(first))
    assert live.read_bytes() == first
    assert not (root / "games" / rel).exists() and not two.copies("coord", "gpu-1", f"games/{rel}")
    assert coord_state(two, rel) == {"replicas": [], "artifacts": [], "receipts": [], "listed": []}
    head = two.request("coord", "HEAD", f"/v1/objects/games/{rel}",
                       headers={"X-Ringsync-Live": "1", "X-Ringsync-Origin": "gpu-1",
                                "X-Ringsync-Sha256": sha(second)})
    assert head.status == 404 and head.headers["x-ringsync-offset"] == "0"

    assert put_live(two, rel, second)[0] == 201  # the newer snapshot replaces the older
    assert live.read_bytes() == second
    broken = with_broken_btree_page(make_db(tmp_path / "broken.db"))
    status, answer = put_live(two, rel, broken)  # an unsound one never replaces a sound one
    assert status == 422 and "PRAGMA integrity_check failed" in answer["error"]
    assert live.read_bytes() == second
    assert put_live(two, rel, second, origin="nobody")[0] == 400  # not a node of this cluster
    completed = [e for e in two.events("coord", "DATA_SYNC_COMPLETED")
                 if e["payload"]["artifacts"] == [f"games/{rel}"]]
    assert [e["payload"]["reason"] for e in completed] == ["live_snapshot"] * 2

    status, answer = put_live(two, rel, second, live=False)  # the finished artifact arrives
    assert (status, answer["live"]) == (201, False)
    assert two.stored("coord", "gpu-1", f"games/{rel}").read_bytes() == second
    assert not live.exists()
    assert [r["node"] for r in coord_state(two, rel)["replicas"]] == ["coord"]
