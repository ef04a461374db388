"""SnapshotKeeper: the consistent snapshots of this node's own databases, and their footprint.

A database is pushed as its snapshot (``engine.scanner``). A snapshot is kept until every
target the router names holds that version verified (``drop_finished``). While some targets
are still missing it, waiting snapshots would double the footprint of waiting databases, so
the keeper holds them to a budget (``bound``): past it, it drops the largest snapshots that
(1) nothing is pushing now, (2) belong to a version some other node already holds verified,
and (3) whose database is unchanged since it was hashed, so the snapshot can be re-made
byte-identically (SHA-256 checked); ``source_for`` re-makes it when a push needs it again.
A version no other node holds verified keeps its snapshot whatever the budget: if its
database then changed or vanished, that snapshot would be the only bytes of the version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from engine.errors import describe
from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest
from engine.ratelog import RateLimitedLog
from engine.router import SyncRouter
from engine.scanner import Scanner, is_database

log = logging.getLogger(__name__)

BUDGET_FRACTION = 0.05
"""Snapshots may take this share of the node's capacity before they are dropped..."""
BUDGET_MIN_BYTES = 64 * 1024 * 1024
"""...but never less than this."""


class SnapshotKeeper:
    """Keeps, drops and re-makes the snapshots of one node's own databases."""

    def __init__(self, node: str, scanner: Scanner, manifest: ClusterManifest,
                 router: SyncRouter, inflight: InFlight,
                 capacity_bytes: Callable[[], int]) -> None:
        self.node = node
        self.scanner = scanner
        self.manifest = manifest
        self.router = router
        self.inflight = inflight
        self._capacity = capacity_bytes
        self.totals = {"dropped_for_budget": 0, "remade": 0}
        """Snapshots dropped to stay within the budget, and re-made for a push."""
        self.kept_bytes = 0
        """Bytes of snapshots on disk at the last ``bound``."""
        self.last_error: str | None = None
        """The last snapshot file ``bound`` could not stat or drop."""
        self._remaking: dict[object, asyncio.Lock] = {}
        self._log = RateLimitedLog(log)

    def budget(self) -> int:
        return max(BUDGET_MIN_BYTES, int(self._capacity() * BUDGET_FRACTION))

    async def source_for(self, art: Artifact) -> Path:
        """The file a push of ``art`` reads: for an own database its snapshot, re-made first
        when it was dropped (a failed re-make leaves the path missing: the push fails as
        vanished and the scanner registers the database's new version)."""
        source = self.scanner.push_source(art)
        if not is_database(art.path) or art.origin != self.node or source.exists():
            return source
        async with self._remaking.setdefault(art.ident, asyncio.Lock()):
            # one re-make per version, however many pushes want it at once
            if not source.exists() and \
                    await asyncio.to_thread(self.scanner.restore_snapshot, art):
                self.totals["remade"] += 1
        return source

    def drop_finished(self, pushed: list[Artifact]) -> None:
        """A snapshot is kept until every target the router names holds it verified."""
        busy = self.inflight.idents()
        for art in {a.ident: a for a in pushed
                    if is_database(a.path) and a.origin == self.node}.values():
            if art.ident in busy:  # another push still reads it
                continue
            targets = set(self.router.get_sync_targets(art.data_type, art.config_key, art.path,
                                                       origin=art.origin))
            if targets and targets <= self.manifest.verified_holders(art):
                self.scanner.snapshot_path(art.data_type, art.path).unlink(missing_ok=True)

    async def bound(self) -> int:
        """Drop snapshots past the budget (those that can be re-made and whose version is
        held verified elsewhere); returns how many. A file it cannot stat or drop is logged
        and skipped: keeping the budget never fails a cycle."""
        me = self.node
        own = [a for a in self.manifest.artifacts(origin=me) if is_database(a.path)]
        holders = self.manifest.verified_holders_by_artifact(me)  # one query, not one per db
        placed = {a.ident for a in own if holders.get(a.ident, set()) - {me}}
        current = {a.ident for a in own}
        for ident in [i for i, lock in self._remaking.items()
                      if i not in current and not lock.locked()]:
            del self._remaking[ident]  # versions gone or superseded
        budget = self.budget()
        sizes, candidates = await asyncio.to_thread(self._survey, own, placed, budget)
        dropped = 0
        total = sum(sizes)
        for size, snap, art in candidates:
            if total <= budget:
                break
            if art.ident in self.inflight.idents():  # claimed since the survey
                continue
            try:
                snap.unlink(missing_ok=True)
            except OSError as exc:
                self._problem(snap, exc)
                continue
            total -= size
            dropped += 1
        self.kept_bytes = total
        self.totals["dropped_for_budget"] += dropped
        if dropped:
            log.info("%s: dropped %d database snapshots to stay within its snapshot budget"
                     " (re-made when pushed)", me, dropped)
        return dropped

    def _survey(self, own: list[Artifact], placed: set[object], budget: int
                ) -> tuple[list[int], list[tuple[int, Path, Artifact]]]:
        """In a worker thread: the snapshots' sizes, and (past the budget) the ones that may
        be dropped, largest first."""
        sizes: list[int] = []
        kept: list[tuple[int, Path, Artifact]] = []
        for art in own:
            snap = self.scanner.snapshot_path(art.data_type, art.path)
            try:
                size = snap.stat().st_blocks * 512
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._problem(snap, exc)
                continue
            sizes.append(size)
            kept.append((size, snap, art))
        if sum(sizes) <= budget:
            return sizes, []
        droppable = [k for k in kept if k[2].ident in placed and self._remakeable(k[2])]
        return sizes, sorted(droppable, key=lambda k: -k[0])

    def _problem(self, snap: Path, exc: OSError) -> None:
        self.last_error = f"{snap.name}: {describe(exc)}"
        self._log.warning(f"snapshot:{type(exc).__name__}", "%s: snapshot budget: %s",
                          self.node, self.last_error)

    def _remakeable(self, art: Artifact) -> bool:
        """The database is exactly the file that was hashed: its snapshot can be re-made."""
        try:
            st = self.scanner.data.source_path(art.data_type, art.path).stat()
        except (OSError, ValueError):
            return False
        return Scanner.unchanged(art, st)

    def status(self) -> dict[str, int]:
        return {"kept_bytes": self.kept_bytes, "budget_bytes": self.budget(), **self.totals}
