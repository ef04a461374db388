"""Scrubber: every stored copy re-hashed in the background, at a gentle rate, and repaired.

A copy that was verified when it arrived can rot on disk afterwards; until someone reads it
again it would count as verified for ever. The scrubber walks every copy this node stores
(``verification.stored_copies``: every version of every origin) in passes, re-reading and
hashing each (``verification.check_copy``), paced to ``scrub.bytes_per_second`` (passes
follow each other), or by default one pass every ``scrub.pass_hours`` (24 h) paced to finish
within it (at least ``scrub.min_bytes_per_second``, so a small store finishes early and
waits for the next), like a ZFS scrub or a Ceph deep scrub. Hashing shares the
node's hash slots with vouches, so a scrub never starves a deletion.

A copy that no longer matches (or is gone) is quarantined, its replica row removed (a
delta: the coordinator and gossip peers stop counting it), REPLICA_QUARANTINED is emitted,
and the scrubber asks for the same version again from a good copy: the origin's source
when it still has it, else another holder (``POST /v1/gossip/send``; the sender pushes
through the one push path and this node's receiver verifies what arrives). A repair stays
pending until the copy is back here, verified: asked again when nobody could send it (a
DATA_SYNC_FAILED event, ``reason: scrub``, once, and ``/health`` unhealthy meanwhile) or
when an accepted send has not arrived within ``REASK_SECONDS``. Every pass ends with
REPLICAS_VERIFIED (``requested_by: scrub``).

The work is the supervised ``scrub`` service (``engine.runtime``): its ``step``, every
``IDLE_SECONDS``, runs a pass when one is due and then looks at the pending repairs. A
step that raises is the service's failure (reported and restarted by the supervisor); the
pass that failed is not retried before the next one is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from engine.config.schema import Scrub
from engine.copies import StoredCopies
from engine.daemons.verification import check_copy, stored_copies
from engine.errors import describe
from engine.events import DataSyncFailed, Payload, ReplicasVerified
from engine.health import HealthCheckResult
from engine.manifest import Artifact, ClusterManifest
from engine.peer_client import PeerClient, PeerError

log = logging.getLogger(__name__)

IDLE_SECONDS = 5.0
"""How often pending repairs are looked at (and the shortest pause between passes)."""
REASK_SECONDS = 60.0
"""A repair whose copy has not arrived this long after a node accepted is asked again."""
SEND_TIMEOUT_SECONDS = 10.0
"""One repair request (``POST /v1/gossip/send``) gives up after this."""


class Scrubber:
    """The background scrub of one node: its step, its progress and its last error."""

    interval = IDLE_SECONDS
    """Seconds from the end of one step of the ``scrub`` service to the next (``next_delay``)."""

    def __init__(self, node: str, settings: Scrub, *, coordinator: str, hosts: Collection[str],
                 manifest: ClusterManifest, copies: StoredCopies,
                 is_down: Callable[[str], bool], peers: PeerClient,
                 emit: Callable[[Payload], object],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        """This node's name."""
        self.config = settings
        self.coordinator = coordinator
        """The coordinator's name (asked last for a repair: it learns every holder)."""
        self.hosts = hosts
        """The cluster's host names (a node no longer among them is never asked)."""
        self.manifest = manifest
        self.copies = copies
        self.is_down = is_down
        self.peers = peers
        self._emit = emit
        self._clock = clock
        self._next_pass = 0.0
        """Monotonic time the next pass is due."""
        self.progress: dict[str, Any] = {
            "passes": 0, "position": 0, "copies": 0, "bytes_done": 0, "bytes_total": 0,
            "rate_bytes_per_second": 0, "pass_started_at": None, "last_pass_at": None,
            "last_pass_seconds": None}
        """Where the current pass is (copies and bytes) and when the last one ended."""
        self.findings = {"checked": 0, "matched": 0, "mismatched": 0, "missing": 0,
                         "repairs_asked": 0, "repairs_unsourced": 0, "repaired": 0}
        """Running counts since start."""
        self.repairs: dict[tuple[str, str, str, str], tuple[Artifact, float | None]] = {}
        """Versions whose copy here was quarantined and has not come back verified yet, with
        when a node last accepted to send it (None: nobody could be asked)."""
        self.last_error: str | None = None

    @property
    def enabled(self) -> bool:
        """``scrub.enabled``: the node runs the ``scrub`` service only then."""
        return self.config.enabled

    def rate(self, total_bytes: int) -> float:
        """Bytes per second for a pass over ``total_bytes``."""
        if self.config.bytes_per_second:
            return float(self.config.bytes_per_second)
        return max(float(self.config.min_bytes_per_second),
                   total_bytes / (self.config.pass_hours * 3600))

    def next_delay(self) -> float:
        """The pause after each step, however long it took (a pass may take hours)."""
        return self.interval

    async def step(self) -> None:
        """A pass when one is due, then the pending repairs (the ``scrub`` service's step).
        What raises is also kept as ``last_error`` (``/status``)."""
        try:
            now = self._clock()
            if now >= self._next_pass:
                # one pass per pass_hours (a small store is done early and waits); with a
                # fixed bytes_per_second the passes follow each other
                period = 0.0 if self.config.bytes_per_second else self.config.pass_hours * 3600
                self._next_pass = now + period
                await self.scrub_pass()
            await self.retry_repairs()
        except Exception as exc:
            self.last_error = describe(exc)
            raise

    async def scrub_pass(self) -> dict[str, int]:
        """One pass over every copy stored now; returns its counts."""
        held = stored_copies(self.node, self.manifest, self.copies)
        total = sum(art.size for art, _ in held)
        rate = self.rate(total)
        started = time.monotonic()
        counts = {"matched": 0, "mismatched": 0, "missing": 0}
        self.progress.update(position=0, copies=len(held), bytes_done=0, bytes_total=total,
                             rate_bytes_per_second=round(rate), pass_started_at=time.time())
        for i, (art, rep) in enumerate(held):
            began = time.monotonic()
            if not any(r.node == self.node for r in self.manifest.replicas(rep.ident)):
                continue  # dropped meanwhile (a vouch found it bad, a delta, a deletion)
            verdict = await check_copy(self.copies, art, rep)
            counts[verdict] += 1
            self.findings["checked"] += 1
            self.findings[verdict] += 1
            if verdict != "matched":
                await self.repair(art)
            self.progress.update(position=i + 1,
                                 bytes_done=self.progress["bytes_done"] + art.size)
            spent = time.monotonic() - began
            await asyncio.sleep(max(0.0, art.size / rate - spent))
        seconds = round(time.monotonic() - started, 3)
        self.progress.update(passes=self.progress["passes"] + 1, last_pass_at=time.time(),
                             last_pass_seconds=seconds)
        if held:
            self._emit(ReplicasVerified(node=self.node, checked=len(held), **counts,
                                        seconds=seconds, requested_by="scrub"))
        return counts

    # -- repair -----------------------------------------------------------------------------
    def repair_sources(self, art: Artifact) -> list[str]:
        """Whom to ask for a good copy of ``art``: its origin while it has the source, then
        the other nodes the manifest says hold it verified, then the coordinator (which
        knows, and may hold, more); never this node, a down node or one that is no longer
        in the config. Each answers 404 unless it holds a copy it can stand behind."""
        node, manifest = self.node, self.manifest
        out = []
        if (not art.superseded and art.origin != node
                and art.ident not in manifest.deleted_sources(art.origin)):
            out.append(art.origin)
        out += sorted(r.node for r in manifest.replicas(art)
                      if r.verified_at is not None and r.node not in (node, art.origin))
        coordinator = self.coordinator  # it learns every holder by deltas
        if coordinator not in out and coordinator != node:
            out.append(coordinator)
        return [n for n in out if n in self.hosts and not self.is_down(n)]

    async def retry_repairs(self) -> None:
        """Forget the repairs whose copy arrived (verified here); ask again for those nobody
        could send, and for those asked more than ``REASK_SECONDS`` ago (a push that failed)."""
        now = self._clock()
        for ident, (art, asked_at) in list(self.repairs.items()):
            if any(r.node == self.node and r.verified_at is not None
                   for r in self.manifest.replicas(ident)):
                del self.repairs[ident]
                self.findings["repaired"] += 1
            elif asked_at is None or now - asked_at >= REASK_SECONDS:
                await self.repair(art)

    async def repair(self, art: Artifact) -> bool:
        """Ask a good copy of ``art`` to be pushed here again; False (and an event, once per
        repair) when no node accepted. Either way it stays a pending repair until the copy is
        here, verified (``retry_repairs``)."""
        node = self.node
        first = art.ident not in self.repairs
        body = {"origin": art.origin, "data_type": art.data_type, "path": art.path,
                "sha256": art.sha256, "to": node}
        errors = []
        for source in self.repair_sources(art):
            try:
                await self.peers.post(source, "/v1/gossip/send", body,
                                      timeout=SEND_TIMEOUT_SECONDS, expect=(202,), parse=False)
            except PeerError as exc:
                errors.append(f"{source}: unreachable" if exc.status is None
                              else f"{source}: HTTP {exc.status}")
                continue
            self.findings["repairs_asked"] += 1
            self.repairs[art.ident] = (art, self._clock())
            log.info("scrub on %s: %s asked to send %s again", node, source, art.label)
            return True
        self.repairs[art.ident] = (art, None)
        error = (f"no good copy of {art.label} could be asked for"
                 f" ({'; '.join(errors) or 'no other holder known'}); asking again")
        self.last_error = error
        if not first:
            return False
        self.findings["repairs_unsourced"] += 1
        log.warning("scrub on %s: %s", node, error)
        self._emit(DataSyncFailed(source=node, target=node, artifact=art.key, error=error,
                                  attempt=0, retry_in_seconds=None, reason="scrub",
                                  strategy="scrub"))
        return False

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"enabled": self.config.enabled, **self.progress, "findings": self.findings,
                "repairs_pending": len(self.repairs),
                "repairs_unsourced": sum(1 for _, at in self.repairs.values() if at is None),
                "last_error": self.last_error}

    def health_check(self) -> HealthCheckResult:
        """Healthy unless a quarantined copy waits for a source to repair it from (a failing
        step is the supervisor's ``components`` part); a copy found bad is reported (it is
        quarantined, stops counting and is asked for again), which the message says."""
        f = self.findings
        unsourced = [a.label for a, at in self.repairs.values() if at is None]
        if unsourced:  # a copy lost here that nobody can send yet: one fault from losing it
            return HealthCheckResult(False, f"{len(unsourced)} quarantined copies wait for a"
                                     f" good copy to repair from: {', '.join(unsourced[:3])}",
                                     self.status())
        message = (f"scrub pass {self.progress['passes'] + 1}:"
                   f" {self.progress['position']}/{self.progress['copies']} copies;"
                   f" {f['mismatched']} rotted, {f['missing']} missing since start"
                   if self.config.enabled else "scrub disabled")
        return HealthCheckResult(True, message, self.status())
