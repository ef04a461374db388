"""Write-through for the ``ephemeral`` strategy: a spot host's artifact is safe only once a
durable (non-ephemeral) node holds it verified.

``WriteThroughQueue``: what is not safe yet, in ``<data_root>/.ringsync/write_through.db``
(SQLite WAL, ``synchronous=FULL``: a row survives SIGKILL and power loss once ``enqueue``
returns). ``WriteThrough``, the AutoSyncDaemon's logic around it:

* after each scan every own artifact no durable node holds verified is queued (a changed
  artifact's row is replaced by the new version); queued artifacts are pushed first, oldest
  first, urgent, to the router's targets (the coordinator, else the best durable node);
* SAFE = a durable node other than this one holds a verified replica with the artifact's
  sha256 (a row only a verified receipt writes): then ARTIFACT_SAFE, then the row goes (a crash
  in between repeats the event at the next start: at least once, never early);
* a row whose bytes left this node before it was safe (source deleted or vanished) can never
  be pushed from here: DATA_SYNC_FAILED (``reason: write_through``, no retry), row removed;
* the AutoSyncDaemon pushes the queue at start, before any scan, and on SIGTERM makes a
  final push (``final_candidates``: every file no process holds open counts as finished)
  until the queue is empty or the deadline passes; what is left stays queued.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.events import ArtifactSafe, DataSyncFailed, Event, EventBus, EventType
from engine.manifest import Artifact, ClusterManifest
from engine.openfiles import opened_elsewhere
from engine.scanner import Candidate, Scanner, is_database

log = logging.getLogger(__name__)

QUEUE_FILE = "write_through.db"
"""The queue's file name under ``<data_root>/.ringsync/``."""
FINAL_PUSH_PAUSE_SECONDS = 0.5
"""During a final push, the wait before another round when a round moved nothing."""

_SCHEMA = ("CREATE TABLE IF NOT EXISTS queue (data_type TEXT NOT NULL, path TEXT NOT NULL,"
           " sha256 TEXT NOT NULL, size INTEGER NOT NULL, enqueued_at REAL NOT NULL, attempts"
           " INTEGER NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (data_type, path))")


@dataclass(frozen=True)
class QueueEntry:
    """One artifact version waiting to reach a durable node."""

    data_type: str
    path: str
    sha256: str
    size: int
    enqueued_at: float
    """Unix time it was queued (this version)."""
    attempts: int = 0
    """Failed pushes since it was queued."""
    last_error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.data_type}/{self.path}"


class WriteThroughQueue:
    """The pending pushes of one ephemeral node, durable on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The SQLite file."""
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is fsynced before it returns
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def enqueue(self, data_type: str, path: str, sha256: str, size: int,
                now: float | None = None) -> bool:
        """Queue one artifact version; True when it was added or replaced another version
        of the same artifact. Queuing the version already queued changes nothing."""
        return self.enqueue_many([(data_type, path, sha256, size)], now) == 1

    def enqueue_many(self, items: Iterable[tuple[str, str, str, int]],
                     now: float | None = None) -> int:
        """``enqueue`` for (data_type, path, sha256, size) items in one durable transaction;
        returns how many rows were added or replaced."""
        now = time.time() if now is None else now
        changed = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for data_type, path, sha256, size in items:
                changed += self._db.execute(
                    "INSERT INTO queue(data_type, path, sha256, size, enqueued_at)"
                    " VALUES (?,?,?,?,?) ON CONFLICT(data_type, path) DO UPDATE SET"
                    " sha256=excluded.sha256, size=excluded.size, enqueued_at=excluded.enqueued_at,"
                    " attempts=0, last_error=NULL WHERE queue.sha256 != excluded.sha256",
                    (data_type, path, sha256, size, now)).rowcount
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return changed

    def pending(self) -> list[QueueEntry]:
        """Every queued version, oldest first."""
        rows = self._db.execute("SELECT data_type, path, sha256, size, enqueued_at, attempts,"
                                " last_error FROM queue ORDER BY enqueued_at, data_type, path")
        return [QueueEntry(*row) for row in rows]

    def remove(self, data_type: str, path: str, sha256: str) -> bool:
        """Delete the row of this version (safe, superseded or lost); False when not queued."""
        return self._db.execute("DELETE FROM queue WHERE data_type=? AND path=? AND sha256=?",
                                (data_type, path, sha256)).rowcount == 1

    mark_safe = remove
    """A durable node holds this version: its row goes."""

    def record_failure(self, data_type: str, path: str, error: str) -> bool:
        """Count a failed push of a queued artifact; False when it is not queued."""
        return self._db.execute("UPDATE queue SET attempts=attempts+1, last_error=?"
                                " WHERE data_type=? AND path=?",
                                (error, data_type, path)).rowcount == 1

    def oldest(self) -> float | None:
        """``enqueued_at`` of the oldest row (None when empty)."""
        return self._db.execute("SELECT MIN(enqueued_at) FROM queue").fetchone()[0]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])


def final_candidates(scanner: Scanner,
                     known: dict[tuple[str, str], tuple[int | None, int | None] | None]
                     ) -> list[Candidate]:
    """The scanner's candidates when the node is about to go: every rule but the idle time,
    plus no process holding the file open (a database with -wal/-journal content still is
    not finished). Blocking: for a worker thread."""
    found = []
    for cand in scanner.candidates(known, now=math.inf):
        try:
            if not opened_elsewhere(cand.file):
                found.append(cand)
        except OSError:  # vanished meanwhile
            continue
    return found


class WriteThrough:
    """The ephemeral strategy's queue and safety check (the AutoSyncDaemon pushes)."""

    def __init__(self, node: str, strategy: str, queue: WriteThroughQueue,
                 durable: frozenset[str], *, manifest: ClusterManifest, scanner: Scanner,
                 events: EventBus) -> None:
        self.node = node
        self.strategy = strategy
        self.queue = queue
        """What is not safe yet."""
        self.durable = durable
        """Nodes whose verified copy makes an artifact safe."""
        self.manifest = manifest
        self.scanner = scanner
        self._emit = events.emit
        self.safe_total = 0
        """ARTIFACT_SAFE events since start."""
        self.abandoned_total = 0
        """Rows removed since start because their bytes were gone before they were safe."""
        self._closed = False
        events.listen(self._on_failed, EventType.DATA_SYNC_FAILED)

    def close(self) -> None:
        self._closed = True
        self.queue.close()

    # -- queue upkeep -----------------------------------------------------------------------
    def enqueue_unsafe(self) -> int:
        """Queue every own artifact no durable node holds verified whose bytes are here (a row
        whose bytes left is reported once by ``settle``, never queued again); returns rows
        added or replaced."""
        manifest, me = self.manifest, self.node
        holders = manifest.verified_holders_by_artifact(me)
        gone = manifest.deleted_sources(me)
        queued = {(e.data_type, e.path): e.sha256 for e in self.queue.pending()}
        items = [(a.data_type, a.path, a.sha256, a.size) for a in manifest.artifacts(origin=me)
                 if (a.ident not in gone or self.scanner.source_back(a))
                 and not holders.get(a.ident, set()) & self.durable
                 and queued.get((a.data_type, a.path)) != a.sha256
                 and self._bytes_here(a.data_type, a.path, a)]
        return self.queue.enqueue_many(items) if items else 0

    def order(self, work: list[tuple[Artifact, str]]) -> list[tuple[Artifact, str]]:
        """``work`` (the cycle's pushes, to the router's urgent targets) with queued artifacts
        first, oldest queued first; the rest keep their order."""
        rank = {(e.data_type, e.path): i for i, e in enumerate(self.queue.pending())}
        return sorted(work, key=lambda item: rank.get((item[0].data_type, item[0].path),
                                                      len(rank)))

    def settle(self) -> None:
        """ARTIFACT_SAFE for every queued version a durable node holds verified (then off the
        queue); report and drop rows whose bytes are gone from here."""
        manifest, me = self.manifest, self.node
        gone = manifest.deleted_sources(me)
        for entry in self.queue.pending():
            art = manifest.get_artifact(entry.data_type, entry.path, me)
            if art is not None and art.sha256 != entry.sha256:  # rewritten by its writer
                if manifest.verified_holders(art) & self.durable:  # and the new version is safe
                    self.queue.remove(entry.data_type, entry.path, entry.sha256)
                continue  # else the next enqueue replaces the row with the new version
            durable_on = sorted(manifest.verified_holders(art) & self.durable) if art else []
            if durable_on:
                self._emit(ArtifactSafe(
                    node=me, artifact=entry.key, sha256=entry.sha256, bytes=entry.size,
                    durable_on=durable_on,
                    queued_seconds=round(time.time() - entry.enqueued_at, 3)))
                self.queue.mark_safe(entry.data_type, entry.path, entry.sha256)
                self.safe_total += 1
            elif (me, entry.data_type, entry.path, entry.sha256) in gone or \
                    not self._bytes_here(entry.data_type, entry.path, art):
                self._abandon(entry, art)

    def _bytes_here(self, data_type: str, path: str, art: Artifact | None) -> bool:
        """Can this node still push it? (A changed source is re-registered by the scanner.)"""
        snapshot = self.scanner.snapshot_path(data_type, path)
        return self.scanner.data.source_path(data_type, path).exists() or \
            (is_database(path) and art is not None and snapshot.exists())

    def _abandon(self, entry: QueueEntry, art: Artifact | None) -> None:
        me = self.node
        copies = sorted(self.manifest.verified_holders(art) - {me}) if art else []
        error = (f"its bytes left {me} before a durable node held them verified (verified"
                 f" copies elsewhere: {', '.join(copies) or 'none'}); off the write-through queue")
        self.queue.remove(entry.data_type, entry.path, entry.sha256)
        self.abandoned_total += 1
        log.error("write-through: %s %s", entry.key, error)
        self._emit(DataSyncFailed(
            source=me, target=me, artifact=entry.key, error=error, attempt=entry.attempts,
            retry_in_seconds=None, reason="write_through", strategy=self.strategy))

    def _on_failed(self, event: Event) -> None:
        """Count a failed push of a queued artifact in its row (attempts, last error)."""
        payload = event.payload
        if self._closed or getattr(payload, "source", None) != self.node or \
                getattr(payload, "reason", None) in ("scan", "write_through"):
            return
        data_type, _, path = str(getattr(payload, "artifact", "")).partition("/")
        self.queue.record_failure(data_type, path, str(getattr(payload, "error", "")))

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        oldest = self.queue.oldest()
        age = None if oldest is None else round(max(0.0, time.time() - oldest), 1)
        return {"queued": len(self.queue), "safe_total": self.safe_total,
                "abandoned_total": self.abandoned_total, "oldest_queued_seconds": age}
