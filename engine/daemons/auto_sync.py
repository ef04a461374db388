"""AutoSyncDaemon: finds finished artifacts and pushes them where the router says.

One cycle: scan the data root (worker thread) -> register new or changed artifacts
in the manifest -> for each artifact ask the router for targets and skip targets
that already hold a verified copy -> push the rest with bounded concurrency ->
record each target's verification as a receipt. Failures back off exponentially
with jitter per (artifact, target); every failure is a DATA_SYNC_FAILED event.

Strategies (the router decides targets per strategy, ``engine.router``):
``push_from_generator`` (the default: to the coordinator), ``broadcast`` (its data types to
every eligible node), ``ephemeral`` (write-through to a durable node on a 5 s interval) and
``gossip`` (nothing pushed: peers pull, ``engine.daemons.gossip``). Every push passes the
target's circuit breaker (``engine.daemons.breaker``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.aio import wait_event
from engine.daemons.limiter import PushLimiter
from engine.daemons.recovery import Recovery
from engine.daemons.retry import RetryPolicy, RetryState
from engine.daemons.write_through import WriteThrough, final_candidates
from engine.events import DataSyncCompleted, DataSyncFailed, DataSyncStarted
from engine.health import HealthCheckResult
from engine.manifest import Artifact, Replica, SyncReceipt
from engine.scanner import Scanner, UnreadableArtifact, is_database
from engine.transport import PushRequest, TransferError

if TYPE_CHECKING:
    from engine.node import Node

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

    def __init__(self, node: "Node", strategy: str = "push_from_generator") -> None:
        if strategy not in SUPPORTED_STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not available yet "
                             f"(available: {', '.join(SUPPORTED_STRATEGIES)})")
        self.node = node
        self.strategy = strategy
        """The configured strategy name."""
        cfg = node.config
        self.interval = (min(cfg.auto_sync.interval_seconds, cfg.auto_sync.ephemeral_interval_seconds)
                         if strategy == "ephemeral" else cfg.auto_sync.interval_seconds)
        """Seconds between cycles when nothing wakes the daemon earlier."""
        self.enabled = cfg.auto_sync.enabled
        """False when RINGRIFT_AUTO_SYNC_ENABLED=false: only explicit syncs run."""
        self.paused = False
        """True while an operator has paused sync on this node: no new transfers start."""
        self.scanner = Scanner(node.data, node.name, cfg.sync_routing.exclude_patterns,
                               cfg.transfer.finished_after_seconds)
        self.retry = RetryPolicy(cfg.transfer.retry_base_seconds, cfg.transfer.retry_max_seconds)
        self._retries: dict[tuple[tuple[str, str, str, str], str], RetryState] = {}
        self._unreadable_seen: dict[str, tuple[int, int] | None] = {}
        self._wake = asyncio.Event()
        self._priority: tuple[str, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.limiter = PushLimiter(cfg.transfer.max_concurrent)
        """Bounds concurrent pushes; urgent (disk-pressure) pushes are served first."""
        self.inflight: set[tuple[tuple[str, str, str, str], str]] = set()
        """(artifact version, target) pairs a push is under way (or reserved) for, by a cycle or a
        recovery run: neither starts a second push of the same pair."""
        self.recovery = Recovery(self)
        """Operator-requested runs that bring artifacts up to min_copies verified copies."""
        self.write_through = WriteThrough(self) if strategy == "ephemeral" else None
        """The ephemeral strategy's durable queue and safety check (None for the others)."""
        self.urgent = self.write_through is not None
        """Every push of this daemon is urgent (ephemeral: the host may vanish any moment)."""
        self.totals = {"cycles": 0, "pushed_files": 0, "pushed_bytes": 0, "failed": 0}
        """Running counts since start."""
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

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"auto-sync:{self.node.name}")

    async def stop(self) -> None:
        await self.recovery.stop()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.write_through is not None:
            self.write_through.close()

    async def final_push(self, deadline: float) -> None:
        """Graceful stop (SIGTERM) of an ephemeral node: no more interval cycles; push what is
        not safe yet for at most ``deadline`` seconds (``WriteThrough.final_push``). Other
        strategies: nothing."""
        if self.write_through is None:
            return
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.write_through.final_push(deadline)

    def sync_now(self, reason: str, config_key: str | None = None) -> None:
        """Run a cycle now; artifacts of ``config_key`` go first and skip their backoff."""
        self._priority = (reason, config_key)
        self._wake.set()

    async def _run(self) -> None:
        if self.write_through is not None:  # what was queued before a restart goes first
            await self.write_through.drain()
        while True:
            priority, self._priority = self._priority, None
            if self.enabled or priority:
                try:
                    await self.run_cycle(*(priority or ("interval", None)))
                except Exception as exc:  # keep the daemon alive; the failure is visible
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("sync cycle failed on %s", self.node.name)
            await wait_event(self._wake, self._next_delay())
            self._wake.clear()

    def _next_delay(self) -> float:
        now = time.monotonic()
        waits = [s.next_at - now for s in self._retries.values() if not s.permanent]
        return max(0.05, min([self.interval, *waits]))

    # -- one cycle --------------------------------------------------------------------------
    async def scan(self, final: bool = False) -> int:
        """Register finished artifacts that are new or changed; returns how many. ``final``
        (an ephemeral node stopping): a file no process holds open counts as finished now."""
        manifest = self.node.manifest
        known: dict[tuple[str, str], tuple[int | None, ...]] = {
            (a.data_type, a.path): a.source_identity
            for a in manifest.artifacts(origin=self.node.name)}
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
                    manifest.set_replica(Replica(art.data_type, art.path, self.node.name,
                                                 art.sha256, time.time(), origin=art.origin,
                                                 root_id=self.node.root_id))
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
                    self.node.name, self.last_error)
        self.node.events.emit(DataSyncFailed(
            source=self.node.name, target=self.node.name, artifact=key, error=str(exc),
            attempt=0, retry_in_seconds=None, reason="scan", strategy=self.strategy))

    def pending(self, config_key: str | None = None,
                override_backoff: bool = False) -> list[tuple[Artifact, str]]:
        """(artifact, target) pairs that still need a push, priority config first."""
        manifest, router = self.node.manifest, self.node.router
        holders = manifest.verified_holders_by_artifact(self.node.name)
        gone = manifest.deleted_sources(self.node.name)
        work: list[tuple[Artifact, str]] = []
        for art in manifest.artifacts(origin=self.node.name):
            if art.ident in gone and not self.scanner.source_back(art):
                continue  # no bytes here any more; holders re-home it (Recovery.orphans)
            held = holders.get(art.ident, set())
            for target in router.get_sync_targets(art.data_type, art.config_key, art.path,
                                                  urgent=self.urgent, origin=art.origin):
                if target in held or (art.ident, target) in self.inflight:
                    continue
                state = self._retries.get((art.ident, target))
                forced = override_backoff and (config_key is None or art.config_key == config_key)
                if state and state.permanent:
                    continue
                if forced or RetryPolicy.ready(state):
                    work.append((art, target))
        work.sort(key=lambda item: (config_key is not None and item[0].config_key != config_key,
                                    item[0].mtime))
        return work

    def _count_backlog(self) -> None:
        """Refresh the figures /status shows (once per cycle, not per status request)."""
        backlog = self.pending(override_backoff=True)
        self.backlog_files = len(backlog)
        self.backlog_bytes = sum(a.size for a, _ in backlog)

    def _count_unplaced(self) -> None:
        """Own artifacts routing wants elsewhere that no other node holds verified; a cycle
        where such an artifact has every target held back (down, breaker open, full) is a
        problem, like a failed push."""
        manifest, router, me = self.node.manifest, self.node.router, self.node.name
        if self.strategy == "gossip":  # peers pull; gossip's own health tells
            return
        holders = manifest.verified_holders_by_artifact(me)
        gone = manifest.deleted_sources(me)
        unplaced = held_back = 0
        for art in manifest.artifacts(origin=me):
            if art.ident in gone or holders.get(art.ident, set()) - {me}:
                continue
            route = router.route(art.data_type, art.config_key, art.path, urgent=self.urgent,
                                 origin=art.origin)
            if route.targets or route.held:
                unplaced += 1
                held_back += not route.targets
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
        finally:
            if self.write_through is not None:  # ARTIFACT_SAFE for what reached a durable node
                self.write_through.settle()
            self._count_backlog()
            self._count_unplaced()
            self.totals["cycles"] += 1
            self.last_cycle_at = time.time()

    async def _cycle(self, report: CycleReport, reason: str, config_key: str | None,
                     scan: bool = True) -> CycleReport:
        report.scanned = await self.scan() if scan else 0
        self.recovery.rehome()  # the coordinator: orphans short of copies, from its own
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
        self.node.events.emit(DataSyncStarted(
            source=self.node.name, targets=sorted({t for _, t in work}), files=len(work),
            bytes=sum(a.size for a, _ in work), reason=reason, strategy=self.strategy,
            urgency="urgent" if self.urgent else "normal"))
        pairs = {(a.ident, t) for a, t in work}
        self.inflight |= pairs
        try:
            results = await asyncio.gather(*(
                self._push_one(a, t, reason, urgent=self.urgent) for a, t in work))
        finally:
            self.inflight -= pairs
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
            self.node.events.emit(DataSyncCompleted(
                source=self.node.name, target=target, files=len(arts),
                bytes=sum(a.size for a in arts), artifacts=[a.key for a in arts[:20]],
                reason=reason, strategy=self.strategy, urgency="urgent" if self.urgent else "normal",
                seconds=round(time.monotonic() - started, 3)))
        self._drop_finished_snapshots([a for a, _ in work])
        return report

    async def push_copy(self, art: Artifact, target: str, reason: str,
                        source_file: Path | None = None, urgent: bool = False) -> bool | None:
        """One push of ``art`` to ``target`` outside the cycle (a gossip pull request), unless
        one of the same pair is under way (None); nothing schedules a retry."""
        key = (art.ident, target)
        if key in self.inflight:
            return None
        self.inflight.add(key)
        try:
            return await self._push_one(art, target, reason, source_file=source_file,
                                        retry=False, urgent=urgent)
        finally:
            self.inflight.discard(key)

    async def _push_one(self, art: Artifact, target: str, reason: str,
                        source_file: Path | None = None, retry: bool = True,
                        urgent: bool = False) -> bool | None:
        """Push ``art`` to ``target`` and record the receipt; False (and a DATA_SYNC_FAILED)
        on failure; None when the target's circuit breaker holds it back (nothing was tried).
        ``source_file`` overrides where the bytes are read (a stored copy); ``retry=False``
        for a one-off push nothing will retry (reported with no retry time); ``urgent`` pushes
        get a transfer slot before normal ones."""
        key = (art.ident, target)
        state = self._retries.get(key)
        attempt = (state.attempts if state else 0) + 1
        source_file = source_file or self.scanner.push_source(art)
        async with self.limiter.slot(urgent):
            if not self.node.breakers.begin(target):
                return None  # opened while this push waited for a slot
            transfer = self.node.transfers.start(
                direction="out", source=self.node.name, target=target, artifact=art.key,
                size=art.size, transport=self.node.transport.name, attempt=attempt)
            try:
                if not source_file.exists():
                    raise TransferError(f"{source_file.name} vanished before it was sent",
                                        target_fault=False)
                result = await self.node.transport.push(
                    PushRequest(art, source_file, target, self.node.config.host(target).url,
                                reason, "urgent" if urgent else "normal"), transfer)
            except TransferError as exc:
                self.node.transfers.finish(transfer, error=str(exc))
                self._failed(art, target, str(exc), exc.retryable, reason, retry)
                if exc.backpressure:
                    self.node.router.backpressure(target, exc.backpressure)
                if exc.target_fault:
                    self.node.breakers.failure(target, str(exc))
                return False
            finally:  # a probe that neither succeeded nor failed (cancelled, a local error)
                self.node.breakers.release(target)
        self.node.transfers.finish(transfer)
        self.node.breakers.success(target)
        self._retries.pop(key, None)
        self.node.manifest.register_sync(SyncReceipt(
            art.data_type, art.path, self.node.name, target, result.sha256, result.size,
            result.verified_at, self.node.transport.name, origin=art.origin,
            root_id=result.root_id))
        self.totals["pushed_files"] += 1
        self.totals["pushed_bytes"] += result.bytes_sent
        return True

    def _failed(self, art: Artifact, target: str, error: str, retryable: bool,
                reason: str, retry: bool = True) -> None:
        """Count and report a failed push; with ``retry`` schedule the next attempt."""
        if retry:
            state = self._retries.setdefault((art.ident, target), RetryState())
            wait = self.retry.record_failure(state, error, retryable)
            attempt = state.attempts
        else:
            known = self._retries.get((art.ident, target))
            wait, attempt = None, (known.attempts if known else 0) + 1
        self.totals["failed"] += 1
        self.last_error = error
        self.node.events.emit(DataSyncFailed(
            source=self.node.name, target=target, artifact=art.key, error=error,
            attempt=attempt, retry_in_seconds=None if wait is None else round(wait, 2),
            reason=reason, strategy=self.strategy))

    def _drop_finished_snapshots(self, pushed: list[Artifact]) -> None:
        """A snapshot is kept until every target the router names holds it verified."""
        manifest, router = self.node.manifest, self.node.router
        busy = {key for key, _target in self.inflight}
        for art in {a.ident: a for a in pushed
                    if is_database(a.path) and a.origin == self.node.name}.values():
            if art.ident in busy:  # another push still reads it
                continue
            targets = set(router.get_sync_targets(art.data_type, art.config_key, art.path,
                                                  origin=art.origin))
            if targets and targets <= manifest.verified_holders(art):
                self.scanner.snapshot_path(art.data_type, art.path).unlink(missing_ok=True)

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict:
        return {"strategy": self.strategy, "enabled": self.enabled, "paused": self.paused,
                "interval_seconds": self.interval, "pending": self.backlog_files,
                "pending_bytes": self.backlog_bytes,
                "retrying": sum(1 for s in self._retries.values() if not s.permanent),
                "blocked": sum(1 for s in self._retries.values() if s.permanent),
                "last_cycle_at": self.last_cycle_at, "last_error": self.last_error,
                **({"write_through": self.write_through.status()} if self.write_through else {}),
                **self.totals}

    def health_check(self) -> HealthCheckResult:
        blocked = [k for k, s in self._retries.items() if s.permanent]
        stale = (self.enabled and not self.paused and self.last_cycle_at is not None
                 and time.time() - self.last_cycle_at > 3 * self.interval + 30)
        # every push failing or held back for an interval: within two intervals of the last
        # durable target going away (its first failure comes at the next cycle)
        since = self.stuck_since()
        stuck = since is not None and not self.paused and time.time() - since >= self.interval
        healthy = not stale and not blocked and not stuck
        message = ("auto sync running" if healthy else
                   "auto sync stalled" if stale else
                   f"{len(blocked)} pushes need an operator" if blocked else
                   f"nowhere to push: {self.unplaced} artifacts on this node only for"
                   f" {time.time() - (since or 0):.0f}s ({self.last_error})")
        # names the scanner refuses (not valid UTF-8): healthy still, but the operator is told
        refused = sorted(self.scanner.refused)
        if refused:
            message += (f"; {len(refused)} file name{'s' if len(refused) != 1 else ''}"
                        " refused")
        return HealthCheckResult(healthy, message, {"strategy": self.strategy,
                                                    "blocked": [f"{a[1]}/{a[2]} -> {t}"
                                                                for a, t in blocked[:10]],
                                                    "refused_names": refused[:10],
                                                    "refused_names_count": len(refused),
                                                    "stuck_since": since,
                                                    "unplaced": self.unplaced,
                                                    **self.totals})
