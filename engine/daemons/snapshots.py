"""SnapshotKeeper: the consistent snapshots of this node's own databases, and their footprint.

A database is pushed as its snapshot (``engine.scanner``). A snapshot is kept until every
target the router names holds that version verified (``drop_finished``). While targets are
away, waiting snapshots would double the footprint of waiting databases, so the keeper holds
them to a budget (``bound``): past it, snapshots nothing is reading now and whose database
is unchanged since it was hashed are dropped, largest first; ``source_for`` re-makes such a
snapshot (byte-identical: same SHA-256, checked) when a push needs it again. A snapshot
whose database changed or vanished is never dropped for the budget: it may hold the only
bytes of its version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest
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

    def budget(self) -> int:
        return max(BUDGET_MIN_BYTES, int(self._capacity() * BUDGET_FRACTION))

    async def source_for(self, art: Artifact) -> Path:
        """The file a push of ``art`` reads: for an own database its snapshot, re-made first
        when it was dropped (a failed re-make leaves the path missing: the push fails as
        vanished and the scanner registers the database's new version)."""
        source = self.scanner.push_source(art)
        if is_database(art.path) and art.origin == self.node and not source.exists():
            if await asyncio.to_thread(self.scanner.restore_snapshot, art):
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
        """Drop snapshots past the budget (those that can be re-made); returns how many."""
        own = [a for a in self.manifest.artifacts(origin=self.node) if is_database(a.path)]
        dropped = await asyncio.to_thread(self._bound, own, self.inflight.idents(),
                                          self.budget())
        self.totals["dropped_for_budget"] += dropped
        if dropped:
            log.info("%s: dropped %d database snapshots to stay within its snapshot budget"
                     " (re-made when pushed)", self.node, dropped)
        return dropped

    def _bound(self, own: list[Artifact], busy: set[object], budget: int) -> int:
        """In a worker thread: stat the snapshots, drop the largest re-makeable ones."""
        kept: list[tuple[int, Path, Artifact]] = []
        for art in own:
            snap = self.scanner.snapshot_path(art.data_type, art.path)
            try:
                kept.append((snap.stat().st_blocks * 512, snap, art))
            except FileNotFoundError:
                continue
        total = sum(size for size, _, _ in kept)
        self.kept_bytes = total
        if total <= budget:
            return 0
        dropped = 0
        for size, snap, art in sorted(kept, key=lambda k: -k[0]):
            if total <= budget:
                break
            if art.ident in busy or not self._remakeable(art):
                continue
            snap.unlink(missing_ok=True)
            total -= size
            dropped += 1
        self.kept_bytes = total
        return dropped

    def _remakeable(self, art: Artifact) -> bool:
        """The database is exactly the file that was hashed: its snapshot can be re-made."""
        try:
            st = self.scanner.data.source_path(art.data_type, art.path).stat()
        except (OSError, ValueError):
            return False
        return Scanner.unchanged(art, st)

    def status(self) -> dict[str, int]:
        return {"kept_bytes": self.kept_bytes, "budget_bytes": self.budget(), **self.totals}
