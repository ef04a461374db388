"""The holder's side of a pull: what this node may send for an artifact, and the sending.

``Sender.start`` answers a send request (``POST /v1/gossip/send``): it refuses what this
node cannot send (``SendRefused``: 404 no verified copy of that version, 503 paused or
its breaker to the asker open) and otherwise pushes the stored copy in a background task
through the one push path (``PushPath.push_once``, reason ``gossip``: bandwidth,
transfer tracking, receipts, DATA_SYNC_FAILED on failure). A node sends only a copy it can
stand behind: its own verified replica of exactly that version (the file under that
version's name, of the right size), or, as the artifact's origin, its source with the
identity on disk it had when it was hashed, not deleted (a database goes as its snapshot,
re-made when it was dropped). The receiver hashes the bytes again anyway (``PUT /v1/objects``); this check
keeps a node from offering what it does not have.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.copies import StoredCopies
from engine.daemons.breaker import Breakers
from engine.manifest import Artifact, ClusterManifest
from engine.pause import PauseGate
from engine.paths import DataRoot
from engine.push_path import PushPath
from engine.runtime import TaskSet
from engine.scanner import Scanner, is_database

log = logging.getLogger(__name__)

REASON = "gossip"
"""The reason every push this module starts is reported with."""


class SendRefused(Exception):
    """A send request this node turns down: ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredCopy:
    """What to send for one pull request."""

    file: Path
    """The bytes to push."""
    restore_snapshot: bool = False
    """An own database whose snapshot must be re-made (in a worker) before it is sent."""


def stored_copy(art: Artifact, *, node: str, data: DataRoot, manifest: ClusterManifest,
                copies: StoredCopies, scanner: Scanner) -> StoredCopy | None:
    """The copy of version ``art`` that ``node`` (this node) can send, or None when it holds
    none it can stand behind. Raises UnsafePath for a name that is not a plain relative path."""
    if art.origin == node and not art.superseded \
            and art.ident not in manifest.deleted_sources(node):
        try:
            st = data.source_path(art.data_type, art.path).stat()
        except FileNotFoundError:
            st = None
        if st is not None and Scanner.unchanged(art, st):
            source = scanner.push_source(art)
            return StoredCopy(source,
                              restore_snapshot=is_database(art.path) and not source.exists())
    copy = copies.path(art.ident)
    verified = [r for r in manifest.replicas(art)
                if r.node == node and r.verified_at is not None]
    try:
        size = copy.stat().st_size
    except FileNotFoundError:
        return None
    if not verified or size != art.size:
        return None  # no verified copy of this version (the receiver hashes it again anyway)
    return StoredCopy(copy)


class Sender:
    """Starts the pushes other nodes ask this node for; owns their tasks until ``stop``."""

    def __init__(self, node: str, *, data: DataRoot, manifest: ClusterManifest,
                 copies: StoredCopies, scanner: Scanner, pushes: PushPath, pause: PauseGate,
                 breakers: Breakers) -> None:
        self.node = node
        """This node's name."""
        self.data = data
        self.manifest = manifest
        self.copies = copies
        self.scanner = scanner
        self.pushes = pushes
        self.pause = pause
        self.breakers = breakers
        self.counts = {"sends": 0, "sends_refused": 0}
        """Send requests started and refused."""
        self.last_error: str | None = None
        """The last send that could not even start its push (a snapshot not re-made)."""
        self.tasks = TaskSet(f"gossip sender {node}")
        """The pushes under way (cancelled on ``stop``)."""

    def start(self, origin: str, data_type: str, path: str, sha256: str,
              to: str) -> dict[str, Any]:
        """Push the stored copy of ``origin``'s ``data_type/path`` version ``sha256`` to ``to``
        in the background, unless that push is already running; raises SendRefused."""
        art = self.manifest.get_artifact(data_type, path, origin, sha256)
        if art is None:
            raise self._refused(404, f"{self.node} knows no version {sha256[:12]} of"
                                f" {origin}'s {data_type}/{path}")
        if self.pause.paused:
            raise self._refused(503, f"{self.node} is paused: it sends nothing")
        if not self.breakers.allow(to):
            raise self._refused(503, f"{self.node}'s circuit breaker to {to} is open")
        copy = stored_copy(art, node=self.node, data=self.data, manifest=self.manifest,
                           copies=self.copies, scanner=self.scanner)
        if copy is None:
            raise self._refused(404, f"{self.node} holds no verified copy of {art.key}")
        running = (art.ident, to) in self.pushes.inflight
        if not running:
            self.tasks.spawn(self._send(art, to, copy), name=f"gossip-send:{art.key}->{to}")
            self.counts["sends"] += 1
        return {"node": self.node, "artifact": art.key, "to": to, "started": not running}

    async def stop(self) -> None:
        await self.tasks.close()

    def status(self) -> dict[str, Any]:
        return {**self.counts, "sending": len(self.tasks), "last_send_error": self.last_error}

    def _refused(self, status: int, message: str) -> SendRefused:
        self.counts["sends_refused"] += 1
        return SendRefused(status, message)

    async def _send(self, art: Artifact, to: str, copy: StoredCopy) -> None:
        if copy.restore_snapshot and \
                not await asyncio.to_thread(self.scanner.restore_snapshot, art):
            self.last_error = f"send of {art.key} to {to}: its snapshot cannot be re-made"
            log.warning("gossip %s: %s", self.node, self.last_error)
            return
        # push_once reports a failure itself (DATA_SYNC_FAILED, breaker); None: one running
        await self.pushes.push_once(art, to, REASON, source_file=copy.file)
