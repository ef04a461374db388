"""Recovery: bring under-replicated artifacts up to the required number of verified copies.

Required is ``push.min_copies_before_delete`` verified copies on nodes other than the
artifact's origin: the number the deletion invariant asks for. A run on a node looks at

* its own artifacts (origin == this node): too few verified holders besides itself ->
  push to the router's targets first (the coordinator), then to further replica targets
  (``SyncRouter.replica_targets``) until enough copies exist;
* on the coordinator, orphans: artifacts it holds a verified copy of whose origin
  membership reports ``down`` -> push its stored copy on until enough copies exist
  besides the origin (its own copy counts).

A run starts now, whatever the backoff (like a priority sync), but not while the node is
paused: a paused node answers with what it found and starts nothing, and a run that is
paused midway starts no further push. Pushes go through ``AutoSyncDaemon._push_one`` (the
one push path: transfer tracking, bandwidth, receipts, DATA_SYNC_FAILED); a failed push to
a further replica target is not retried later, the run tries the next candidate instead.
Events: PRIORITY_SYNC_REQUESTED (the caller's reason), DATA_SYNC_STARTED when pushes are
scheduled, DATA_SYNC_COMPLETED per target, DATA_SYNC_FAILED per failed push, all with
that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.daemons.rehome import RemoteRehome
from engine.events import DataSyncCompleted, DataSyncStarted, PrioritySyncRequested
from engine.manifest import Artifact
from engine.scanner import is_database

if TYPE_CHECKING:
    from engine.daemons.auto_sync import AutoSyncDaemon

log = logging.getLogger(__name__)

DEFAULT_REASON = "operator_recovery"
ORPHAN_RECOVERY = "orphan_games_recovery"
"""The seed's reason for a priority sync that is a recovery of orphaned games."""


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


class Recovery:
    """Recovery runs of one node's AutoSyncDaemon; their tasks end with the daemon."""

    def __init__(self, daemon: "AutoSyncDaemon") -> None:
        self.daemon = daemon
        self.node = daemon.node
        self.required = self.node.config.push.min_copies_before_delete
        """Verified copies wanted on nodes other than the origin."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.remote = RemoteRehome(self.node, self.required)
        """Orphans the coordinator does not hold: a holder is asked to send them on."""
        self._remote_task: asyncio.Task[int] | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def stop(self) -> None:
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what is missing --------------------------------------------------------------------
    def shortfalls(self) -> list[Shortfall]:
        """Own artifacts (and, on the coordinator, orphans) below the required copies, oldest
        first. An own artifact whose source this node deleted has no bytes here to push."""
        manifest, me = self.node.manifest, self.node.name
        found: list[Shortfall] = []
        holders = manifest.verified_holders_by_artifact(me)
        gone = manifest.deleted_sources(me)
        for art in manifest.artifacts(origin=me):
            held = holders.get(art.ident, set()) - {me}
            if len(held) >= self.required:  # only then can the counting rules matter
                held = self.node.vouches.remembered(art, held)
            if len(held) < self.required and (art.ident not in gone
                                               or self.daemon.scanner.source_back(art)):
                first = self.node.router.get_sync_targets(art.data_type, art.config_key, art.path)
                found.append(Shortfall(art, frozenset(held), tuple(first)))
        return found + self.orphans()

    async def live_shortfalls(self) -> list[Shortfall]:
        """``shortfalls``, counted by asking the holders now (``VouchClient``): every own
        version and every orphan this node holds, each with the holders that vouched. The
        manifest only says whom to ask."""
        manifest, me = self.node.manifest, self.node.name
        gone = manifest.deleted_sources(me)
        mine = [a for a in manifest.artifacts(origin=me)
                if a.ident not in gone or self.daemon.scanner.source_back(a)]
        orphans = self.orphans(everything=True)
        counted = await asyncio.gather(*(self.node.vouches.counted(a) for a in mine),
                                       *(self.node.vouches.counted(o.artifact) for o in orphans))
        found: list[Shortfall] = []
        for art, vouched in zip(mine, counted):
            held = {v.node for v in vouched} - {me}
            if len(held) < self.required:
                first = self.node.router.get_sync_targets(art.data_type, art.config_key, art.path)
                found.append(Shortfall(art, frozenset(held), tuple(first)))
        for orphan, vouched in zip(orphans, counted[len(mine):]):
            if not await self._own_copy_sound(orphan.artifact):
                continue  # quarantined: this node has nothing to push on
            held = {v.node for v in vouched} | {me}
            if len(held - {orphan.artifact.origin}) < self.required:
                found.append(Shortfall(orphan.artifact, frozenset(held), stored_copy=True))
        return found

    async def _own_copy_sound(self, art: Artifact) -> bool:
        """This node's stored copy of ``art``, hashed now, is that version (else it is
        quarantined and does not count)."""
        copies = self.node.copies
        file = copies.path(art.ident)
        try:
            actual, _ = await copies.verify(art.ident, file, now=True)
        except OSError:
            self.node.manifest.remove_replica(art.ident, self.node.name)
            return False
        if actual != art.sha256:
            copies.quarantine(art.ident, file, actual)
            return False
        return True

    def orphans(self, everything: bool = False) -> list[Shortfall]:
        """On the coordinator: versions it holds verified whose origin cannot push them any
        more (membership reports it down, it deleted that source, or the source changed
        since: a superseded version) and that have fewer than the required copies besides
        the origin (``everything``: whatever the manifest says of their copies)."""
        manifest, me, membership = self.node.manifest, self.node.name, self.node.membership
        if membership is None:
            return []
        found: list[Shortfall] = []
        held_here = {art.ident: art for art, rep in manifest.held_by(me)
                     if rep.verified_at is not None and art.origin != me}
        origins = sorted({ident[0] for ident in held_here})
        for origin in origins:
            down = membership.is_down(origin)
            gone = manifest.deleted_sources(origin)
            holders = manifest.verified_holders_by_artifact(origin, versions=True)
            for ident, art in held_here.items():
                if ident[0] != origin or not (down or ident in gone or art.superseded):
                    continue
                held = holders.get(ident, set()) - {origin}
                if len(held) >= self.required:  # the counting rules (roots, ephemeral hosts)
                    held = self.node.vouches.remembered(art, held - {me}) | {me}
                if everything or len(held) < self.required:
                    found.append(Shortfall(art, frozenset(held | {me}), stored_copy=True))
        return found

    def plan(self, shortfall: Shortfall, busy: set[str]) -> list[str]:
        """Targets for the copies ``shortfall`` lacks; ``busy`` are targets a push of it is
        already under way to (they count as coming)."""
        art = shortfall.artifact
        coming = busy - shortfall.holders
        need = self.required - len(shortfall.holders) - len(coming)
        if need <= 0:
            return []
        taken = set(shortfall.holders) | busy
        first = [t for t in shortfall.first if t not in taken][:need]
        more = self.node.router.replica_targets(art.data_type, art.path, need - len(first),
                                                exclude=taken | set(first), origin=art.origin)
        return first + more

    # -- a run ------------------------------------------------------------------------------
    async def request(self, reason: str = DEFAULT_REASON, by: str = "api") -> dict[str, Any]:
        """Find what is under-replicated and start pushing it in the background."""
        node, daemon = self.node, self.daemon
        node.events.emit(PrioritySyncRequested(reason=reason, source_node=node.name,
                                               config_key=None))
        found = await self.live_shortfalls()
        jobs = self._schedule(found)
        scheduled = sum(len(targets) for _, targets in jobs)
        log.info("recovery on %s requested by %s (%s): %d under-replicated (asked live),"
                 " %d pushes%s", node.name, by, reason, len(found), scheduled,
                 " (paused)" if daemon.paused else "")
        if jobs:
            task = asyncio.create_task(self._run(jobs, reason), name=f"recovery:{node.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {"node": node.name, "under_replicated": len(found), "scheduled": scheduled,
                "paused": daemon.paused, "reason": reason}

    def rehome(self) -> int:
        """On the coordinator, every sync cycle: push orphans (versions whose origin can no
        longer push them) that are below the required copies on from this node's stored
        copy, in the background; returns the pushes started. Without it a copy lost on a
        holder (a rolled-back disk, a quarantine) would stay lost until an operator asked."""
        if self.node.membership is None or self.daemon.paused:
            return 0
        jobs = self._schedule(self.orphans())
        if jobs:
            task = asyncio.create_task(self._run(jobs, ORPHAN_RECOVERY),
                                       name=f"rehome:{self.node.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._remote_task is None or self._remote_task.done():  # orphans held elsewhere
            self._remote_task = asyncio.create_task(self.remote.run(),
                                                    name=f"rehome-remote:{self.node.name}")
            self._tasks.add(self._remote_task)
            self._remote_task.add_done_callback(self._tasks.discard)
        return sum(len(targets) for _, targets in jobs)

    async def replicate(self, found: list[Shortfall], reason: str, urgency: str = "normal",
                        limit: int | None = None) -> dict[str, list[Artifact]]:
        """Push the first ``limit`` of ``found`` (all when None) now and wait for them;
        returns what arrived, by target. Used by SyncPushDaemon under disk pressure."""
        jobs = self._schedule(found[:limit] if limit is not None else found)
        if not jobs:
            return {}
        return await self._run(jobs, reason, urgency)

    def _schedule(self, found: list[Shortfall]) -> list[tuple[Shortfall, list[str]]]:
        """Targets for each shortfall, reserved in the daemon's in-flight set; none while
        the node is paused. Emits DATA_SYNC_STARTED when anything is scheduled."""
        daemon = self.daemon
        if daemon.paused:
            return []
        busy: dict[str, set[str]] = {}
        for key, target in daemon.inflight:
            busy.setdefault(key, set()).add(target)
        jobs: list[tuple[Shortfall, list[str]]] = []
        for shortfall in found:
            targets = self.plan(shortfall, busy.get(shortfall.artifact.ident, set()))
            if targets:
                jobs.append((shortfall, targets))
                daemon.inflight.update((shortfall.artifact.ident, t) for t in targets)
        return jobs

    async def _run(self, jobs: list[tuple[Shortfall, list[str]]], reason: str,
                   urgency: str = "normal") -> dict[str, list[Artifact]]:
        started = time.monotonic()
        self.node.events.emit(DataSyncStarted(
            source=self.node.name, targets=sorted({t for _, ts in jobs for t in ts}),
            files=sum(len(ts) for _, ts in jobs),
            bytes=sum(s.artifact.size * len(ts) for s, ts in jobs),
            reason=reason, urgency=urgency, strategy=self.daemon.strategy))
        arrived: dict[str, list[Artifact]] = {}
        try:
            await asyncio.gather(*(self._recover(s, targets, reason, arrived, urgency)
                                   for s, targets in jobs))
        finally:
            for s, targets in jobs:  # whatever was not started stays free
                self.daemon.inflight.difference_update((s.artifact.ident, t) for t in targets)
        for target, arts in sorted(arrived.items()):
            self.node.events.emit(DataSyncCompleted(
                source=self.node.name, target=target, files=len(arts),
                bytes=sum(a.size for a in arts), artifacts=[a.key for a in arts[:20]],
                reason=reason, urgency=urgency, strategy=self.daemon.strategy,
                seconds=round(time.monotonic() - started, 3)))
        self.daemon._drop_finished_snapshots([s.artifact for s, _ in jobs if not s.stored_copy])
        return arrived

    async def _recover(self, shortfall: Shortfall, targets: list[str], reason: str,
                       arrived: dict[str, list[Artifact]], urgency: str = "normal") -> None:
        """Push one artifact to ``targets``; a failed further target is replaced by the next
        candidate until enough copies exist or none is left."""
        art, inflight = shortfall.artifact, self.daemon.inflight
        tried = set(targets)
        try:
            source = await self._source(shortfall, targets, reason)
            if source is None:
                return
            batch = targets
            while batch:
                results = await asyncio.gather(*(
                    self._attempt(shortfall, t, source, reason, arrived, urgency)
                    for t in batch))
                failed = results.count(False)
                if not failed or self.daemon.paused:
                    return
                busy = {t for key, t in inflight if key == art.ident}
                batch = self.node.router.replica_targets(
                    art.data_type, art.path, failed, exclude=tried | busy | shortfall.holders,
                    origin=art.origin)
                tried.update(batch)
                inflight.update((art.ident, t) for t in batch)
        finally:
            inflight.difference_update((art.ident, t) for t in tried)

    async def _attempt(self, shortfall: Shortfall, target: str, source: Path, reason: str,
                       arrived: dict[str, list[Artifact]], urgency: str = "normal") -> bool | None:
        """One push; None when it was not started because the node is paused."""
        art = shortfall.artifact
        try:
            if self.daemon.paused:
                return None
            ok = await self.daemon._push_one(art, target, reason, source_file=source,
                                             retry=target in shortfall.first,
                                             urgent=urgency == "urgent")
        finally:
            self.daemon.inflight.discard((art.ident, target))
        if ok:
            arrived.setdefault(target, []).append(art)
        return ok

    async def _source(self, shortfall: Shortfall, targets: list[str], reason: str) -> Path | None:
        """Where the bytes are: the stored copy, the source, or a re-made database snapshot.
        None (each target reported failed) when an own database changed since it was
        registered: the scanner registers the new version and pushes that."""
        art = shortfall.artifact
        if shortfall.stored_copy:
            return self.node.copies.path(art.ident)
        scanner = self.daemon.scanner
        source = scanner.push_source(art)
        if not is_database(art.path) or source.exists():
            return source
        if await asyncio.to_thread(scanner.restore_snapshot, art):
            return source
        for target in targets:
            self.daemon._failed(art, target, f"{art.key} changed or vanished since it was"
                                " registered; the scanner will register the new version",
                                True, reason, retry=False)
        return None
