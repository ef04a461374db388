"""Live snapshots of databases still being written, under a real concurrent SQLite writer.

A separate writer process (plain Python + sqlite3, not ringsync) keeps committing small
transactions to two databases on a GPU node, one in WAL mode and one with a rollback
journal, so neither is ever finished. With ``push.live_snapshot_seconds`` tiny, the node
keeps pushing consistent snapshots to the coordinator, which keeps the newest one per
(origin, path) under ``.ringsync/live/``. The test copies out every version it sees there
and runs ``PRAGMA integrity_check`` on it; at the end the source must hold exactly what the
writer committed, in the journal mode the writer set (ringsync never wrote to it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

WANT_SNAPSHOTS = 40
"""Distinct live snapshots of the WAL database the test must see and check."""
WANT_JOURNAL_SNAPSHOTS = 10
DATABASES = {"live.db": "wal", "journal.db": "delete"}

WRITER = r"""
import json, os, random, sqlite3, sys, time
ready, stop, result, *specs = sys.argv[1:]
dbs = []
for spec in specs:
    path, mode = spec.split("=")
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    assert conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
    conn.execute("CREATE TABLE IF NOT EXISTS games(id INTEGER PRIMARY KEY, tx INTEGER, moves BLOB)")
    dbs.append({"path": path, "conn": conn, "committed": 0, "failed": 0})
open(ready, "w").close()
tx = 0
while not os.path.exists(stop):
    for db in dbs:
        conn, n = db["conn"], random.randint(1, 4)
        tx += 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO games(tx, moves) VALUES (?, ?)",
                             [(tx, os.urandom(random.randint(50, 400))) for _ in range(n)])
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            db["failed"] += 1
            continue
        db["committed"] += n
    time.sleep(0.002)
out = {}
for db in dbs:
    mode = db["conn"].execute("PRAGMA journal_mode").fetchone()[0]
    out[os.path.basename(db["path"])] = {"committed": db["committed"], "failed": db["failed"],
                                         "journal_mode": mode}
    db["conn"].close()
with open(result, "w") as fh:
    json.dump(out, fh)
"""


def integrity(path: Path) -> tuple[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'games'").fetchall():
            return verdict, 0  # taken before the writer created its table: still consistent
        return verdict, conn.execute("SELECT COUNT(*) FROM games").fetchone()[0]
    finally:
        conn.close()


def live_events(cluster: Cluster) -> list[dict]:
    return [e for e in cluster.events("gpu-1", "DATA_SYNC_COMPLETED")
            if e["payload"]["reason"] == "live_snapshot"]


class Collector:
    """Copies out every new version of the coordinator's live snapshots and checks each."""

    def __init__(self, live_dir: Path, out: Path) -> None:
        self.live_dir, self.out = live_dir, out
        out.mkdir()
        self.seen: dict[str, tuple[int, int, int]] = {}
        self.rows: dict[str, list[int]] = {name: [] for name in DATABASES}
        self.bad: list[tuple[str, str]] = []

    def poll(self) -> None:
        for name in DATABASES:
            try:
                fh = open(self.live_dir / name, "rb")
            except FileNotFoundError:
                continue
            with fh:  # an open file keeps its inode: a replace meanwhile does not mix versions
                st = os.fstat(fh.fileno())
                version = (st.st_ino, st.st_mtime_ns, st.st_size)
                if self.seen.get(name) == version:
                    continue
                data = fh.read()
            self.seen[name] = version
            copy = self.out / f"{name}.{len(self.rows[name])}"
            copy.write_bytes(data)
            verdict, rows = integrity(copy)
            if verdict != "ok":
                self.bad.append((copy.name, verdict))
            self.rows[name].append(rows)
            copy.unlink()

    def checked(self, name: str) -> int:
        return len(self.rows[name])


def test_live_databases_are_snapshotted_consistently_and_never_touched(
        make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(gpus=1, finished_after=3600.0,
                           config={"push": {"live_snapshot_seconds": 0.05}})
    games = cluster.data_root("gpu-1") / "games" / "hex8_2p"
    games.mkdir(parents=True)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    ready, stop, result = tmp_path / "ready", tmp_path / "stop", tmp_path / "result.json"
    writer = subprocess.Popen([sys.executable, str(script), str(ready), str(stop), str(result),
                               *(f"{games / name}={mode}" for name, mode in DATABASES.items())])
    own = cluster.data_root("gpu-1") / ".ringsync" / "snapshots" / "live"
    collector = Collector(cluster.data_root("coord") / ".ringsync" / "live" / "gpu-1" / "games"
                          / "hex8_2p", tmp_path / "copies")
    try:
        wait_for(ready.exists, 15, what="the writer to start")
        deadline = time.monotonic() + 45
        next_events = 0.0
        events = 0
        while (collector.checked("live.db") < WANT_SNAPSHOTS
               or collector.checked("journal.db") < WANT_JOURNAL_SNAPSHOTS
               or events < WANT_SNAPSHOTS):
            assert time.monotonic() < deadline, (
                f"saw {collector.checked('live.db')}/{collector.checked('journal.db')} snapshots,"
                f" {events} live pushes\n{cluster.log('gpu-1')}")
            assert writer.poll() is None, "the writer died"
            collector.poll()
            if time.monotonic() > next_events:
                events = len(live_events(cluster))
                next_events = time.monotonic() + 0.5
            time.sleep(0.003)

        # Paused: no live snapshot is pushed (one already under way may still land; the
        # sender's snapshot file exists from before a push starts until it has ended).
        assert cluster.request("gpu-1", "POST", "/v1/control/pause",
                               body=b'{"by": "test"}').json()["paused"] is True
        wait_for(lambda: not list(own.iterdir()), 10, interval=0.01, what="no push under way")
        during = len(live_events(cluster))
        time.sleep(1.0)
        assert len(live_events(cluster)) == during, "a live snapshot was pushed while paused"
        cluster.request("gpu-1", "POST", "/v1/control/resume", body=b"{}")
    finally:
        stop.touch()
        writer.wait(20)
    assert writer.returncode == 0
    written = json.loads(result.read_text())

    # The final committed state reaches the coordinator too: at most one interval is at risk.
    def caught_up() -> bool:
        collector.poll()
        return all(collector.rows[n] and collector.rows[n][-1] == written[n]["committed"]
                   for n in DATABASES)

    wait_for(caught_up, 15, interval=0.02, what="the last committed state on the coordinator")
    # Unchanged now: no more pushes (but one per database whose closing writer's checkpoint
    # changed the bytes, not the rows, after the copy the test saw), where 30 rounds run.
    settled = len(live_events(cluster))
    time.sleep(1.5)
    assert len(live_events(cluster)) - settled <= len(DATABASES), \
        "an unchanged database was pushed again"

    assert collector.bad == [], f"inconsistent live snapshots: {collector.bad[:3]}"
    assert collector.checked("live.db") >= WANT_SNAPSHOTS
    for name in DATABASES:  # a snapshot is a committed state: it never goes back
        rows = collector.rows[name]
        assert rows == sorted(rows), f"{name}: row counts went back: {rows}"

    # The sources: exactly what the writer committed, in the journal mode it set.
    for name, mode in DATABASES.items():
        source = games / name
        assert written[name]["journal_mode"] == mode
        assert source.read_bytes()[18:20] == (b"\x02\x02" if mode == "wal" else b"\x01\x01")
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            assert conn.execute("SELECT COUNT(*) FROM games").fetchone()[0] \
                == written[name]["committed"]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == mode
        finally:
            conn.close()

    # Paused, the sender starts no push, and keeps a live snapshot only while it pushes it.
    cluster.request("gpu-1", "POST", "/v1/control/pause", body=b'{"by": "test"}')
    wait_for(lambda: not list(own.iterdir()), 10, what="the sender's live snapshots to go")

    # Live snapshots are kept apart: never published, never a replica, never refused.
    coord = cluster.data_root("coord")
    manifest = cluster.get_json("coord", "/v1/manifest?since=0")
    for name in DATABASES:
        assert not cluster.copies("coord", "gpu-1", f"games/hex8_2p/{name}")
        assert not [r for r in manifest["replicas"] if r["path"] == f"hex8_2p/{name}"]
        assert not [a for a in manifest["artifacts"] if a["path"] == f"hex8_2p/{name}"]
    assert cluster.events("coord", "REPLICA_QUARANTINED") == []
    assert [e["payload"]["error"] for e in cluster.events("coord", "DATA_SYNC_FAILED")] == []
    assert [e["payload"]["error"] for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
            if e["payload"]["reason"] == "live_snapshot"] == []
    received = [e for e in cluster.events("coord", "DATA_SYNC_COMPLETED")
                if e["payload"]["reason"] == "live_snapshot"]
    assert len(received) == len(live_events(cluster)) >= WANT_SNAPSHOTS
    assert not list((coord / ".ringsync" / "incoming").iterdir())
