"""Cleaner: frees disk by deleting own sources that enough other nodes vouch for, live.

A run deletes this node's own artifacts, oldest first, until usage is back under
``push.cleanup_percent``. An artifact is deleted only when all of this holds at that moment:

* **finished and unchanged**: its source has the identity on disk it had when it was hashed
  (st_dev, st_ino, size, mtime_ns, ctime_ns: ``utime`` cannot set ctime), has been idle for ``transfer.finished_after_seconds``, a database has no
  ``-wal``/``-journal``/``-shm`` sidecar at all, and no process has the file open
  (``engine.openfiles``: a write lease, else ``/proc``);
* **not busy**: no push of it is under way;
* **vouched for**: holders on at least ``push.min_copies_before_delete`` distinct data roots
  (root ids; never this node's own), asked now over HTTP (``GET /v1/vouch/...``, see
  ``engine.server.vouch``), answer in their own name that the bytes they store for this
  version, read and hashed now, hash to its SHA-256 (``counting``: copies on ephemeral hosts
  count only when the data type's policy says ``ephemeral_copies_count``; with
  ``distinct_providers`` one per provider). Whom to ask comes from the manifest; only the
  answers count. The manifest's memory, receipts, file names and the local copy never do; a
  holder no longer in the config or not answering does not vouch and stops nothing.

The delete itself is crash-safe (``engine.deletion_journal``): a durable intent, a rename
into ``.ringsync/deleting/``, a check that the renamed file is still the same unopened,
unchanged inode (else it is put back), the unlink, the deletion recorded with
``synchronous=FULL``, and only then the intent removed.
A run only starts at or above ``push.cleanup_percent``.
Each deletion is logged in the manifest (``deletions``: holders that vouched) and emitted as
ARTIFACT_DELETED; each run ends with one CLEANUP_COMPLETED.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import deletion_journal
from engine.deletion_journal import Intent
from engine.diskio import fsync_dir
from engine.events import ArtifactDeleted, CleanupCompleted, Payload
from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest
from engine.openfiles import opened_elsewhere
from engine.hashing import sha256_file
from engine.paths import DataRoot
from engine.scanner import Scanner, is_database, snapshot_database
from engine.vouches import VouchClient

log = logging.getLogger(__name__)

DB_SIDECARS = ("-wal", "-journal", "-shm")


@dataclass
class CleanupReport:
    """What one run did and why the rest stayed."""

    percent_before: float = 0.0
    percent_after: float = 0.0
    deleted: list[tuple[Artifact, list[str]]] = field(default_factory=list)
    freed_bytes: int = 0
    short_of_copies: int = 0
    short: dict[tuple[str, str, str, str], set[str]] = field(default_factory=dict)
    """The versions short of copies, each with the holders that vouched live."""
    unfinished: int = 0
    busy: int = 0


class Cleaner:
    """Cleanup runs of one node (called by SyncPushDaemon at the cleanup level)."""

    def __init__(self, node: str, required: int, cleanup_percent: float, finished_after: float,
                 *, data: DataRoot, manifest: ClusterManifest, scanner: Scanner,
                 inflight: InFlight, vouches: VouchClient,
                 measure: Callable[[], Awaitable[dict[str, Any]]],
                 note_stored: Callable[[int], object], emit: Callable[[Payload], object]) -> None:
        self.node = node
        """This node's name."""
        self.required = required
        """Distinct other nodes that must vouch before a source is deleted."""
        self.cleanup_percent = cleanup_percent
        """A run deletes until usage is below this."""
        self.finished_after = finished_after
        """Seconds a source must have been idle (``transfer.finished_after_seconds``)."""
        self.data = data
        self.manifest = manifest
        self.scanner = scanner
        self.inflight = inflight
        self.vouches = vouches
        self._measure = measure
        """Measures usage now and returns the disk figures (``DiskUsage.refresh``)."""
        self._note_stored = note_stored
        self._emit = emit
        self.totals = {"runs": 0, "deleted": 0, "freed_bytes": 0}
        """Running counts since start."""

    async def run(self, reason: str = "disk_pressure",
                  disk: dict[str, Any] | None = None) -> CleanupReport:
        """One run; ``disk`` is a measurement just made (``measure``), else one is."""
        disk = disk or await self._measure()
        report = CleanupReport(percent_before=disk["percent"], percent_after=disk["percent"])
        total, used = disk["total_bytes"], disk["used_bytes"]
        gone = self.manifest.deleted_sources(self.node)
        busy = self.inflight.idents()
        for art in self.manifest.artifacts(origin=self.node):
            if not total or 100.0 * used / total < self.cleanup_percent:
                break
            if art.ident in gone and not self.scanner.source_back(art):
                continue
            if art.ident in busy:
                report.busy += 1
                continue
            if not await asyncio.to_thread(self._deletable, art):
                report.unfinished += 1
                continue
            vouched = [v.node for v in await self.vouches.counted(art)]
            if len(vouched) < self.required:
                report.short_of_copies += 1
                report.short[art.ident] = set(vouched)
                continue
            done = await asyncio.to_thread(self._delete, art, vouched)
            if done is None:
                report.unfinished += 1
                continue
            freed, intent = done
            self._deleted(art, vouched, freed, reason, intent)
            report.deleted.append((art, vouched))
            report.freed_bytes += freed
            used -= freed
        disk = await self._measure()
        report.percent_after = disk["percent"]
        self.totals["runs"] += 1
        self._emit(CleanupCompleted(
            node=self.node, deleted=len(report.deleted), freed_bytes=report.freed_bytes,
            percent_before=report.percent_before, percent_after=report.percent_after,
            required=self.required, short_of_copies=report.short_of_copies,
            unfinished=report.unfinished, busy=report.busy))
        return report

    # -- the local source -------------------------------------------------------------------
    def _deletable(self, art: Artifact) -> bool:
        """The source is finished and is exactly the file that was hashed (blocking)."""
        try:
            source = self.data.source_path(art.data_type, art.path)
            st = source.stat()
        except (OSError, ValueError):
            return False
        if not Scanner.unchanged(art, st):
            return False  # changed, replaced or touched since it was hashed: hashed again first
        if time.time() - st.st_mtime < self.finished_after:
            return False
        if is_database(art.path) and _has_sidecar(source):
            return False
        try:
            return not opened_elsewhere(source)
        except OSError:
            return False

    def _delete(self, art: Artifact, vouched: list[str]) -> tuple[int, Intent] | None:
        """Delete the source (and its snapshot) behind a durable intent; the bytes freed and
        the intent to finish once the manifest has the deletion, or None when it was put back
        because it turned out to be open or changed (blocking).

        The last word is the bytes: once the source is renamed out of every writer's reach,
        it is hashed again (a database: snapshotted again) and unlinked only when that is
        still the vouched version. An in-place rewrite with its mtime put back between the
        checks (``cp -p`` over the file, ``rsync --inplace -t``) keeps inode, size and mtime,
        and the rename itself changes ctime, so no stat can tell."""
        data = self.data
        source = data.source_path(art.data_type, art.path)
        intent = deletion_journal.begin(data, art, source, vouched)
        try:
            before = source.stat()
            if not Scanner.unchanged(art, before):
                deletion_journal.finish(intent)
                return None
            os.rename(source, intent.trash)
        except OSError:
            deletion_journal.finish(intent)
            return None
        fsync_dir(source.parent)
        fsync_dir(intent.trash.parent)
        after = os.stat(intent.trash)
        same = ((after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns)
                == (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns))
        if (not same or opened_elsewhere(intent.trash)
                or (is_database(art.path) and _has_sidecar(source))
                or self._content(art, intent.trash) != art.sha256):
            log.warning("%s changed while it was being deleted: put back", art.label)
            deletion_journal.put_back(intent.trash, source, data)
            deletion_journal.finish(intent)
            return None
        os.unlink(intent.trash)
        fsync_dir(intent.trash.parent)
        freed = after.st_size
        snapshot = self.scanner.snapshot_path(art.data_type, art.path)
        if is_database(art.path) and snapshot.exists():
            freed += snapshot.stat().st_size
            snapshot.unlink(missing_ok=True)
        return freed, intent

    def _content(self, art: Artifact, file: Path) -> str | None:
        """What ``file`` holds as ``art``'s bytes: its SHA-256, or a database's snapshot's
        (byte-identical for an unchanged database); None when it cannot be read."""
        try:
            if not is_database(art.path):
                return sha256_file(file)
            check = file.with_name(f".{file.name}.check.tmp")  # a crash: recover drops it
            try:
                if not snapshot_database(file, check):
                    return None
                return sha256_file(check)
            finally:
                check.unlink(missing_ok=True)
        except OSError:
            return None

    def _deleted(self, art: Artifact, vouched: list[str], freed: int, reason: str,
                 intent: Intent) -> None:
        self.manifest.record_deletion(art, vouched)  # durable before the intent goes
        deletion_journal.finish(intent)
        self._note_stored(-freed)
        self.totals["deleted"] += 1
        self.totals["freed_bytes"] += freed
        log.info("deleted %s (%d bytes): vouched for by %s", art.label, freed, ", ".join(vouched))
        self._emit(ArtifactDeleted(node=self.node, artifact=art.key, sha256=art.sha256,
                                   bytes=freed, vouched_by=vouched, reason=reason))


def _has_sidecar(source: Path) -> bool:
    return any(source.with_name(source.name + s).exists() for s in DB_SIDECARS)
