"""engine.daemons.write_through: the durable queue on a real SQLite file, and what a final
push counts as finished (real files, a real open descriptor, a real killed process)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.daemons.write_through import WriteThroughQueue, final_candidates
from engine.paths import DataRoot
from engine.scanner import Scanner

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.fixture
def queue(tmp_path: Path):
    q = WriteThroughQueue(tmp_path / "write_through.db")
    yield q
    q.close()


def test_enqueue_is_idempotent_per_version(queue: WriteThroughQueue) -> None:
    assert queue.enqueue("npz", "k/a.npz", SHA_A, 10, now=100.0) is True
    assert queue.enqueue("npz", "k/a.npz", SHA_A, 10, now=200.0) is False
    [entry] = queue.pending()
    assert (entry.key, entry.sha256, entry.size, entry.enqueued_at) == ("npz/k/a.npz", SHA_A,
                                                                         10, 100.0)
    assert len(queue) == 1


def test_a_new_version_replaces_the_queued_one(queue: WriteThroughQueue) -> None:
    queue.enqueue("npz", "k/a.npz", SHA_A, 10, now=100.0)
    assert queue.record_failure("npz", "k/a.npz", "connection refused")
    assert queue.enqueue("npz", "k/a.npz", SHA_B, 12, now=150.0) is True
    [entry] = queue.pending()
    assert (entry.sha256, entry.size, entry.enqueued_at, entry.attempts, entry.last_error) == \
        (SHA_B, 12, 150.0, 0, None)
    assert queue.mark_safe("npz", "k/a.npz", SHA_A) is False, "an old version removed the new"
    assert queue.mark_safe("npz", "k/a.npz", SHA_B) is True
    assert len(queue) == 0 and queue.oldest() is None


def test_pending_is_oldest_first_and_failures_are_counted(queue: WriteThroughQueue) -> None:
    assert queue.enqueue_many([("npz", "k/c.npz", SHA_A, 1), ("games", "k/b.db", SHA_B, 2)],
                              now=300.0) == 2
    queue.enqueue("models", "m.pth", SHA_A, 3, now=100.0)
    assert [e.key for e in queue.pending()] == ["models/m.pth", "games/k/b.db", "npz/k/c.npz"]
    assert queue.oldest() == 100.0
    queue.record_failure("models", "m.pth", "first")
    queue.record_failure("models", "m.pth", "second")
    assert (queue.pending()[0].attempts, queue.pending()[0].last_error) == (2, "second")
    assert queue.record_failure("npz", "not/queued.npz", "x") is False


def test_the_queue_survives_reopening_and_is_fsynced(tmp_path: Path) -> None:
    path = tmp_path / "write_through.db"
    first = WriteThroughQueue(path)
    first.enqueue("npz", "k/a.npz", SHA_A, 10, now=100.0)
    assert first._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    first.close()
    again = WriteThroughQueue(path)
    try:
        assert [(e.key, e.sha256, e.enqueued_at) for e in again.pending()] == \
            [("npz/k/a.npz", SHA_A, 100.0)]
    finally:
        again.close()


def test_a_row_survives_sigkill_right_after_enqueue_returns(tmp_path: Path) -> None:
    path = tmp_path / "write_through.db"
    script = textwrap.dedent(f"""
        import sys, time
        from engine.daemons.write_through import WriteThroughQueue
        q = WriteThroughQueue(__import__("pathlib").Path({str(path)!r}))
        for i in range(5):
            q.enqueue("npz", f"k/{{i}}.npz", {SHA_A!r}, i)
        print("enqueued", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"enqueued"
        proc.send_signal(signal.SIGKILL)  # no close, no checkpoint: the WAL as it was
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reopened = WriteThroughQueue(path)
    try:
        assert [e.key for e in reopened.pending()] == [f"npz/k/{i}.npz" for i in range(5)]
    finally:
        reopened.close()


def test_a_final_push_takes_closed_files_at_once_but_not_open_ones(tmp_path: Path) -> None:
    data = DataRoot(tmp_path / "root")
    data.create()
    scanner = Scanner(data, "gpu-1", [], finished_after=3600.0)  # nothing is "idle" yet
    (data.root / "npz" / "k").mkdir(parents=True)
    closed = data.root / "npz" / "k" / "closed.npz"
    closed.write_bytes(b"done")
    held = data.root / "npz" / "k" / "held.npz"
    held.write_bytes(b"still being written")
    db = data.root / "games" / "k" / "live.db"
    db.parent.mkdir(parents=True)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE games(id INTEGER)")
    writer.execute("INSERT INTO games VALUES (1)")
    writer.commit()  # committed into the -wal: a writer is still at it
    assert scanner.candidates({}) == []
    with open(held, "ab"):
        found = {c.path for c in final_candidates(scanner, {})}
    writer.close()
    assert found == {"k/closed.npz"}
    assert {c.path for c in final_candidates(scanner, {})} == {"k/closed.npz", "k/held.npz",
                                                               "k/live.db"}
