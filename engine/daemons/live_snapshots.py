"""LiveSnapshotter: databases still being written are protected before they are finished.

Every ``push.live_snapshot_seconds`` (0, the default: off) it takes each of this node's own
databases under ``games/`` that the scanner does not count as finished yet (recently
modified, or with -wal/-journal content; hidden and excluded files skipped as the scanner
skips them) and

1. makes a consistent snapshot into ``.ringsync/snapshots/live/`` with SQLite's online
   backup API in one step (``engine.scanner.live_snapshot_database``: read-only source,
   bounded wait for the writer's locks, nothing ever written to the source), checked with
   ``PRAGMA quick_check``;
2. hashes it and, unless that exact snapshot already reached the target, pushes it to the
   router's targets (the coordinator) with ``PushRequest(live=True)``. The target keeps it
   under ``.ringsync/live/<origin>/``, replacing the previous one; it is never a replica,
   never counts as a copy and never makes a source deletable.

Each pushed snapshot is a DATA_SYNC_COMPLETED with reason ``live_snapshot``; each failure a
DATA_SYNC_FAILED with that reason, retried after a backoff. Pushes go through the node's
one push path (slot, breaker, transfer tracking, backpressure; no receipt: a live snapshot
is never a replica). Nothing starts while the node is paused. The snapshot file is removed
once pushed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from collections.abc import Callable

from engine.events import DataSyncCompleted, Payload
from engine.hashing import sha256_file
from engine.health import HealthCheckResult
from engine.manifest import Artifact
from engine.pause import PauseGate
from engine.push_path import PushPath
from engine.router import SyncRouter
from engine.scanner import Scanner, live_snapshot_database

log = logging.getLogger(__name__)

LIVE_REASON = "live_snapshot"
STABLE_AFTER = 1.0
"""A file whose mtimes are this much older than when they were read cannot change without
a new mtime (file timestamps are coarse, but not this coarse)."""

Signature = tuple[tuple[int, int] | None, ...]


class LiveSnapshotter:
    """Snapshots and pushes this node's unfinished databases; one task per node."""

    def __init__(self, node: str, interval: float, *, scanner: Scanner, router: SyncRouter,
                 pushes: PushPath, pause: PauseGate,
                 emit: Callable[[Payload], object]) -> None:
        self.node = node
        self.interval = interval
        """Seconds between rounds; 0 disables live snapshots."""
        self.scanner = scanner
        self.router = router
        self.pushes = pushes
        self.pause = pause
        self._emit = emit
        self._sent: dict[tuple[str, str], str] = {}
        """(artifact key, target) -> SHA-256 of the last live snapshot it verified."""
        self._unchanged: dict[str, tuple[Signature, tuple[str, ...]]] = {}
        """artifact key -> (stat signature, targets) of a source whose last snapshot every
        one of those targets has."""

        self.totals = {"snapshots": 0, "pushed": 0, "unchanged": 0, "failed": 0}

    async def step(self) -> None:
        """One round unless the node is paused (the supervised ``live_snapshots`` service's
        step, every ``interval`` when it is not 0)."""
        if not self.pause.paused:
            await self.run_once()

    async def run_once(self) -> int:
        """One round over the unfinished databases; returns how many snapshots were pushed."""
        found = await asyncio.to_thread(self.scanner.live_databases)
        pushed, current = 0, set()
        for rel, file in found:
            key = f"games/{rel}"
            config_key = rel.split("/")[0] if "/" in rel else None
            targets = self.router.get_sync_targets("games", config_key, rel)
            if not targets:  # every database found is own: copies live under @<origin>/
                continue
            current.add(key)
            if not self.pause.paused and self.pushes.ready(_retry_key(key)):
                pushed += await self._protect(rel, file, config_key, targets)
        self.pushes.forget(lambda k: not (isinstance(k, tuple) and k[:1] == ("live",)
                                          and k[1] not in current))  # finished or gone
        for stale in [k for k in self._unchanged if k not in current]:
            del self._unchanged[stale]
        for pair in [p for p in self._sent if p[0] not in current]:
            del self._sent[pair]
        return pushed

    async def _protect(self, rel: str, file: Path, config_key: str | None,
                       targets: list[str]) -> int:
        key = f"games/{rel}"
        signature, stable = await asyncio.to_thread(_signature, file)
        if self._unchanged.get(key) == (signature, tuple(targets)):
            self.totals["unchanged"] += 1
            return 0
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        snap = self.scanner.data.live_snapshots / f"{name}.db"
        try:
            await asyncio.to_thread(snap.parent.mkdir, parents=True, exist_ok=True)
            if not await asyncio.to_thread(live_snapshot_database, file, snap):
                raise OSError("no sound snapshot (busy writer, or quick_check failed)")
            sha, size = await asyncio.to_thread(sha256_file, snap), snap.stat().st_size
        except OSError as exc:
            await asyncio.to_thread(snap.unlink, missing_ok=True)
            self.pushes.failed(key, self.node, f"live snapshot of {key}: {exc}", True, LIVE_REASON,
                               _retry_key(key))
            self.totals["failed"] += 1
            return 0
        self.totals["snapshots"] += 1
        pushed = 0
        try:
            pending = [t for t in targets if self._sent.get((key, t)) != sha]
            if not pending:
                self.totals["unchanged"] += 1
            art = Artifact("games", rel, config_key, size, sha, time.time(), self.node)
            for target in pending:
                if self.pause.paused:
                    break
                pushed += await self._push(art, snap, target)
        finally:
            await asyncio.to_thread(snap.unlink, missing_ok=True)
        if stable and all(self._sent.get((key, t)) == sha for t in targets):
            self._unchanged[key] = (signature, tuple(targets))
        return pushed

    async def _push(self, art: Artifact, snap: Path, target: str) -> int:
        started = time.monotonic()
        ok = await self.pushes.push(art, target, LIVE_REASON, source_file=snap, live=True,
                                    retry_key=_retry_key(art.key))
        if not ok:
            self.totals["failed"] += ok is False  # None: the breaker held it back
            return 0
        self._sent[(art.key, target)] = art.sha256
        self.totals["pushed"] += 1
        self._emit(DataSyncCompleted(
            source=self.node, target=target, files=1, bytes=art.size, artifacts=[art.key],
            reason=LIVE_REASON, strategy=self.pushes.strategy,
            seconds=round(time.monotonic() - started, 3)))
        return 1

    def status(self) -> dict[str, float | int]:
        return {"interval_seconds": self.interval, "tracked": len(self._unchanged), **self.totals}

    def health_check(self) -> HealthCheckResult:
        """Healthy unless snapshots keep failing (more failures than snapshots pushed)."""
        if not self.interval:
            return HealthCheckResult(True, "live snapshots off", self.status())
        failing = self.totals["failed"] > self.totals["pushed"]
        return HealthCheckResult(not failing, "live snapshots failing" if failing
                                 else "live snapshots running", self.status())


def _retry_key(key: str) -> tuple[str, str]:
    """The push path's retry key for the live snapshots of artifact ``key``."""
    return ("live", key)


def _signature(file: Path) -> tuple[Signature, bool]:
    """(size, mtime) of a database and its sidecars, and whether it is old enough to trust:
    an unchanged trusted signature means unchanged content."""
    now = time.time()
    sig: list[tuple[int, int] | None] = []
    stable = True
    for path in (file, file.with_name(file.name + "-wal"), file.with_name(file.name + "-journal")):
        try:
            st = path.stat()
        except OSError:
            sig.append(None)
            continue
        sig.append((st.st_size, st.st_mtime_ns))
        stable = stable and st.st_mtime < now - STABLE_AFTER
    return tuple(sig), stable
