"""Recovery: bring under-replicated artifacts up to the required number of verified copies.

Required is ``push.min_copies_before_delete`` verified copies on nodes other than the
artifact's origin: the number the deletion invariant asks for. A run on a node looks at

* its own artifacts (origin == this node): too few verified holders besides itself ->
  push to the router's targets first (the coordinator), then to further replica targets
  (``SyncRouter.replica_targets``) until enough copies exist;
* on the coordinator, orphans: artifacts it holds a verified copy of whose origin
  membership reports ``down`` -> push its stored copy on until enough copies exist
  besides the origin (its own copy counts).

How many copies count depends on who asks. An operator's run (``request``) asks every
holder live (``live_shortfalls``: the vouch a deletion uses). Pressure pushes
(``shortfalls``) and the coordinator's re-homing every sync cycle (``rehome``) recount
(``engine.recount``): holders that are down never count, and a bounded number of the
versions the manifest calls sufficiently copied are asked live, so that a copy a holder
lost, let rot or took down with it is replaced without anyone asking.

A run starts now, whatever the backoff (like a priority sync), but not while the node is
paused: a paused node answers with what it found and starts nothing, and a run that is
paused midway starts no further push. Pushes go through the node's one push path
(``engine.push_path``: slot, breaker, transfer tracking, receipts, DATA_SYNC_FAILED) and
claim their (version, target) pairs in its in-flight set; a failed push to a further
replica target is not retried later, the run tries the next candidate instead.
Events: PRIORITY_SYNC_REQUESTED (the caller's reason), DATA_SYNC_STARTED when pushes are
scheduled, DATA_SYNC_COMPLETED per target, DATA_SYNC_FAILED per failed push, all with
that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.copies import StoredCopies
from engine.daemons.rehome import RemoteRehome
from engine.daemons.snapshots import SnapshotKeeper
from engine.errors import describe
from engine.events import DataSyncCompleted, DataSyncStarted, Payload, PrioritySyncRequested
from engine.health import HealthCheckResult
from engine.inflight import Claims
from engine.manifest import Artifact, ClusterManifest
from engine.pause import PauseGate
from engine.push_path import PushPath
from engine.recount import RECOUNT_BUDGET, Recount
from engine.router import SyncRouter
from engine.runtime import TaskSet
from engine.scanner import Scanner, is_database
from engine.vouches import VouchClient

log = logging.getLogger(__name__)

DEFAULT_REASON = "operator_recovery"
ORPHAN_RECOVERY = "orphan_games_recovery"
"""The seed's reason for a priority sync that is a recovery of orphaned games."""
Ident = tuple[str, str, str, str]
ERROR_HEALTH_SECONDS = 600.0
"""How long a background failure makes recovery unhealthy."""


@dataclass(frozen=True)
class Shortfall:
    """An artifact with fewer verified copies than required."""

    artifact: Artifact
    holders: frozenset[str]
    """Nodes whose verified copy counts (never the origin)."""
    first: tuple[str, ...] = ()
    """Targets to fill first: the router's, for this node's own artifacts."""
    stored_copy: bool = False
    """True for an orphan: the bytes pushed are this node's stored copy, not a source."""
    avoid: frozenset[str] = frozenset()
    """Holders asked live that did not vouch (unreachable, failing reads): not targets."""


@dataclass(frozen=True)
class Jobs:
    """A scheduled run: each shortfall with its targets, and the pairs the run claimed."""

    jobs: list[tuple[Shortfall, list[str]]]
    claims: Claims


class Recovery:
    """Recovery runs of one node; their tasks end at ``stop``."""

    def __init__(self, node: str, required: int, *, manifest: ClusterManifest,
                 router: SyncRouter, scanner: Scanner, vouches: VouchClient,
                 copies: StoredCopies, pushes: PushPath, pause: PauseGate,
                 snapshots: SnapshotKeeper, recount: Recount,
                 emit: Callable[[Payload], object],
                 is_down: Callable[[str], bool] | None = None,
                 remote: RemoteRehome | None = None) -> None:
        self.node = node
        self.required = required
        """Verified copies wanted on nodes other than the origin."""
        self.manifest = manifest
        self.router = router
        self.scanner = scanner
        self.vouches = vouches
        self.recount = recount
        """What is short for the runs that add copies (pressure pushes, re-homing)."""
        self.copies = copies
        self.pushes = pushes
        self.inflight = pushes.inflight
        self.pause = pause
        self.snapshots = snapshots
        self._emit = emit
        self._is_down = is_down
        """The coordinator's membership (None elsewhere: no orphans to look after)."""
        self.remote = remote
        """Orphans the coordinator does not hold: a holder is asked to send them on."""
        self._tasks = TaskSet(f"recovery on {node}", self._failed)
        self.last_error: str | None = None
        """The last background failure (a re-homing round or a run), until a round ends
        well."""
        self.last_error_at: float | None = None
        self._rehome_task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return bool(len(self._tasks))

    async def stop(self) -> None:
        await self._tasks.close()

    # -- what is missing --------------------------------------------------------------------
    def _mine(self) -> list[tuple[Artifact, set[str]]]:
        """Own versions whose bytes are here (a deleted source only when it is back), oldest
        first, each with the other holders the manifest remembers verified."""
        manifest, me = self.manifest, self.node
        holders = manifest.verified_holders_by_artifact(me)
        gone = manifest.deleted_sources(me)
        return [(art, holders.get(art.ident, set()) - {me})
                for art in manifest.artifacts(origin=me)
                if art.ident not in gone or self.scanner.source_back(art)]

    async def shortfalls(self, budget: int = 0,
                         known: Mapping[Ident, set[str]] | None = None) -> list[Shortfall]:
        """Own versions below the required copies, oldest first, as a recount finds them
        (``engine.recount``): short by what the manifest remembers of up holders, or short
        when their holders are asked live (at most ``budget`` asked; ``known``: live answers
        just taken). The pressure pushes' list."""
        counts = await self.recount.short(self._mine(), self.required, budget=budget,
                                          known=known)
        return [Shortfall(c.artifact, c.holders, tuple(self.router.get_sync_targets(
                    c.artifact.data_type, c.artifact.config_key, c.artifact.path)),
                    avoid=c.silent) for c in counts]

    async def live_shortfalls(self) -> list[Shortfall]:
        """``shortfalls``, counted by asking the holders now (``VouchClient``): every own
        version and every orphan this node holds, each with the holders that vouched. The
        manifest only says whom to ask."""
        me = self.node
        mine = [art for art, _ in self._mine()]
        orphans = [art for art, _ in self._orphans()]
        counted = await asyncio.gather(*(self.vouches.counted(a) for a in mine),
                                       *(self.vouches.counted(o, alongside=True)
                                         for o in orphans))
        found: list[Shortfall] = []
        for art, vouched in zip(mine, counted):
            held = {v.node for v in vouched} - {me}
            if len(held) < self.required:
                first = self.router.get_sync_targets(art.data_type, art.config_key, art.path)
                found.append(Shortfall(art, frozenset(held), tuple(first)))
        for orphan, vouched in zip(orphans, counted[len(mine):]):
            if not await self._own_copy_sound(orphan):
                continue  # quarantined: this node has nothing to push on
            held = {v.node for v in vouched} | {me}  # its own copy counted with them
            if len(held - {orphan.origin}) < self.required:
                found.append(Shortfall(orphan, frozenset(held), stored_copy=True))
        return found

    async def _own_copy_sound(self, art: Artifact) -> bool:
        """This node's stored copy of ``art``, hashed now, is that version (else it is
        quarantined and does not count)."""
        copies = self.copies
        file = copies.path(art.ident)
        try:
            actual, _ = await copies.verify(art.ident, file, now=True)
        except OSError:
            self.manifest.remove_replica(art.ident, self.node)
            return False
        if actual != art.sha256:
            copies.quarantine(art.ident, file, actual)
            return False
        return True

    def _orphans(self) -> list[tuple[Artifact, set[str]]]:
        """On the coordinator: versions it holds verified whose origin cannot push them any
        more (membership reports it down, it deleted that source, or the source changed
        since: a superseded version), each with the other holders the manifest remembers
        (never the origin, never this node)."""
        manifest, me, is_down = self.manifest, self.node, self._is_down
        if is_down is None:
            return []
        found: list[tuple[Artifact, set[str]]] = []
        held_here = {art.ident: art for art, rep in manifest.held_by(me)
                     if rep.verified_at is not None and art.origin != me}
        for origin in sorted({ident[0] for ident in held_here}):
            down = is_down(origin)
            gone = manifest.deleted_sources(origin)
            holders = manifest.verified_holders_by_artifact(origin, versions=True)
            for ident, art in held_here.items():
                if ident[0] == origin and (down or ident in gone or art.superseded):
                    found.append((art, holders.get(ident, set()) - {origin, me}))
        return found

    async def orphans(self, budget: int = 0) -> list[Shortfall]:
        """The orphans (``_orphans``) below the required copies besides their origin, this
        node's own copy counted with the others by the same rules (a holder on its root or,
        with ``distinct_providers``, its provider adds none), as a recount finds them (at
        most ``budget`` asked live)."""
        counts = await self.recount.short(self._orphans(), self.required, budget=budget,
                                          rotate=True, alongside=True)
        return [Shortfall(c.artifact, c.holders | {self.node}, stored_copy=True, avoid=c.silent)
                for c in counts]

    def plan(self, shortfall: Shortfall, busy: set[str]) -> list[str]:
        """Targets for the copies ``shortfall`` lacks; ``busy`` are targets a push of it is
        already under way to (they count as coming)."""
        art = shortfall.artifact
        coming = busy - shortfall.holders
        need = self.required - len(shortfall.holders) - len(coming)
        if need <= 0:
            return []
        taken = set(shortfall.holders) | busy | shortfall.avoid
        first = [t for t in shortfall.first if t not in taken][:need]
        more = self.router.replica_targets(art.data_type, art.path, need - len(first),
                                                exclude=taken | set(first), origin=art.origin)
        return first + more

    # -- a run ------------------------------------------------------------------------------
    async def request(self, reason: str = DEFAULT_REASON, by: str = "api") -> dict[str, Any]:
        """Find what is under-replicated and start pushing it in the background."""
        self._emit(PrioritySyncRequested(reason=reason, source_node=self.node, config_key=None))
        found = await self.live_shortfalls()
        run = self._schedule(found)
        scheduled = sum(len(targets) for _, targets in run.jobs)
        log.info("recovery on %s requested by %s (%s): %d under-replicated (asked live),"
                 " %d pushes%s", self.node, by, reason, len(found), scheduled,
                 " (paused)" if self.pause.paused else "")
        if run.jobs:
            self._tasks.spawn(self._run(run, reason), name=f"recovery:{self.node}")
        return {"node": self.node, "under_replicated": len(found), "scheduled": scheduled,
                "paused": self.pause.paused, "reason": reason}

    def rehome(self) -> bool:
        """On the coordinator, every sync cycle: push orphans (versions whose origin can no
        longer push them) that are below the required copies on from this node's stored
        copy, in the background; True when a round started. A round recounts
        (``engine.recount``, at most ``RECOUNT_BUDGET`` asked live) and asks holders to send
        the orphans it does not hold (``RemoteRehome``); one round at a time, while the
        pushes it starts run on beside later rounds. Without it a copy lost on a holder (a
        rolled-back disk, a quarantine, a holder gone for good) would stay lost until an
        operator asked."""
        if self._is_down is None or self.pause.paused:
            return False
        if self._rehome_task is not None and not self._rehome_task.done():
            return False
        self._rehome_task = self._tasks.spawn(self._rehome_round(), name=f"rehome:{self.node}")
        return True

    async def _rehome_round(self) -> None:
        """One round: the orphans held here (their pushes spawned, not awaited) and, through
        ``remote``, those only others hold. A half that fails cancels the other and the
        round's failure is logged and kept (``last_error``)."""
        async def held_here() -> None:
            run = self._schedule(await self.orphans(budget=RECOUNT_BUDGET))
            if run.jobs:
                self._tasks.spawn(self._run(run, ORPHAN_RECOVERY), name=f"rehome:{self.node}")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(held_here())
                if self.remote is not None:
                    group.create_task(self.remote.run())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure, logged and kept
        self.last_error = None

    def _failed(self, task: str, exc: Exception) -> None:
        self.last_error = f"{task}: {describe(exc)}"
        self.last_error_at = time.time()

    def status(self) -> dict[str, Any]:
        return {"running": len(self._tasks), "last_error": self.last_error,
                "last_error_at": self.last_error_at, "recount": self.recount.status()}

    def health_check(self) -> HealthCheckResult:
        """Unhealthy for ``ERROR_HEALTH_SECONDS`` after a background run or round failed
        (the failure stays in the details until a round ends well)."""
        at = self.last_error_at
        if self.last_error is not None and at is not None and \
                time.time() - at < ERROR_HEALTH_SECONDS:
            return HealthCheckResult(False, f"recovery failed: {self.last_error}",
                                     self.status())
        return HealthCheckResult(True, "recovery ok", self.status())

    async def replicate(self, found: list[Shortfall], reason: str, urgency: str = "normal",
                        limit: int | None = None) -> dict[str, list[Artifact]]:
        """Push the first ``limit`` of ``found`` (all when None) now and wait for them;
        returns what arrived, by target. Used by SyncPushDaemon under disk pressure."""
        run = self._schedule(found[:limit] if limit is not None else found)
        if not run.jobs:
            return {}
        return await self._run(run, reason, urgency)

    def _schedule(self, found: list[Shortfall]) -> Jobs:
        """Targets for each shortfall, claimed in the node's in-flight set for this run;
        none while the node is paused."""
        claims = Claims(self.inflight)
        if self.pause.paused:
            return Jobs([], claims)
        busy: dict[Any, set[str]] = {}
        for key, target in self.inflight:
            busy.setdefault(key, set()).add(target)
        jobs: list[tuple[Shortfall, list[str]]] = []
        for shortfall in found:
            ident = shortfall.artifact.ident
            wanted = self.plan(shortfall, busy.get(ident, set()))
            claimed = claims.claim((ident, t) for t in wanted)
            targets = [t for t in wanted if (ident, t) in claimed]
            if targets:
                jobs.append((shortfall, targets))
        return Jobs(jobs, claims)

    async def _run(self, run: Jobs, reason: str,
                   urgency: str = "normal") -> dict[str, list[Artifact]]:
        jobs, claims = run.jobs, run.claims
        started = time.monotonic()
        self._emit(DataSyncStarted(
            source=self.node, targets=sorted({t for _, ts in jobs for t in ts}),
            files=sum(len(ts) for _, ts in jobs),
            bytes=sum(s.artifact.size * len(ts) for s, ts in jobs),
            reason=reason, urgency=urgency, strategy=self.pushes.strategy))
        arrived: dict[str, list[Artifact]] = {}
        try:
            await asyncio.gather(*(self._recover(s, targets, claims, reason, arrived, urgency)
                                   for s, targets in jobs))
        finally:
            claims.release_all()  # whatever was not started stays free
        for target, arts in sorted(arrived.items()):
            self._emit(DataSyncCompleted(
                source=self.node, target=target, files=len(arts),
                bytes=sum(a.size for a in arts), artifacts=[a.key for a in arts[:20]],
                reason=reason, urgency=urgency, strategy=self.pushes.strategy,
                seconds=round(time.monotonic() - started, 3)))
        self.snapshots.drop_finished([s.artifact for s, _ in jobs if not s.stored_copy])
        return arrived

    async def _recover(self, shortfall: Shortfall, targets: list[str], claims: Claims,
                       reason: str, arrived: dict[str, list[Artifact]],
                       urgency: str = "normal") -> None:
        """Push one artifact to ``targets``; a failed further target is replaced by the next
        candidate until enough copies exist or none is left."""
        art, inflight = shortfall.artifact, self.inflight
        tried = set(targets)
        try:
            source = await self._source(shortfall, targets, reason)
            if source is None:
                return
            batch = targets
            while batch:
                results = await asyncio.gather(*(
                    self._attempt(shortfall, t, source, claims, reason, arrived, urgency)
                    for t in batch))
                failed = results.count(False)
                if not failed or self.pause.paused:
                    return
                busy = {t for key, t in inflight if key == art.ident}
                more = self.router.replica_targets(
                    art.data_type, art.path, failed,
                    exclude=tried | busy | shortfall.holders | shortfall.avoid,
                    origin=art.origin)
                tried.update(more)
                claimed = claims.claim((art.ident, t) for t in more)
                batch = [t for t in more if (art.ident, t) in claimed]
        finally:
            claims.release((art.ident, t) for t in tried)

    async def _attempt(self, shortfall: Shortfall, target: str, source: Path, claims: Claims,
                       reason: str, arrived: dict[str, list[Artifact]],
                       urgency: str = "normal") -> bool | None:
        """One push; None when it was not started because the node is paused."""
        art = shortfall.artifact
        try:
            if self.pause.paused:
                return None
            ok = await self.pushes.push(art, target, reason, source_file=source,
                                        retry=target in shortfall.first,
                                        urgent=urgency == "urgent")
        finally:
            claims.release(((art.ident, target),))
        if ok:
            arrived.setdefault(target, []).append(art)
        return ok

    async def _source(self, shortfall: Shortfall, targets: list[str], reason: str) -> Path | None:
        """Where the bytes are: the stored copy, the source, or a re-made database snapshot.
        None (each target reported failed) when an own database changed since it was
        registered: the scanner registers the new version and pushes that."""
        art = shortfall.artifact
        if shortfall.stored_copy:
            return self.copies.path(art.ident)
        source = await self.snapshots.source_for(art)
        if not is_database(art.path) or source.exists():
            return source
        for target in targets:
            self.pushes.failed(art.key, target, f"{art.key} changed or vanished since it was"
                               " registered; the scanner will register the new version",
                               True, reason, retry_key=None)
        return None
