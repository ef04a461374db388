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
DATA_SYNC_FAILED with that reason, retried after a backoff. Nothing starts while the node
is paused. The snapshot file is removed once pushed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.daemons.retry import RetryPolicy, RetryState
from engine.events import DataSyncCompleted, DataSyncFailed
from engine.hashing import sha256_file
from engine.health import HealthCheckResult
from engine.manifest import Artifact
from engine.scanner import live_snapshot_database
from engine.transport import PushRequest, TransferError

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

LIVE_REASON = "live_snapshot"
STABLE_AFTER = 1.0
"""A file whose mtimes are this much older than when they were read cannot change without
a new mtime (file timestamps are coarse, but not this coarse)."""

Signature = tuple[tuple[int, int] | None, ...]


class LiveSnapshotter:
    """Snapshots and pushes this node's unfinished databases; one task per node."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        cfg = node.config
        self.interval = cfg.push.live_snapshot_seconds
        """Seconds between rounds; 0 disables live snapshots."""
        self.retry = RetryPolicy(cfg.transfer.retry_base_seconds, cfg.transfer.retry_max_seconds)
        self._retries: dict[str, RetryState] = {}
        self._sent: dict[tuple[str, str], str] = {}
        """(artifact key, target) -> SHA-256 of the last live snapshot it verified."""
        self._unchanged: dict[str, tuple[Signature, tuple[str, ...]]] = {}
        """artifact key -> (stat signature, targets) of a source whose last snapshot every
        one of those targets has."""

        self.totals = {"snapshots": 0, "pushed": 0, "unchanged": 0, "failed": 0}

    async def step(self) -> None:
        """One round unless the node is paused (the supervised ``live_snapshots`` service's
        step, every ``interval`` when it is not 0)."""
        if not self.node.daemon.paused:
            await self.run_once()

    async def run_once(self) -> int:
        """One round over the unfinished databases; returns how many snapshots were pushed."""
        scanner = self.node.daemon.scanner
        found = await asyncio.to_thread(scanner.live_databases)
        pushed, current = 0, set()
        for rel, file in found:
            key = f"games/{rel}"
            config_key = rel.split("/")[0] if "/" in rel else None
            targets = self.node.router.get_sync_targets("games", config_key, rel)
            if not targets or not self._own(rel):
                continue
            current.add(key)
            if not self.node.daemon.paused and RetryPolicy.ready(self._retries.get(key)):
                pushed += await self._protect(rel, file, config_key, targets)
        for stale in [k for k in self._retries if k not in current]:  # finished or gone
            del self._retries[stale]
        for stale in [k for k in self._unchanged if k not in current]:
            del self._unchanged[stale]
        for pair in [p for p in self._sent if p[0] not in current]:
            del self._sent[pair]
        return pushed

    def _own(self, rel: str) -> bool:
        """A database this node writes: the scanner's tree holds only own sources (copies of
        others' live under ``@<origin>/``), unless the same path was registered elsewhere."""
        art = self.node.manifest.get_artifact("games", rel, self.node.name)
        return art is None or art.origin == self.node.name

    async def _protect(self, rel: str, file: Path, config_key: str | None,
                       targets: list[str]) -> int:
        key = f"games/{rel}"
        signature, stable = await asyncio.to_thread(_signature, file)
        if self._unchanged.get(key) == (signature, tuple(targets)):
            self.totals["unchanged"] += 1
            return 0
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        snap = self.node.data.live_snapshots / f"{name}.db"
        try:
            await asyncio.to_thread(snap.parent.mkdir, parents=True, exist_ok=True)
            if not await asyncio.to_thread(live_snapshot_database, file, snap):
                raise OSError("no sound snapshot (busy writer, or quick_check failed)")
            sha, size = await asyncio.to_thread(sha256_file, snap), snap.stat().st_size
        except OSError as exc:
            await asyncio.to_thread(snap.unlink, missing_ok=True)
            self._failed(key, self.node.name, f"live snapshot of {key}: {exc}")
            return 0
        self.totals["snapshots"] += 1
        pushed = 0
        try:
            pending = [t for t in targets if self._sent.get((key, t)) != sha]
            if not pending:
                self.totals["unchanged"] += 1
            art = Artifact("games", rel, config_key, size, sha, time.time(), self.node.name)
            for target in pending:
                if self.node.daemon.paused or not self._own(rel):
                    break
                pushed += await self._push(art, snap, target)
        finally:
            await asyncio.to_thread(snap.unlink, missing_ok=True)
        if stable and all(self._sent.get((key, t)) == sha for t in targets):
            self._unchanged[key] = (signature, tuple(targets))
        return pushed

    async def _push(self, art: Artifact, snap: Path, target: str) -> int:
        node = self.node
        state = self._retries.get(art.key)
        started = time.monotonic()
        async with node.daemon.limiter.slot():  # within the node's bound on pushes
            transfer = node.transfers.start(
                direction="out", source=node.name, target=target, artifact=art.key,
                size=art.size, transport=node.transport.name,
                attempt=(state.attempts if state else 0) + 1)
            try:
                await node.transport.push(PushRequest(art, snap, target,
                                                      node.config.host(target).url,
                                                      LIVE_REASON, live=True), transfer)
            except TransferError as exc:
                node.transfers.finish(transfer, error=str(exc))
                self._failed(art.key, target, str(exc))
                return 0
        node.transfers.finish(transfer)
        self._sent[(art.key, target)] = art.sha256
        self._retries.pop(art.key, None)
        self.totals["pushed"] += 1
        node.events.emit(DataSyncCompleted(
            source=node.name, target=target, files=1, bytes=art.size, artifacts=[art.key],
            reason=LIVE_REASON, strategy=node.daemon.strategy,
            seconds=round(time.monotonic() - started, 3)))
        return 1

    def _failed(self, key: str, target: str, error: str) -> None:
        """Report a failure and back off: the database changes, so it is always worth retrying."""
        state = self._retries.setdefault(key, RetryState())
        wait = self.retry.record_failure(state, error, retryable=True)
        self.totals["failed"] += 1
        self.node.events.emit(DataSyncFailed(
            source=self.node.name, target=target, artifact=key, error=error,
            attempt=state.attempts, retry_in_seconds=None if wait is None else round(wait, 2),
            reason=LIVE_REASON, strategy=self.node.daemon.strategy))

    def status(self) -> dict[str, float | int]:
        return {"interval_seconds": self.interval, "tracked": len(self._unchanged), **self.totals}

    def health_check(self) -> HealthCheckResult:
        """Healthy unless snapshots keep failing (more failures than snapshots pushed)."""
        if not self.interval:
            return HealthCheckResult(True, "live snapshots off", self.status())
        failing = self.totals["failed"] > self.totals["pushed"]
        return HealthCheckResult(not failing, "live snapshots failing" if failing
                                 else "live snapshots running", self.status())


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
