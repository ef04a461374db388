"""ReplicaVerifier: re-hash every copy this node stores; a copy that no longer matches stops counting.

One run (``POST /v1/control/verify``, the dashboard's ``v``) takes every copy this node
stores (``stored_copies``: received copies under ``<data_type>/@<origin>/``, every version)
and re-hashes the bytes now (``check_copy``, through the node's ``StoredCopies``, bounded by
its hash concurrency). Then:

* matches its version's SHA-256: the replica stays verified, with a fresh ``verified_at``;
* does not match: the file is moved to ``<data_root>/.ringsync/quarantine/`` (never outside
  the data root, never over an earlier quarantined file), its replica row is removed (the
  removal travels to the other nodes as a delta), REPLICA_QUARANTINED;
* missing or unreadable: its replica row is removed, REPLICA_QUARANTINED with no actual hash.

Every run ends with one REPLICAS_VERIFIED summary. One run at a time per node. The scrub
(``engine.daemons.scrub``) does the same check continuously, at a gentle rate, and repairs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from engine.copies import StoredCopies
from engine.errors import describe
from engine.events import Payload, ReplicasVerified
from engine.health import HealthCheckResult
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.runtime import TaskSet

log = logging.getLogger(__name__)


class VerificationRunning(RuntimeError):
    """A verification was requested while one is still running on the node."""


class ReplicaVerifier:
    """Runs verification on one node, in a background task ended with the node."""

    def __init__(self, node: str, *, manifest: ClusterManifest, copies: StoredCopies,
                 emit: Callable[[Payload], object]) -> None:
        self.node = node
        """This node's name."""
        self.manifest = manifest
        self.copies = copies
        self._emit = emit
        self._tasks = TaskSet(f"verification {node}")
        self._task: asyncio.Task[None] | None = None
        self.last: dict[str, Any] | None = None
        """The summary of the last finished run (the REPLICAS_VERIFIED payload)."""

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, by: str) -> dict[str, Any]:
        """Start a run over every replica this node holds; raises VerificationRunning."""
        if self.running:
            raise VerificationRunning(f"a verification is already running on {self.node}")
        held = stored_copies(self.node, self.manifest, self.copies)
        self._task = self._tasks.spawn(self._run(held, by), name=f"verify:{self.node}")
        return {"node": self.node, "replicas": len(held), "started": True}

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
        await self._tasks.close()
        self._task = None

    async def _run(self, held: list[tuple[Artifact, Replica]], by: str) -> None:
        started = time.monotonic()
        counts = {"matched": 0, "mismatched": 0, "missing": 0}
        for art, rep in held:
            counts[await check_copy(self.copies, art, rep)] += 1
        summary = ReplicasVerified(node=self.node, checked=len(held), **counts,
                                   seconds=round(time.monotonic() - started, 3), requested_by=by)
        self.last = summary.to_dict()
        self._emit(summary)


def stored_copies(node: str, manifest: ClusterManifest,
                  copies: StoredCopies) -> list[tuple[Artifact, Replica]]:
    """Every copy ``node`` (this node) stores (received from others, or its own pushed back
    to it), with its replica row; not the rows of its own sources, which the scanner keeps
    true."""
    out = []
    for art, rep in manifest.held_by(node):
        if art.origin == node and not copies.path(rep.ident).exists():
            continue
        out.append((art, rep))
    return out


async def check_copy(copies: StoredCopies, art: Artifact, rep: Replica) -> str:
    """Re-hash one stored copy now; ``matched``, ``mismatched`` (quarantined) or ``missing``
    (its row dropped). Either of the last two is a REPLICA_QUARANTINED event."""
    try:
        file = copies.path(rep.ident)
        actual, _at = await copies.verify(rep.ident, file, now=True)
    except Exception as exc:  # gone, unreadable or unusable: it cannot be vouched for
        if not isinstance(exc, FileNotFoundError):
            log.warning("cannot verify %s on %s: %s", art.label, copies.name, describe(exc))
        copies.quarantine(rep.ident, None, None)
        return "missing"
    if actual == rep.sha256:
        return "matched"
    log.warning("%s's copy of %s hashes to %s: quarantined", copies.name, art.label,
                actual[:12])
    copies.quarantine(rep.ident, file, actual)
    return "mismatched"
