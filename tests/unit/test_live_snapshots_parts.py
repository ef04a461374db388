"""LiveSnapshotter without a Node: real SQLite databases with a live writer in this process,
a real scanner, router, manifest, pause gate and push path (the target scripted)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.daemons.live_snapshots import LIVE_REASON, LiveSnapshotter
from engine.events import EventType
from engine.manifest import ClusterManifest
from engine.transport import TransferError
from tests.unit.test_push_path_parts import NODE, NodeParts, make_database, make_node_parts

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

KEY = "games/k/live.db"
RETRY_KEY = ("live", KEY)


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> NodeParts:
    return make_node_parts(tmp_path, open_manifest(NODE))


@pytest.fixture
def writer(parts: NodeParts) -> Iterator[sqlite3.Connection]:
    """An open writer of games/k/live.db in WAL mode, with committed rows in its -wal."""
    file = parts.data.root / "games" / "k" / "live.db"
    file.parent.mkdir(parents=True)
    db = sqlite3.connect(file)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE games (id INTEGER PRIMARY KEY, moves BLOB)")
    add(db, 10)
    yield db
    db.close()


def add(db: sqlite3.Connection, rows: int) -> None:
    db.executemany("INSERT INTO games (moves) VALUES (?)", [(os.urandom(64),) for _ in range(rows)])
    db.commit()


def make_live(parts: NodeParts, interval: float = 5.0) -> LiveSnapshotter:
    return LiveSnapshotter(NODE, interval, scanner=parts.scanner, router=parts.router,
                           pushes=parts.pushes.path, pause=parts.pause,
                           emit=parts.bus.emit)


def rows_in(data: bytes, tmp_path: Path) -> int:
    copy = tmp_path / f"received-{time.monotonic_ns()}.db"
    copy.write_bytes(data)
    db = sqlite3.connect(copy)
    try:
        return db.execute("SELECT COUNT(*) FROM games").fetchone()[0]
    finally:
        db.close()


def leftovers(parts: NodeParts) -> list[str]:
    folder = parts.data.live_snapshots
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_a_database_with_an_open_writer_is_snapshotted_and_pushed_live(
        parts: NodeParts, writer: sqlite3.Connection, tmp_path: Path) -> None:
    wal = parts.data.root / "games" / "k" / "live.db-wal"
    assert wal.stat().st_size > 0
    live = make_live(parts)
    assert await live.run_once() == 1
    [request] = parts.transport.requests
    assert (request.target, request.live, request.reason, request.artifact.key,
            request.artifact.origin) == ("coord", True, LIVE_REASON, KEY, NODE)
    assert rows_in(parts.transport.sent[0], tmp_path) == 10  # the committed state, from -wal
    assert parts.manifest.receipts() == [], "a live snapshot is never a replica"
    assert parts.manifest.artifacts() == []
    assert leftovers(parts) == [], "the snapshot file goes once pushed"
    [done] = parts.events(EventType.DATA_SYNC_COMPLETED)
    assert (done.target, done.artifacts, done.reason, done.files) == ("coord", [KEY],
                                                                     LIVE_REASON, 1)
    # the same committed state is not pushed again; new rows are
    assert await live.run_once() == 0
    assert len(parts.transport.requests) == 1
    add(writer, 5)
    assert await live.run_once() == 1
    assert rows_in(parts.transport.sent[-1], tmp_path) == 15
    assert live.totals["pushed"] == 2 and live.totals["failed"] == 0
    assert live.health_check().is_healthy


async def test_a_recently_modified_closed_database_is_protected_too(
        parts: NodeParts, tmp_path: Path) -> None:
    make_database(parts.data.root / "games" / "k" / "fresh.db", rows=3, age=None)
    make_database(parts.data.root / "games" / "k" / "old.db", rows=3)  # finished: not live
    assert await make_live(parts).run_once() == 1
    [request] = parts.transport.requests
    assert request.artifact.key == "games/k/fresh.db" and request.live
    assert rows_in(parts.transport.sent[0], tmp_path) == 3
    assert parts.manifest.receipts() == []


async def test_a_failed_snapshot_push_backs_off_under_its_live_key(
        parts: NodeParts, writer: sqlite3.Connection) -> None:
    live = make_live(parts)
    parts.transport.fail["coord"] = TransferError("coord answered 503", target_fault=False)
    assert await live.run_once() == 0
    pushes = parts.pushes.path
    state = pushes.state(RETRY_KEY)
    assert state is not None and state.attempts == 1 and not pushes.ready(RETRY_KEY)
    assert set(pushes.retries) == {RETRY_KEY}
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.artifact, failed.reason) == ("coord", KEY, LIVE_REASON)
    assert failed.retry_in_seconds is not None
    assert leftovers(parts) == []
    assert await live.run_once() == 0  # held back by the backoff: not even tried
    assert len(parts.transport.requests) == 1
    assert live.totals["failed"] == 1
    health = live.health_check()
    assert not health.is_healthy and health.message == "live snapshots failing"
    del parts.transport.fail["coord"]
    state.next_at = 0.0
    assert await live.run_once() == 1
    assert pushes.state(RETRY_KEY) is None


async def test_the_backoff_of_a_database_that_is_finished_now_is_forgotten(
        parts: NodeParts, writer: sqlite3.Connection) -> None:
    live = make_live(parts)
    parts.transport.fail["coord"] = TransferError("down", target_fault=False)
    await live.run_once()
    assert parts.pushes.path.state(RETRY_KEY) is not None
    parts.pushes.path.failed("npz/k/a.npz", "coord", "x", True, "interval", ("other", 1))
    writer.close()  # the last connection checkpoints and removes -wal
    file = parts.data.root / "games" / "k" / "live.db"
    os.utime(file, (time.time() - 60, time.time() - 60))
    assert await live.run_once() == 0
    assert set(parts.pushes.path.retries) == {("other", 1)}, "only live keys gone are dropped"


async def test_nothing_starts_while_paused(parts: NodeParts,
                                           writer: sqlite3.Connection) -> None:
    live = make_live(parts)
    parts.pause.set(True, "operator")
    await live.step()
    assert await live.run_once() == 0  # a round that finds the node paused pushes nothing
    assert parts.transport.requests == [] and live.totals["snapshots"] == 0
    parts.pause.set(False, "operator")
    await live.step()
    assert len(parts.transport.requests) == 1


def test_off_is_healthy(parts: NodeParts) -> None:
    live = make_live(parts, interval=0)
    live.totals["failed"] = 3
    assert live.health_check().message == "live snapshots off" and live.health_check().is_healthy
