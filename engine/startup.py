"""StartupChecks: what a node must put right at start, retried until it is done.

At every start a node (1) takes a new manifest incarnation, so its peers re-read it whole
and forget what they believed of it (it may have been restored or rolled back); (2)
finishes or undoes deletions a crash interrupted (``engine.deletion_journal``); (3)
reconciles its manifest with the copies on its disk (``StoredCopies.reconcile``). Each of
these writes to the data root, and a node whose disk is full must still start: its copies
still have to be vouched for and served. So a step that fails (ENOSPC, an I/O error) is
reported (DATA_SYNC_FAILED ``reason: startup``, a log line, ``/health`` unhealthy naming the
step) and tried again every capacity refresh until it succeeds; the steps stay in order.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from engine import deletion_journal
from engine.copies import StoredCopies
from engine.errors import describe
from engine.events import DataSyncFailed, Payload
from engine.health import HealthCheckResult
from engine.manifest import ClusterManifest
from engine.paths import DataRoot

log = logging.getLogger(__name__)


class StartupChecks:
    """The start-time steps of one node, in order, each done once."""

    def __init__(self, name: str, data: DataRoot, manifest: ClusterManifest,
                 copies: StoredCopies, emit: Callable[[Payload], Any]) -> None:
        self.name = name
        """The node starting."""
        self.data = data
        self.manifest = manifest
        self.copies = copies
        self._emit = emit
        self.steps: list[tuple[str, Callable[[], Any]]] = [
            ("new incarnation", manifest.new_incarnation),
            ("interrupted deletions", self._deletions),
            ("reconcile with the disk", self._reconcile)]
        """What is still to do, in order."""
        self.last_error: str | None = None

    @property
    def done(self) -> bool:
        return not self.steps

    def run(self) -> bool:
        """Do what is left, in order; stops at the first step that fails. True when done."""
        while self.steps:
            name, step = self.steps[0]
            try:
                step()
            except (OSError, sqlite3.Error) as exc:
                error = f"{name} failed: {describe(exc)} (tried again shortly)"
                if error != self.last_error:
                    log.error("%s: %s", self.name, error)
                    self._report(error)
                self.last_error = error
                return False
            self.steps.pop(0)
        self.last_error = None
        return True

    def _deletions(self) -> None:
        for line in deletion_journal.recover(self.data, self.manifest):
            log.warning("interrupted deletion: %s", line)
            if "quarantine" in line:  # its name was taken meanwhile: kept, and said so
                self._report(f"interrupted deletion: {line}")

    def _reconcile(self) -> None:
        counts = self.copies.reconcile()
        if any(counts.values()):
            log.warning("manifest reconciled with the disk: %s", counts)

    def _report(self, error: str) -> None:
        try:
            self._emit(DataSyncFailed(
                source=self.name, target=self.name, artifact="", error=error,
                attempt=0, retry_in_seconds=None, reason="startup", strategy="startup"))
        except (OSError, sqlite3.Error):
            log.exception("cannot record the startup failure as an event")

    def health_check(self) -> HealthCheckResult:
        if self.done:
            return HealthCheckResult(True, "start-up checks done", {})
        return HealthCheckResult(False, self.last_error or f"{self.steps[0][0]} pending",
                                 {"pending": [name for name, _ in self.steps]})
