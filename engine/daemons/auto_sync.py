"""AutoSyncDaemon: finds finished artifacts and pushes them where the router says.

One cycle: scan the data root (worker thread) -> register new or changed artifacts
in the manifest -> for each artifact ask the router for targets and skip targets
that already hold a verified copy -> push the rest with bounded concurrency ->
record each target's verification as a receipt. Failures back off exponentially
with jitter per (artifact, target); every failure is a DATA_SYNC_FAILED event.

Strategies (the router decides targets per strategy, ``engine.router``):
``push_from_generator`` (the default: to the coordinator), ``broadcast`` (its data types to
every eligible node), ``ephemeral`` (write-through to a durable node on a 5 s interval) and
``gossip`` (nothing pushed: peers pull, ``engine.daemons.gossip``). Every push goes through
the node's one push path (``engine.push_path``: slot, breaker, transfer, receipt).

The daemon is the supervised ``auto_sync`` service (``step``): woken by ``sync_now``, else
after its interval or when the soonest retry is due. It is built from what it uses: the
manifest, router, scanner, push path, pause gate, the write-through queue (ephemeral) and
the coordinator's orphan re-homing (``rehome``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.config.schema import AutoSync
from engine.daemons.snapshots import SnapshotKeeper
from engine.daemons.write_through import FINAL_PUSH_PAUSE_SECONDS, WriteThrough, final_candidates
from engine.errors import describe
from engine.events import DataSyncCompleted, DataSyncFailed, DataSyncStarted, Payload
from engine.health import HealthCheckResult
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.pause import PauseGate
from engine.push_path import PushPath
from engine.router import SyncRouter
from engine.scanner import Scanner, UnreadableArtifact, is_database

log = logging.getLogger(__name__)

SUPPORTED_STRATEGIES = ("push_from_generator", "gossip", "broadcast", "ephemeral")


@dataclass
class CycleReport:
    """What one cycle did."""

    scanned: int = 0
    pushed: int = 0
    bytes: int = 0
    failed: int = 0
    skipped_paused: bool = False
    by_target: dict[str, list[Artifact]] = field(default_factory=dict)


class AutoSyncDaemon:
    """Automated sync for one node."""

    def __init__(self, node: str, strategy: str, settings: AutoSync, *,
                 manifest: ClusterManifest, router: SyncRouter, scanner: Scanner,
                 pushes: PushPath, pause: PauseGate, snapshots: SnapshotKeeper,
                 emit: Callable[[Payload], object], root_id: str,
                 write_through: WriteThrough | None = None,
                 rehome: Callable[[], object] = lambda: None) -> None:
        if strategy not in SUPPORTED_STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not available yet "
                             f"(available: {', '.join(SUPPORTED_STRATEGIES)})")
        self.node = node
        """This node's name."""
        self.strategy = strategy
        """The configured strategy name."""
        self.interval = (min(settings.interval_seconds, settings.ephemeral_interval_seconds)
                         if strategy == "ephemeral" else settings.interval_seconds)
        """Seconds between cycles when nothing wakes the daemon earlier."""
        self.enabled = settings.enabled
        """False when RINGRIFT_AUTO_SYNC_ENABLED=false: only explicit syncs run."""
        self.manifest = manifest
        self.router = router
        self.scanner = scanner
        self.pushes = pushes
        """The node's one push path (its limiter, in-flight set, retries, breakers)."""
        self.pause = pause
        self.snapshots = snapshots
        self._emit = emit
        self._root_id = root_id
        self._rehome = rehome
        self.write_through = write_through
        """The ephemeral strategy's durable queue and safety check (None for the others)."""
        self.urgent = write_through is not None
        """Every push of this daemon is urgent (ephemeral: the host may vanish any moment)."""
        self.wakeup = asyncio.Event()
        """Set by ``sync_now``: the ``auto_sync`` service runs its next step at once."""
        self._priority: tuple[str, str | None] | None = None
        self._drained = write_through is None
        self._stopped = False
        self._unreadable_seen: dict[str, tuple[int, int] | None] = {}
        self.cycles = 0
        self.last_cycle_at: float | None = None
        self.last_error: str | None = None
        self.backlog_files = 0
        """Pushes still to make (as of the last cycle), whatever their backoff."""
        self.backlog_bytes = 0
        self.unplaced = 0
        """Own artifacts that routing wants elsewhere and no other node holds verified."""
        self.waiting_since: float | None = None
        """Unix time since which ``unplaced`` has not been 0 (None: it is 0)."""
        self._ok_at = 0.0
        self._problem_at = 0.0
        self._wanted: set[object] = set()
        """(ident, target) pairs routing sends to now (as of the last cycle): only their
        retries wake the daemon early."""

    @property
    def paused(self) -> bool:
        return self.pause.paused

    @property
    def totals(self) -> dict[str, int]:
        """Running counts since start (pushes: every push of this node)."""
        return {"cycles": self.cycles, **self.pushes.totals}

    # -- the auto_sync service --------------------------------------------------------------
    def sync_now(self, reason: str, config_key: str | None = None) -> None:
        """Run a cycle now; artifacts of ``config_key`` go first and skip their backoff."""
        self._priority = (reason, config_key)
        self.wakeup.set()

    async def step(self) -> None:
        """One step of the ``auto_sync`` service: what the write-through queue held before
        this start goes first, then a cycle (an interval one unless ``sync_now`` asked)."""
        if self._stopped:
            return
        if not self._drained:
            self._drained = True
            await self._drain()
        priority, self._priority = self._priority, None
        if self.enabled or priority:
            await self.run_cycle(*(priority or ("interval", None)))

    def next_delay(self) -> float:
        """Seconds until the next cycle: the interval, or sooner when a retry is due."""
        now = time.monotonic()
        waits = [s.next_at - now for k, s in self.pushes.retries.items()
                 if not s.permanent and k in self._wanted]  # a push a cycle would make
        return max(0.05, min([self.interval, *waits]))

    async def _drain(self) -> None:
        """At start: push what the write-through queue holds (a restart after SIGKILL)
        before any scan."""
        assert self.write_through is not None
        if not self.enabled or not len(self.write_through.queue):
            return
        log.info("write-through: %d artifacts queued on %s from before this start",
                 len(self.write_through.queue), self.node)
        await self.run_cycle("write_through_restart", scan=False)

    async def final_push(self, seconds: float) -> None:
        """Graceful stop (SIGTERM) of an ephemeral node: no more interval cycles; queue every
        file no process holds open and push the queue until it is empty or ``seconds`` have
        passed; what is left stays queued for the next start. Other strategies: nothing."""
        wt = self.write_through
        if wt is None:
            return
        self._stopped = True
        me = self.node
        if self.paused or not self.enabled:
            log.warning("final push skipped on %s (sync %s): %d artifacts stay queued", me,
                        "paused" if self.paused else "disabled", len(wt.queue))
            return
        started, outcome, safe_before = time.monotonic(), "done", wt.safe_total
        try:
            async with asyncio.timeout(seconds):
                await self.scan(final=True)
                wt.enqueue_unsafe()
                while len(wt.queue):
                    report = await self.run_cycle("final_push", scan=False)
                    if len(wt.queue) and not report.pushed:
                        await asyncio.sleep(FINAL_PUSH_PAUSE_SECONDS)
        except TimeoutError:
            outcome = "deadline reached"
        except Exception:  # stopping goes on; what is left stays queued and is logged below
            outcome = "failed"
            log.exception("final push failed on %s", me)
        left = [e.key for e in wt.queue.pending()]
        log.log(logging.INFO if outcome == "done" else logging.WARNING,
                "final push on %s, %s after %.1fs: %d artifacts made safe, %d not%s", me,
                outcome, time.monotonic() - started, wt.safe_total - safe_before, len(left),
                f" (they stay queued: {', '.join(left[:20])})" if left else "")

    def close(self) -> None:
        self._stopped = True
        if self.write_through is not None:
            self.write_through.close()

    # -- one cycle --------------------------------------------------------------------------
    async def scan(self, final: bool = False) -> int:
        """Register finished artifacts that are new or changed; returns how many. ``final``
        (an ephemeral node stopping): a file no process holds open counts as finished now."""
        manifest = self.manifest
        known: dict[tuple[str, str], tuple[int | None, ...]] = {
            (a.data_type, a.path): a.source_identity
            for a in manifest.artifacts(origin=self.node)}
        if final:
            candidates = await asyncio.to_thread(final_candidates, self.scanner, known)
        else:
            candidates = await asyncio.to_thread(self.scanner.candidates, known)
        for name, why in list(self.scanner.refused.items()):  # names not valid UTF-8
            self._unreadable(name, None, why)
        registered = 0
        for cand in candidates:
            try:
                art = await asyncio.to_thread(self.scanner.prepare, cand)
            except (UnreadableArtifact, OSError, UnicodeError) as exc:
                self._unreadable(f"{cand.data_type}/{cand.path}", (cand.size, cand.mtime_ns),
                                 exc)
                continue
            if art is None:
                continue
            # a changed source (or a name reused after a deletion) is a new version; the
            # same bytes under a new identity (a rename, a put-back) only update the identity
            if manifest.upsert_artifact(art):
                registered += 1
                if not is_database(art.path):  # the file itself is the content: a verified copy
                    manifest.set_replica(Replica(art.data_type, art.path, self.node,
                                                 art.sha256, time.time(), origin=art.origin,
                                                 root_id=self._root_id))
        return registered

    def _unreadable(self, key: str, version: tuple[int, int] | None,
                    exc: Exception | str) -> None:
        """Report a file that cannot be prepared (``key`` is ``<data_type>/<path>``), once per
        ``version`` of it (size, mtime_ns), or a name the scanner refused (``version`` None:
        once per name); keep scanning."""
        if key in self._unreadable_seen and self._unreadable_seen[key] == version:
            return
        self._unreadable_seen[key] = version
        self.last_error = f"{key}: {exc}"
        log.warning("%s on %s: %s", "refused file name" if version is None else "cannot sync",
                    self.node, self.last_error)
        self._emit(DataSyncFailed(
            source=self.node, target=self.node, artifact=key, error=str(exc),
            attempt=0, retry_in_seconds=None, reason="scan", strategy=self.strategy))

    def pending(self, config_key: str | None = None,
                override_backoff: bool = False) -> list[tuple[Artifact, str]]:
        """(artifact, target) pairs that still need a push, priority config first."""
        return self._survey(config_key, override_backoff)[0]

    def _survey(self, config_key: str | None = None, override_backoff: bool = False,
                routed: set[object] | None = None) -> tuple[list[tuple[Artifact, str]], int, int]:
        """One pass over this node's artifacts: the pushes still to make (priority config
        first), how many artifacts no other node holds verified that routing wants
        elsewhere (``unplaced``), and how many of those have every target held back.
        ``routed`` collects the (ident, target) pairs routing names now (held ones too)."""
        manifest, router, me = self.manifest, self.router, self.node
        holders = manifest.verified_holders_by_artifact(me)
        gone = manifest.deleted_sources(me)
        work: list[tuple[Artifact, str]] = []
        unplaced = held_back = 0
        for art in manifest.artifacts(origin=me):
            if art.ident in gone and not self.scanner.source_back(art):
                continue  # no bytes here any more; holders re-home it (Recovery.orphans)
            held = holders.get(art.ident, set())
            route = router.route(art.data_type, art.config_key, art.path, urgent=self.urgent,
                                 origin=art.origin)
            if art.ident not in gone and not held - {me} and (route.targets or route.held):
                unplaced += 1
                held_back += not route.targets
            if routed is not None:
                routed.update((art.ident, t) for t in (*route.targets, *route.held))
            for target in route.targets:
                if target in held or (art.ident, target) in self.pushes.inflight:
                    continue
                state = self.pushes.state((art.ident, target))
                forced = override_backoff and (config_key is None or art.config_key == config_key)
                if state and state.permanent:
                    continue
                if forced or self.pushes.ready((art.ident, target)):
                    work.append((art, target))
        work.sort(key=lambda item: (config_key is not None and item[0].config_key != config_key,
                                    item[0].mtime))
        return work, unplaced, held_back

    def _count_backlog(self) -> None:
        """Refresh the figures /status and /health show (once per cycle): the backlog, and
        the artifacts waiting to be placed; a cycle where such an artifact has every target
        held back (down, breaker open, full) is a problem, like a failed push."""
        routed: set[object] = set()
        backlog, unplaced, held_back = self._survey(override_backoff=True, routed=routed)
        self._wanted = {(a.ident, t) for a, t in backlog}
        # retries of own pushes routing no longer asks for (a superseded version, a target
        # dropped) would wake the daemon for nothing, for ever
        self.pushes.forget(lambda k: not _is_pair(k) or k in routed
                           or k[0][0] != self.node)  # type: ignore[index]
        self.backlog_files = len(backlog)
        self.backlog_bytes = sum(a.size for a, _ in backlog)
        if self.strategy == "gossip":  # peers pull; gossip's own health tells
            return
        now = time.time()
        self.unplaced = unplaced
        if held_back:
            self._problem_at = now
        self.waiting_since = (self.waiting_since or now) if unplaced else None

    def stuck_since(self) -> float | None:
        """Since when this node has had nowhere to push: artifacts wait to be placed, the
        last thing that happened to them is a failure or a held-back target, and no push has
        arrived anywhere since they started waiting (None: it is not stuck)."""
        if self.waiting_since is None or self._problem_at <= self._ok_at:
            return None
        return max(self.waiting_since, self._ok_at)

    async def run_cycle(self, reason: str = "interval", config_key: str | None = None,
                        scan: bool = True) -> CycleReport:
        """One cycle; ``scan=False`` pushes what is known without looking at the disk first."""
        report = CycleReport()
        try:
            return await self._cycle(report, reason, config_key, scan)
        except Exception as exc:
            self.last_error = describe(exc)
            raise
        finally:
            if self.write_through is not None:  # ARTIFACT_SAFE for what reached a durable node
                self.write_through.settle()
            self._count_backlog()
            self.cycles += 1
            self.last_cycle_at = time.time()

    async def _cycle(self, report: CycleReport, reason: str, config_key: str | None,
                     scan: bool = True) -> CycleReport:
        report.scanned = await self.scan() if scan else 0
        if scan:  # not in the drain at start or the final push: they push what they have
            await self.snapshots.bound()  # waiting snapshots within their budget
        self._rehome()  # the coordinator: orphans short of copies, from its own
        if self.write_through is not None:  # queued (durably) before any push is tried
            self.write_through.enqueue_unsafe()
        if self.paused:
            report.skipped_paused = True
            return report
        priority = reason != "interval"
        work = self.pending(config_key, override_backoff=priority)
        if self.write_through is not None:
            work = self.write_through.order(work)
        if not work:
            return report
        started = time.monotonic()
        urgency = "urgent" if self.urgent else "normal"
        self._emit(DataSyncStarted(
            source=self.node, targets=sorted({t for _, t in work}), files=len(work),
            bytes=sum(a.size for a, _ in work), reason=reason, strategy=self.strategy,
            urgency=urgency))
        claimed = self.pushes.inflight.claim((a.ident, t) for a, t in work)
        work = [(a, t) for a, t in work if (a.ident, t) in claimed]
        try:
            results = await asyncio.gather(*(
                self._push(a, t, reason) for a, t in work))
        finally:
            self.pushes.inflight.release(claimed)
        if any(results):
            self._ok_at = time.time()
        if not all(results):
            self._problem_at = time.time()
        for (art, target), ok in zip(work, results):
            if ok:
                report.pushed += 1
                report.bytes += art.size
                report.by_target.setdefault(target, []).append(art)
            elif ok is not None:
                report.failed += 1
        for target, arts in report.by_target.items():
            self._emit(DataSyncCompleted(
                source=self.node, target=target, files=len(arts),
                bytes=sum(a.size for a in arts), artifacts=[a.key for a in arts[:20]],
                reason=reason, strategy=self.strategy, urgency=urgency,
                seconds=round(time.monotonic() - started, 3)))
        self.snapshots.drop_finished([a for a, _ in work])
        return report

    async def _push(self, art: Artifact, target: str, reason: str) -> bool | None:
        try:
            source = await self.snapshots.source_for(art)
        except Exception as exc:  # re-making a snapshot failed: this push failed, not the cycle
            self.pushes.failed(art.key, target, f"{art.key}: its snapshot: {describe(exc)}",
                               True, reason, (art.ident, target))
            return False
        return await self.pushes.push(art, target, reason, source_file=source,
                                      urgent=self.urgent)

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict:
        retries = [s for k, s in self.pushes.retries.items() if _is_pair(k)]
        return {"strategy": self.strategy, "enabled": self.enabled, "paused": self.paused,
                "interval_seconds": self.interval, "pending": self.backlog_files,
                "pending_bytes": self.backlog_bytes,
                "retrying": sum(1 for s in retries if not s.permanent),
                "blocked": sum(1 for s in retries if s.permanent),
                "last_cycle_at": self.last_cycle_at,
                "last_error": self.last_error or self.pushes.last_error,
                **({"write_through": self.write_through.status()} if self.write_through else {}),
                **self.totals}

    def health_check(self) -> HealthCheckResult:
        blocked = [k for k, s in self.pushes.retries.items() if s.permanent and _is_pair(k)]
        stale = (self.enabled and not self.paused and self.last_cycle_at is not None
                 and time.time() - self.last_cycle_at > 3 * self.interval + 30)
        # every push failing or held back for an interval: within two intervals of the last
        # durable target going away (its first failure comes at the next cycle)
        since = self.stuck_since()
        stuck = since is not None and not self.paused and time.time() - since >= self.interval
        healthy = not stale and not blocked and not stuck
        last_error = self.pushes.last_error or self.last_error
        message = ("auto sync running" if healthy else
                   "auto sync stalled" if stale else
                   f"{len(blocked)} pushes need an operator" if blocked else
                   f"nowhere to push: {self.unplaced} artifacts on this node only for"
                   f" {time.time() - (since or 0):.0f}s ({last_error})")
        # names the scanner refuses (not valid UTF-8): healthy still, but the operator is told
        refused = sorted(self.scanner.refused)
        if refused:
            message += (f"; {len(refused)} file name{'s' if len(refused) != 1 else ''}"
                        " refused")
        return HealthCheckResult(healthy, message, {"strategy": self.strategy,
                                                    "blocked": [_blocked_label(k)
                                                                for k in blocked[:10]],
                                                    "refused_names": refused[:10],
                                                    "refused_names_count": len(refused),
                                                    "stuck_since": since,
                                                    "unplaced": self.unplaced,
                                                    **self.totals})


def _is_pair(key: object) -> bool:
    """A retry key ``(ident, target)`` of an artifact version's push."""
    return isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], tuple)


def _blocked_label(key: object) -> str:
    """``data_type/path -> target`` for a retry key ``(ident, target)``."""
    if _is_pair(key):
        ident, target = key  # type: ignore[misc]
        return f"{ident[1]}/{ident[2]} -> {target}"
    return str(key)
