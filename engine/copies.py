"""StoredCopies: the copies of other nodes' artifacts this node stores, and what they hash to.

A copy is the bytes a holder reads *now*: ``verify(ident, now=True)`` re-reads and hashes the
stored file (a vouch for a deletion, the scrub, an operator's verification always do).
Only answers that decide nothing (``HEAD``, an upload of something already here) may use
the cached hash, and only while the file's identity (st_dev, st_ino, size, mtime_ns,
ctime_ns) is unchanged since it was hashed: a wall clock is never asked. Hashing is bounded
per node (``push.hash_concurrency`` files at once), so many vouches or a scrub in parallel
cannot starve the node.

A copy that no longer matches its version is quarantined (``quarantine``): moved under
``.ringsync/quarantine/``, its replica row removed (the removal travels as a delta) and a
REPLICA_QUARANTINED event emitted; the caller decides about repairing it.

``reconcile`` runs at start: rows of copies that are gone or of the wrong size are dropped
(or quarantined), and copies on disk the manifest does not know (a manifest restored from
an older backup) are hashed and registered in the background (``adopt_unknown``), so the
manifest says what the disk holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.events import ReplicaQuarantined
from engine.hashing import sha256_file
from engine.manifest import Artifact, Replica, SyncReceipt
from engine.manifest.store import Ident, stat_identity
from engine.paths import COPY_PREFIX, DATA_TYPES, VERSION_DIGITS, UnsafePath, check_relative

if TYPE_CHECKING:
    from engine.events import EventBus
    from engine.manifest import ClusterManifest
    from engine.paths import DataRoot

log = logging.getLogger(__name__)

CACHE_LIMIT = 200_000
"""Cached hashes kept at most (then the cache starts over: a re-hash costs only time)."""


class StoredCopies:
    """This node's stored copies: where they are, their hashes, quarantine, reconcile."""

    def __init__(self, name: str, data: "DataRoot", manifest: "ClusterManifest",
                 events: "EventBus", root_id: str, hash_concurrency: int) -> None:
        self.name = name
        self.data = data
        self.manifest = manifest
        self.events = events
        self.root_id = root_id
        """This node's data root id: carried by every vouch and verified replica row."""
        self.hash_slots = asyncio.Semaphore(hash_concurrency)
        """At most this many files are hashed at once on this node."""
        self._hashed: dict[Path, tuple[tuple[int, ...], str, float]] = {}
        self.totals = {"hashed_files": 0, "hashed_bytes": 0, "quarantined": 0}
        self.unknown: list[tuple[tuple, Path]] = []
        """Copies found on disk at start that the manifest did not know, to hash."""

    def path(self, ident: Ident) -> Path:
        """Where this node stores version ``ident`` as a received copy (raises UnsafePath)."""
        origin, data_type, rel, sha = ident
        return self.data.copy_path(origin, data_type, rel, sha)

    async def hash_file(self, file: Path) -> str:
        """SHA-256 of ``file`` read now, within the node's hash concurrency."""
        async with self.hash_slots:
            digest = await asyncio.to_thread(sha256_file, file)
        self.totals["hashed_files"] += 1
        try:
            self.totals["hashed_bytes"] += file.stat().st_size
        except OSError:
            pass
        return digest

    async def verify(self, ident: Ident, file: Path, *, now: bool) -> tuple[str, float]:
        """(SHA-256 of the bytes in ``file``, when they were hashed). ``now``: read and hash
        them now, whatever was cached. A match is recorded as this node's verified replica
        of ``ident`` (with this root's id). Raises OSError when the file cannot be read."""
        st = file.stat()
        identity = stat_identity(st)
        cached = self._hashed.get(file)
        if not now and cached is not None and cached[0] == identity:
            return cached[1], cached[2]
        sha = await self.hash_file(file)
        at = time.time()
        if stat_identity(file.stat()) != identity:
            raise OSError(f"{file} changed while it was hashed")
        if len(self._hashed) >= CACHE_LIMIT:
            self._hashed.clear()
        self._hashed[file] = (identity, sha, at)
        if sha == ident[3]:
            origin, data_type, rel, _ = ident
            self.manifest.set_replica(Replica(data_type, rel, self.name, sha, at,
                                              origin=origin, root_id=self.root_id))
        return sha, at

    def forget(self, file: Path) -> None:
        self._hashed.pop(file, None)

    def quarantine(self, ident: Ident, file: Path | None, actual: str | None) -> str | None:
        """Stop counting this node's copy of ``ident``: move ``file`` (if any) to the
        quarantine, drop the replica row, emit REPLICA_QUARANTINED. Returns where it went."""
        origin, data_type, rel, sha = ident
        moved: str | None = None
        if file is not None and file.exists():
            try:
                target = self.data.quarantine_file(data_type, f"{origin}/{rel}", file)
                moved = target.relative_to(self.data.root).as_posix()
            except OSError as exc:
                log.warning("cannot quarantine %s on %s: %s", file, self.name, exc)
            self.forget(file)
        self.manifest.remove_replica(ident, self.name)
        self.totals["quarantined"] += 1
        self.events.emit(ReplicaQuarantined(node=self.name, artifact=f"{data_type}/{rel}",
                                            expected_sha256=sha, actual_sha256=actual,
                                            quarantined_to=moved))
        return moved

    # -- start ------------------------------------------------------------------------------
    def reconcile(self) -> dict[str, int]:
        """Make the manifest say what the disk holds (blocking; at start). Returns counts."""
        counts = {"dropped": 0, "quarantined": 0, "found": 0}
        for art, rep in self.manifest.held_by(self.name):
            if art.origin == self.name and rep.origin == self.name and \
                    not self._is_copy_row(art):
                continue  # the origin's row for its own source: the scanner keeps it true
            try:
                file = self.path(rep.ident)
                st = file.stat()
            except (OSError, UnsafePath):
                self.manifest.remove_replica(rep.ident, self.name)
                counts["dropped"] += 1
                continue
            if st.st_size != art.size:
                self.quarantine(rep.ident, file, None)
                counts["quarantined"] += 1
        known: dict[tuple[str, str, str], set[str]] = {}
        for _art, rep in self.manifest.held_by(self.name):
            known.setdefault(rep.ident[:3], set()).add(rep.sha256[:VERSION_DIGITS])
        for ident, file in self._copies_on_disk():
            if ident[3] is None or ident[3] in known.get(ident[:3], ()):
                continue
            self.unknown.append((ident, file))
            counts["found"] += 1
        return counts

    async def adopt_unknown(self) -> int:
        """Hash and register the copies ``reconcile`` found on disk but not in the manifest
        (in the background, within the hash slots); returns how many were registered."""
        adopted = 0
        while self.unknown:
            ident, file = self.unknown.pop()
            try:
                sha = await self.hash_file(file)
            except OSError as exc:
                log.warning("cannot adopt %s: %s", file, exc)
                continue
            adopted += self._adopt(ident, file, sha)
        return adopted

    def _is_copy_row(self, art: Artifact) -> bool:
        try:
            return self.path(art.ident).exists()
        except UnsafePath:
            return False

    def _copies_on_disk(self):
        """(origin, data_type, rel, sha16) and the file of every copy under ``@<origin>/``."""
        for data_type in DATA_TYPES:
            base = self.data.root / data_type
            try:
                tops = [d for d in os.listdir(base) if d.startswith(COPY_PREFIX)]
            except FileNotFoundError:
                continue
            for top in tops:
                origin = top[len(COPY_PREFIX):]
                for dirpath, dirnames, files in os.walk(base / top):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    for name in files:
                        if name.startswith("."):
                            continue
                        rel, sha16 = _unversioned(
                            Path(dirpath, name).relative_to(base / top).as_posix())
                        yield (origin, data_type, rel, sha16), Path(dirpath, name)

    def _adopt(self, ident: tuple, file: Path, sha: str) -> int:
        """A copy on disk the manifest did not know, hashed to ``sha``: registered when its
        name's version matches its bytes (1), else quarantined (0)."""
        origin, data_type, rel, sha16 = ident
        try:
            check_relative(rel)
            st = file.stat()
        except (OSError, UnsafePath) as exc:
            log.warning("cannot adopt %s: %s", file, exc)
            return 0
        if not sha.startswith(sha16):
            self.data.quarantine_file(data_type, f"{origin}/{rel}", file)
            log.warning("%s does not hash to its version: quarantined", file)
            return 0
        full = (origin, data_type, rel, sha)
        if self.manifest.get_artifact(data_type, rel, origin, sha) is None:
            parts = rel.split("/")
            self.manifest.register_sync(
                SyncReceipt(data_type, rel, self.name, self.name, sha, st.st_size, time.time(),
                            "reconcile", origin=origin, root_id=self.root_id),
                Artifact(data_type, rel, parts[0] if len(parts) > 1 else None, st.st_size, sha,
                         st.st_mtime, origin))
        else:
            self.manifest.set_replica(Replica(data_type, rel, self.name, sha, time.time(),
                                              origin=origin, root_id=self.root_id))
        log.info("found %s on disk, not in the manifest: hashed and registered", full)
        return 1


def _unversioned(rel: str) -> tuple[str, str | None]:
    """``dir/stem.v<sha16>.suffix`` or ``dir/name.v<sha16>`` (``DataRoot.copy_path``) ->
    (``dir/stem.suffix`` or ``dir/name``, sha16); (rel, None) for any other name."""
    head, _, name = rel.rpartition("/")
    parts = name.split(".")
    at = len(parts) - 2 if len(parts) >= 3 else len(parts) - 1
    part = parts[at] if len(parts) >= 2 else ""
    if (part.startswith("v") and len(part) == VERSION_DIGITS + 1
            and set(part[1:]) <= set("0123456789abcdef")):
        plain = ".".join(parts[:at] + parts[at + 1:])
        return (f"{head}/{plain}" if head else plain), part[1:]
    return rel, None
