"""Pulls: which artifacts a gossip node should ask a holder for now, and which asked-for
copies have arrived.

An artifact is wanted when another node originated it, routing says this node should hold
it (``SyncRouter.should_hold``: policy, disk, exclusions, placement), this node holds no
verified copy (no own replica row with the artifact's SHA-256, and no file under its name:
a different file there is never overwritten), no upload of it is arriving, and it was not
asked for within ``ASK_AGAIN_SECONDS`` of a source that is still a source (up, breaker
closed: a holder that died after accepting is replaced at once). The copy itself arrives
through the ordinary receive path (``PUT /v1/objects``), which hashes it and registers this
node's replica row; that row is how an arrival is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from engine.copies import StoredCopies
from engine.manifest import Artifact, ClusterManifest
from engine.paths import DataRoot, UnsafePath
from engine.router import SyncRouter

log = logging.getLogger(__name__)

ASK_AGAIN_SECONDS = 30.0
"""An artifact asked for is not asked for again before this (its push may be under way)."""
FORGET_SECONDS = 600.0
"""A request whose copy never arrived is forgotten after this (no longer awaited)."""


@dataclass
class PullRecord:
    """One request for a copy."""

    sha256: str
    """The content asked for."""
    source: str
    """The node asked to send it."""
    at: float
    """Monotonic time of the request."""


class Pulls:
    """The wanted list and the requests of one gossip node."""

    def __init__(self, node: str, *, manifest: ClusterManifest, router: SyncRouter,
                 data: DataRoot, copies: StoredCopies, uploads: Collection[Path],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        """This node's name."""
        self.manifest = manifest
        self.router = router
        self.data = data
        self.copies = copies
        self.uploads = uploads
        """The partial files of uploads arriving now (the node's live set)."""
        self.clock = clock
        self.requested: dict[tuple[str, str, str, str], PullRecord] = {}
        """Artifact version -> the latest request for it, until its copy arrives or is forgotten."""
        self.arrived = 0
        """Requested copies that arrived (this node's verified replica row appeared)."""

    def held(self) -> set[tuple[str, str, str, str]]:
        """Every version this node holds a verified copy of."""
        return {rep.ident for _art, rep in self.manifest.held_by(self.node)
                if rep.verified_at is not None}

    def wanted(self, limit: int) -> list[Artifact]:
        """Up to ``limit`` artifacts to ask for now, oldest first; counts arrivals first."""
        held = self.held()
        self._note_arrivals(held)
        name, now = self.node, self.clock()
        out: list[Artifact] = []
        for art in self.manifest.artifacts():
            if len(out) >= limit:
                break
            if art.origin == name or art.ident in held:
                continue
            asked = self.requested.get(art.ident)
            if asked is not None and asked.sha256 == art.sha256 \
                    and now - asked.at < ASK_AGAIN_SECONDS \
                    and asked.source in self.router.pull_sources(art):
                continue  # on its way, from a source still up
            if self.router.should_hold(art) and self._absent(art):
                out.append(art)
        return out

    def asked(self, art: Artifact, source: str) -> None:
        """``source`` accepted to send ``art`` here."""
        self.requested[art.ident] = PullRecord(art.sha256, source, self.clock())

    def _absent(self, art: Artifact) -> bool:
        """No file under the artifact's name and no upload of it arriving."""
        try:
            if self.copies.path(art.ident).exists():
                return False
            part = self.data.partial_path(art.data_type, art.path, art.sha256, origin=art.origin)
        except UnsafePath as exc:  # merge checks names on the way in; never expected here
            log.warning("gossip: not pulling %s: %s", art.key, exc)
            return False
        return part not in self.uploads

    def _note_arrivals(self, held: set[tuple[str, str, str, str]]) -> None:
        now = self.clock()
        for key, rec in list(self.requested.items()):
            if key in held:
                self.arrived += 1
                del self.requested[key]
            elif now - rec.at > FORGET_SECONDS:
                del self.requested[key]
