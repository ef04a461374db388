"""Cleaner: frees disk by deleting own sources that enough other nodes vouch for, live.

A run deletes this node's own artifacts, oldest first, until usage is back under
``push.cleanup_percent``. An artifact is deleted only when all of this holds at that moment:

* **finished and unchanged**: its source has the size and mtime it had when it was hashed
  and registered, has been idle for ``transfer.finished_after_seconds``, a database has no
  ``-wal``/``-journal``/``-shm`` sidecar at all, and no process has the file open
  (``engine.openfiles``: a write lease, else ``/proc``);
* **not busy**: no push of it is under way;
* **vouched for**: at least ``push.min_copies_before_delete`` distinct other nodes, asked now
  over HTTP (``GET /v1/vouch/...``, see ``engine.server.vouch``), answer in their own name
  that the bytes they store hash to the artifact's SHA-256. Whom to ask comes from the
  manifest; only the answers count. The manifest's memory, receipts, file names and the
  local copy never do.

The delete itself renames the source into ``.ringsync/deleting/``, checks the renamed file
is still the same unopened, unchanged inode, and only then unlinks it (else it is put back).
A run only starts at or above ``push.cleanup_percent``.
Each deletion is logged in the manifest (``deletions``: holders that vouched) and emitted as
ARTIFACT_DELETED; each run ends with one CLEANUP_COMPLETED.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from engine.diskio import fsync_dir
from engine.events import ArtifactDeleted, CleanupCompleted
from engine.manifest import Artifact
from engine.openfiles import opened_elsewhere
from engine.scanner import is_database

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)

DB_SIDECARS = ("-wal", "-journal", "-shm")
VOUCH_TIMEOUT_SECONDS = 30.0
VOUCH_HASH_RATE = 50 * 2**20
"""Bytes per second a holder is assumed to hash at least, for the vouch timeout."""


@dataclass
class CleanupReport:
    """What one run did and why the rest stayed."""

    percent_before: float = 0.0
    percent_after: float = 0.0
    deleted: list[tuple[Artifact, list[str]]] = field(default_factory=list)
    freed_bytes: int = 0
    short_of_copies: int = 0
    unfinished: int = 0
    busy: int = 0


class Cleaner:
    """Cleanup runs of one node (called by SyncPushDaemon at the cleanup level)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.required = node.config.push.min_copies_before_delete
        """Distinct other nodes that must vouch before a source is deleted."""
        self.totals = {"runs": 0, "deleted": 0, "freed_bytes": 0}
        """Running counts since start."""

    async def run(self, reason: str = "disk_pressure",
                  disk: dict[str, Any] | None = None) -> CleanupReport:
        """One run; ``disk`` is a measurement just made (``Node.refresh_disk``), else one is."""
        node, push = self.node, self.node.config.push
        disk = disk or await node.refresh_disk()
        report = CleanupReport(percent_before=disk["percent"], percent_after=disk["percent"])
        total, used = disk["total_bytes"], disk["used_bytes"]
        gone = node.manifest.deleted_sources(node.name)
        busy = {key for key, _target in node.daemon.inflight}
        for art in node.manifest.artifacts(origin=node.name):
            if not total or 100.0 * used / total < push.cleanup_percent:
                break
            if (art.data_type, art.path) in gone:
                continue
            if art.key in busy:
                report.busy += 1
                continue
            if not await asyncio.to_thread(self._deletable, art):
                report.unfinished += 1
                continue
            vouched = await self.vouches(art)
            if len(vouched) < self.required:
                report.short_of_copies += 1
                continue
            freed = await asyncio.to_thread(self._delete, art)
            if freed is None:
                report.unfinished += 1
                continue
            self._deleted(art, vouched, freed, reason)
            report.deleted.append((art, vouched))
            report.freed_bytes += freed
            used -= freed
        disk = await node.refresh_disk()
        report.percent_after = disk["percent"]
        self.totals["runs"] += 1
        node.events.emit(CleanupCompleted(
            node=node.name, deleted=len(report.deleted), freed_bytes=report.freed_bytes,
            percent_before=report.percent_before, percent_after=report.percent_after,
            required=self.required, short_of_copies=report.short_of_copies,
            unfinished=report.unfinished, busy=report.busy))
        return report

    # -- vouching ---------------------------------------------------------------------------
    async def vouches(self, art: Artifact) -> list[str]:
        """The distinct other nodes that, asked now, vouch for ``art``'s SHA-256 (sorted)."""
        holders = sorted({r.node for r in self.node.manifest.replicas(art.data_type, art.path)}
                         - {self.node.name})
        answers = await asyncio.gather(*(self.ask(art, h) for h in holders))
        return sorted(h for h, ok in zip(holders, answers) if ok)

    async def ask(self, art: Artifact, holder: str) -> bool:
        """True when ``holder`` answers, in its own name, that it stores ``art``'s bytes.

        A holder that answers it has no copy, or one with other bytes, loses its replica row
        here (so the push daemon sends a copy elsewhere); one that does not answer keeps it.
        """
        node = self.node
        url = (f"{node.config.host(holder).url}/v1/vouch/{art.data_type}/{quote(art.path)}")
        timeout = aiohttp.ClientTimeout(total=VOUCH_TIMEOUT_SECONDS + art.size / VOUCH_HASH_RATE)
        try:
            async with node.session.get(
                    url, params={"max_age": str(node.config.push.vouch_max_age_seconds)},
                    timeout=timeout) as resp:
                answer = await resp.json() if resp.status in (200, 404) else None
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.info("%s could not vouch for %s: %s", holder, art.key, exc or type(exc).__name__)
            return False
        if status == 200 and isinstance(answer, dict) and answer.get("node") == holder:
            if answer.get("sha256") == art.sha256 and answer.get("size") == art.size:
                return True
            log.warning("%s stores %s with sha256 %s, not %s: no longer counted", holder,
                        art.key, answer.get("sha256"), art.sha256)
            node.manifest.remove_replica(art.data_type, art.path, holder)
        elif status == 404:
            log.warning("%s no longer stores %s: no longer counted", holder, art.key)
            node.manifest.remove_replica(art.data_type, art.path, holder)
        else:
            log.info("%s does not vouch for %s: HTTP %d", holder, art.key, status)
        return False

    # -- the local source -------------------------------------------------------------------
    def _deletable(self, art: Artifact) -> bool:
        """The source is finished and is exactly what was hashed (blocking)."""
        try:
            source = self.node.data.object_path(art.data_type, art.path)
            st = source.stat()
        except (OSError, ValueError):
            return False
        if (st.st_size, st.st_mtime_ns) != (art.source_size, art.source_mtime_ns):
            return False  # changed since it was hashed: the scanner registers the new version
        if time.time() - st.st_mtime < self.node.config.transfer.finished_after_seconds:
            return False
        if is_database(art.path) and _has_sidecar(source):
            return False
        try:
            return not opened_elsewhere(source)
        except OSError:
            return False

    def _delete(self, art: Artifact) -> int | None:
        """Delete the source (and its snapshot); the bytes freed, or None when it was put back
        because it turned out to be open or changed (blocking)."""
        source = self.node.data.object_path(art.data_type, art.path)
        trash_dir = self.node.data.state / "deleting"
        trash_dir.mkdir(parents=True, exist_ok=True)
        trash = trash_dir / f"{uuid.uuid4().hex}-{source.name}"
        try:
            before = source.stat()
            os.rename(source, trash)
        except OSError:
            return None
        after = os.stat(trash)
        same = ((after.st_ino, after.st_size, after.st_mtime_ns)
                == (before.st_ino, art.source_size, art.source_mtime_ns))
        if (not same or opened_elsewhere(trash)
                or (is_database(art.path) and _has_sidecar(source))):
            _put_back(trash, source)
            return None
        os.unlink(trash)
        fsync_dir(source.parent)
        freed = after.st_size
        snapshot = self.node.daemon.scanner.snapshot_path(art.data_type, art.path)
        if is_database(art.path) and snapshot.exists():
            freed += snapshot.stat().st_size
            snapshot.unlink(missing_ok=True)
        return freed

    def _deleted(self, art: Artifact, vouched: list[str], freed: int, reason: str) -> None:
        node = self.node
        node.manifest.record_deletion(art, node.name, vouched)
        node.note_stored(-freed)
        self.totals["deleted"] += 1
        self.totals["freed_bytes"] += freed
        log.info("deleted %s (%d bytes, sha256 %s): vouched for by %s", art.key, freed,
                 art.sha256[:16], ", ".join(vouched))
        node.events.emit(ArtifactDeleted(node=node.name, artifact=art.key, sha256=art.sha256,
                                         bytes=freed, vouched_by=vouched, reason=reason))


def _has_sidecar(source: Path) -> bool:
    return any(source.with_name(source.name + s).exists() for s in DB_SIDECARS)


def _put_back(trash: Path, source: Path) -> None:
    """Return a file that must not be deleted to its name (never over a new file there)."""
    try:
        os.link(trash, source)
    except FileExistsError:
        log.error("%s reappeared while it was being deleted; the old file is kept as %s",
                  source, trash)
        return
    os.unlink(trash)
