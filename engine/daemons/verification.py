"""ReplicaVerifier: re-hash every copy this node holds; a copy that no longer matches stops counting.

One run (``POST /v1/control/verify``, the dashboard's ``v``) takes every artifact this
node has a replica row of and re-hashes the stored bytes in a worker thread
(``Node.local_verification(..., force=True)``, which records the new hash). Then:

* matches the artifact's SHA-256: the replica stays verified, with a fresh ``verified_at``;
* a stored copy (someone else's artifact) that does not match: its replica row is
  removed and the file is moved to ``<data_root>/.ringsync/quarantine/<data_type>/<path>``
  (never outside the data root, never over an earlier quarantined file), REPLICA_QUARANTINED;
* a missing (or unreadable) file: the replica row is removed, REPLICA_QUARANTINED with no
  actual hash and nothing moved;
* this node's own source that changed: counted as mismatched and left where it is (it is
  the source); its replica row now carries the new hash, so it does not count, and the
  scanner registers the new version once the file's size or mtime shows the change.

Every run ends with one REPLICAS_VERIFIED summary. One run at a time per node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import ReplicaQuarantined, ReplicasVerified
from engine.health import HealthCheckResult
from engine.manifest import Artifact

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger(__name__)


class VerificationRunning(RuntimeError):
    """A verification was requested while one is still running on the node."""


class ReplicaVerifier:
    """Runs verification on one node, in a background task ended with the node."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._task: asyncio.Task[None] | None = None
        self.last: dict[str, Any] | None = None
        """The summary of the last finished run (the REPLICAS_VERIFIED payload)."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, by: str) -> dict[str, Any]:
        """Start a run over every replica this node holds; raises VerificationRunning."""
        if self.running:
            raise VerificationRunning(f"a verification is already running on {self.node.name}")
        held = [art for art, _rep in self.node.manifest.held_by(self.node.name)]
        self._task = asyncio.create_task(self._run(held, by), name=f"verify:{self.node.name}")
        return {"node": self.node.name, "replicas": len(held), "started": True}

    def health_check(self) -> HealthCheckResult:
        """Healthy: a copy found changed or missing is quarantined and stops counting, so
        recovery re-homes it; the message says what the last run found."""
        last = self.last or {}
        message = ("verification running" if self.running else
                   "no verification run yet" if not last else
                   f"last run: {last['matched']} of {last['checked']} copies matched,"
                   f" {last['mismatched']} changed, {last['missing']} missing")
        return HealthCheckResult(True, message, {"running": self.running, "last": self.last})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self, held: list[Artifact], by: str) -> None:
        started = time.monotonic()
        counts = {"matched": 0, "mismatched": 0, "missing": 0}
        for art in held:
            counts[await self._check(art)] += 1
        summary = ReplicasVerified(node=self.node.name, checked=len(held), **counts,
                                   seconds=round(time.monotonic() - started, 3), requested_by=by)
        self.last = summary.to_dict()
        self.node.events.emit(summary)

    async def _check(self, art: Artifact) -> str:
        """Verify one copy; returns ``matched``, ``mismatched`` or ``missing``."""
        node = self.node
        own = art.origin == node.name
        try:
            file = node.data.object_path(art.data_type, art.path)
            actual, _at = await node.local_verification(art.data_type, art.path, file, force=True)
        except Exception as exc:  # gone, unreadable or unusable: it cannot be vouched for
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot verify %s on %s: %s: %s", art.key, node.name,
                            type(exc).__name__, exc)
            self._stop_counting(art, None, None)
            return "missing"
        if actual == art.sha256:
            return "matched"
        if own:  # the source itself changed: never moved, the scanner re-registers it
            log.warning("source %s on %s changed since it was registered", art.key, node.name)
            return "mismatched"
        try:
            moved: str | None = await asyncio.to_thread(self._quarantine, art, file)
        except OSError as exc:
            log.warning("cannot quarantine %s on %s: %s", art.key, node.name, exc)
            moved = None
        self._stop_counting(art, actual, moved)
        return "mismatched"

    def _quarantine(self, art: Artifact, file: Path) -> str:
        """Move a bad copy under the quarantine directory; returns its path under the data root."""
        target = self.node.data.quarantine_file(art.data_type, art.path, file)
        return target.relative_to(self.node.data.root).as_posix()

    def _stop_counting(self, art: Artifact, actual: str | None, moved: str | None) -> None:
        self.node.manifest.remove_replica(art.data_type, art.path, self.node.name)
        self.node.events.emit(ReplicaQuarantined(
            node=self.node.name, artifact=art.key, expected_sha256=art.sha256,
            actual_sha256=actual, quarantined_to=moved))
