"""Node: one ringsync engine process — its data root, manifest, events, daemons and API.

The Node is the composition root: it builds each component from the few collaborators it
uses (``_build_cluster``, ``_build_sync``, ``_build_services``, ``_build_reporting``) and no
component holds the Node; node-wide state lives in small objects of its own (``pause``,
``inflight``, ``usage``) and every push goes through ``pushes`` (``engine.push_path``), every
call to another node through ``peers`` (``engine.peer_client``).

Lifecycle follows aiohttp's: ``start()`` sets up an AppRunner whose ``cleanup_ctx``
starts the daemons, then binds the site; ``stop()`` runs the runner's cleanup, which
stops accepting, ends event streams, lets handlers finish (bounded), lets an ephemeral
node make its final push (bounded), then stops the daemons and closes the session, the
event log and the manifest, in that order.
``run()`` waits on an injectable shutdown event, so tests stop a node without signals.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from engine import diskio
from engine.bandwidth import GRANT_BYTES, BandwidthCoordinator, set_bandwidth_coordinator
from engine.capacity import DiskUsage
from engine.cluster_feed import ClusterEventFeed
from engine.config import ClusterConfig
from engine.cluster_view import ClusterView, ClusterViewRefresher
from engine.transport.meter import MeterServer
from engine.transport.auto import AutoTransport
from engine.transport.ssh import SshPool
from engine.transport.ssh_setup import SshSetup
from engine.daemons.auto_sync import AutoSyncDaemon
from engine.daemons.cleanup import Cleaner
from engine.daemons.limiter import PushLimiter
from engine.daemons.recovery import Recovery
from engine.daemons.rehome import RemoteRehome
from engine.recount import Recount
from engine.daemons.retry import RetryPolicy
from engine.daemons.snapshots import SnapshotKeeper
from engine.daemons.write_through import QUEUE_FILE, WriteThrough, WriteThroughQueue
from engine.daemons.backpressure import BackpressureMonitor
from engine.daemons.breaker import Breakers
from engine.daemons.gossip import GossipDaemon
from engine.daemons.live_snapshots import LiveSnapshotter
from engine.daemons.manifest_pull import ManifestPuller
from engine.daemons.membership import MembershipDaemon
from engine.daemons.push import SyncPushDaemon
from engine.daemons.scrub import Scrubber
from engine.daemons.verification import ReplicaVerifier
from engine.events import EventBus, EventType, PrioritySyncRequested
from engine.events.hooks import HookRunner
from engine.events.log_lines import EventLogLines
from engine.gossip.holder import Sender
from engine.gossip.pulls import Pulls
from engine.facade import SyncFacade, set_sync_facade
from engine.health import HealthCheckResult
from engine.copies import StoredCopies
from engine.manifest import ClusterManifest
from engine.rootlock import RootLock, root_id
from engine.startup import StartupChecks
from engine.metrics import MetricSources, NodeMetrics
from engine.paths import DataRoot
from engine.router import SyncRouter
from engine.runtime import Service, Supervisor, TaskSet
from engine.server import make_app
from engine.server.site import HANDLER_ARGS, BoundedSite, guard_for, raise_fd_limit
from engine.transfers import TransferTracker
from engine.inflight import InFlight
from engine.pause import PauseGate
from engine.peer_client import PeerClient
from engine.push_path import PushPath
from engine.scanner import Scanner
from engine.transport import registry as transport_registry
from engine.transport.registry import TransportContext, Transports
from engine.vouches import VouchClient

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 1.5
CAPACITY_REFRESH_SECONDS = 2.0
PARTIAL_MAX_AGE_SECONDS = 24 * 3600
"""A partial upload untouched this long was abandoned by its sender and is deleted."""


class Node:
    """Everything one node runs, wired together."""

    def __init__(self, config: ClusterConfig, name: str,
                 shutdown: asyncio.Event | None = None) -> None:
        self.config = config
        """The validated cluster config."""
        self.name = name
        self.host = config.host(name)
        """This node's entry in the config."""
        self.data = DataRoot(self.host.data_root)
        self.shutdown = shutdown or asyncio.Event()
        """Set it to make ``run()`` stop the node gracefully."""
        self.uploads_in_progress: set[Path] = set()
        self.transfers = TransferTracker()
        self.started_at = time.time()
        self.usage = DiskUsage(self.data, self.host.disk_quota)
        """How full this node is, against its quota or its disk."""
        self._unhealthy: tuple[str, ...] = ()
        """The /health parts failing when ``health_watch`` last looked."""
        self._runner: web.AppRunner | None = None
        self.push: SyncPushDaemon | None = None
        """Disk-pressure pushes and verified cleanup (every node but the coordinator)."""
        self.cluster_feed: ClusterEventFeed | None = None
        """The cluster-wide event stream, once the facade has opened it (the dashboard)."""

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self.data.create()
        self.lock = RootLock(self.data.state, self.name)
        self.lock.acquire()  # RootInUse: another node runs on this data root
        try:
            await self._start()
        except BaseException:
            self.lock.release()
            raise

    async def _start(self) -> None:
        self.root_id = root_id(self.data.state)
        """This data root's permanent id (``engine.rootlock``)."""
        self.manifest = self._open_manifest()
        self.events = EventBus(self.name, self.data.state / "events.jsonl")
        self.events.listen(EventLogLines())  # warnings and errors reach the log, rate-limited
        self.copies = StoredCopies(self.name, self.data, self.manifest, self.events,
                                   self.root_id, self.config.push.hash_concurrency)
        """The copies this node stores: their hashes (read now), quarantine, reconcile."""
        self.startup = StartupChecks(self.name, self.data, self.manifest, self.copies,
                                     self.events.emit)
        """New incarnation, interrupted deletions, reconcile: retried while the disk is full."""
        self.startup.run()
        self.hooks = HookRunner(self.config.hooks, self.name, self.events, self.data,
                                self.manifest)
        """Runs the configured ``hooks:`` commands off the bus (never blocking it)."""
        self._build_cluster()
        self._build_sync(self.config.strategy_for(self.name))
        self._build_services()
        self._build_reporting()
        app = make_app(self)
        self.connections = guard_for(raise_fd_limit())
        """Inbound connection caps and the header timeout (``engine.server.site``)."""
        app.middlewares.insert(0, self.connections.middleware)
        app.cleanup_ctx.append(self._components)
        app.on_shutdown.append(self._end_streams)
        self._runner = web.AppRunner(app, access_log=None,
                                     shutdown_timeout=SHUTDOWN_GRACE_SECONDS, **HANDLER_ARGS)
        await self._runner.setup()
        site = BoundedSite(self._runner, self.host.address, self.host.port, self.connections)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise

    def _build_cluster(self) -> None:
        """What this node knows of and says to the others: peers, membership, routing."""
        self.breakers = Breakers(self.name, self.events, self.config.transfer.breaker_failures,
                                 self.config.transfer.breaker_reset_seconds)
        """One circuit breaker per target node, shared by every outbound transfer."""
        self.peers = PeerClient(self.name, self.config.token, lambda n: self.config.host(n).url)
        """The one client for every call to another node (opened with the components)."""
        self.supervisor = Supervisor(self.name, self.events.emit)
        """Runs the node's periodic services; a failing one is reported and restarted."""
        self.bandwidth = BandwidthCoordinator(self.config.bandwidth_limit_mbps)
        set_bandwidth_coordinator(self.bandwidth)
        self.membership = MembershipDaemon(
            self.name, self.config.hosts, self.config.membership, peers=self.peers,
            emit=self.events.emit, manifest=self.manifest,
        ) if self.host.role == "coordinator" else None
        self.manifest_pull = ManifestPuller(
            self.name, self.config.hosts, self.config.membership.interval_seconds,
            manifest=self.manifest, peers=self.peers, is_down=self.membership.is_down,
        ) if self.membership else None
        self.view = ClusterView(self.membership.is_down if self.membership else None)
        """What this node knows of the others: down nodes, backpressure (capacity: manifest)."""
        self.router = SyncRouter(self.config, self.name, self.manifest, self.view, self.breakers,
                                 self.usage.percent, self._wake_sync)
        self.view_refresher = ClusterViewRefresher(
            self.name, self.config.hosts, self.config.coordinator.name,
            self.config.sync_routing.capacity_refresh_seconds, view=self.view, peers=self.peers,
            set_capacity=self.manifest.set_capacity, on_recovered=self.router.node_recovered,
            on_backpressure=self.router.backpressure,
            members=self.membership.view if self.membership else None)
        for kind in (EventType.NODE_RECOVERED, EventType.BACKPRESSURE_ACTIVATED,
                     EventType.BACKPRESSURE_RELEASED):
            self.events.listen(self.router.on_event, kind)
        self.vouches = VouchClient(self.name, self.root_id, manifest=self.manifest,
                                   hosts=self.config.hosts, policy=self.config.sync_routing.policy,
                                   peers=self.peers)
        """Asks holders, now, whether they hold an artifact version (deletion, recovery)."""
        self.backpressure = BackpressureMonitor(
            self.name, self.config.sync_routing.max_disk_usage_percent,
            self.config.sync_routing.max_inbound_queue, disk_percent=self.usage.percent,
            uploads=self.uploads_in_progress, emit=self.events.emit)
        """Announces and enforces backpressure when this node should not take normal syncs."""

    def _build_services(self) -> None:
        """What runs beside auto sync: gossip, live snapshots, disk pressure, verification."""
        self.sender = Sender(self.name, data=self.data, manifest=self.manifest,
                             copies=self.copies, scanner=self.scanner, pushes=self.pushes,
                             pause=self.pause, breakers=self.breakers)
        """Pushes a stored copy another node asks for (a gossip pull, a scrub's repair)."""
        self.gossip = GossipDaemon(
            self.name, self.config.auto_sync, self.config.transfer.max_concurrent,
            self.config.hosts, manifest=self.manifest, router=self.router,
            pulls=Pulls(self.name, manifest=self.manifest, router=self.router, data=self.data,
                        copies=self.copies, uploads=self.uploads_in_progress),
            sender=self.sender, pause=self.pause, breakers=self.breakers, peers=self.peers,
            emit=self.events.emit, disk_percent=self.usage.percent,
            pressure=lambda: self.backpressure.reason,
        ) if self.daemon.strategy == "gossip" else None
        """Manifest deltas peer to peer, then pulls (the gossip strategy only)."""
        self.live = LiveSnapshotter(
            self.name, self.config.push.live_snapshot_seconds, scanner=self.scanner,
            router=self.router, pushes=self.pushes, pause=self.pause,
            emit=self.events.emit)
        """Snapshots and pushes databases still being written (``push.live_snapshot_seconds``)."""
        self.cleaner = Cleaner(
            self.name, self.config.push.min_copies_before_delete,
            self.config.push.cleanup_percent, self.config.transfer.finished_after_seconds,
            data=self.data, manifest=self.manifest, scanner=self.scanner,
            inflight=self.inflight, vouches=self.vouches, measure=self.usage.refresh,
            note_stored=self.usage.note_stored, emit=self.events.emit)
        """Deletes sources behind live-vouched copies (the cleanup level)."""
        self.push = None if self.host.is_coordinator else SyncPushDaemon(
            self.name, self.config.push, measure=self.usage.refresh,
            refresh_view=self.view_refresher.refresh, recovery=self.recovery,
            cleaner=self.cleaner, pause=self.pause, emit=self.events.emit)
        self.verifier = ReplicaVerifier(self.name, manifest=self.manifest, copies=self.copies,
                                        emit=self.events.emit)
        self.scrub = Scrubber(
            self.name, self.config.scrub, coordinator=self.config.coordinator.name,
            hosts=self.config.hosts, manifest=self.manifest, copies=self.copies,
            is_down=self.view.is_down, peers=self.peers, emit=self.events.emit)
        """Re-hashes every stored copy in the background and repairs what rotted."""

    def _build_reporting(self) -> None:
        """``/metrics`` and the facade (the dashboard's and the CLI's way in)."""
        queue, membership, push = self.daemon.write_through, self.membership, self.push
        self.metrics = NodeMetrics(MetricSources(
            self.name, self.events, disk=self.usage.disk, artifacts=self.manifest.counts_by_type,
            sync=self.daemon.status, bandwidth=self.bandwidth.status, transfers=self.transfers,
            backpressure=lambda: self.backpressure.active,
            open_breakers=self.breakers.open_targets, scrub=self.scrub.status,
            hashed_bytes=lambda: self.copies.totals["hashed_bytes"],
            write_through=queue.status if queue is not None else None,
            gossip=self.gossip.status if self.gossip is not None else None,
            pressure_level=(lambda: push.level) if push is not None else None,
            cleanup=(lambda: push.cleaner.totals) if push is not None else None,
            members=(lambda: {n: m.state for n, m in membership.members.items()})
            if membership is not None else None))
        """``GET /metrics``: read from these parts at scrape time."""
        self.facade = SyncFacade(self)
        set_sync_facade(self.facade)

    def _build_sync(self, strategy: str) -> None:
        """The node-wide sync state and the one push path, then what pushes through it."""
        cfg = self.config
        self.pause = PauseGate(self.name, self.events.emit)
        """Shut by an operator: no new transfer starts on this node."""
        self.inflight = InFlight()
        """(version, target) pairs a push is under way for: none starts twice."""
        self.scanner = Scanner(self.data, self.name, cfg.sync_routing.exclude_patterns,
                               cfg.transfer.finished_after_seconds)
        """Finds finished artifacts (and snapshots databases) in the data root."""
        self.limiter = PushLimiter(cfg.transfer.max_concurrent)
        """Bounds concurrent pushes; urgent (disk-pressure) pushes are served first."""
        self.pushes = PushPath(
            self.name, strategy, limiter=self.limiter, inflight=self.inflight,
            breakers=self.breakers, transfers=self.transfers, record=self.manifest.register_sync,
            emit=self.events.emit, url_of=lambda n: self.config.host(n).url,
            on_backpressure=self.router.backpressure,
            retry=RetryPolicy(cfg.transfer.retry_base_seconds, cfg.transfer.retry_max_seconds),
            pause=self.pause)
        """The one push path every component pushes through."""
        self.snapshots = SnapshotKeeper(self.name, self.scanner, self.manifest, self.router,
                                        self.inflight, lambda: self.usage.disk()["total_bytes"])
        """The snapshots of own databases: kept until placed, within a budget."""
        self.recount = Recount(self.vouches, self.view.is_down)
        """Which versions are short of copies, for the runs that add copies."""
        self.recovery = Recovery(
            self.name, cfg.push.min_copies_before_delete, manifest=self.manifest,
            router=self.router, scanner=self.scanner, vouches=self.vouches, copies=self.copies,
            pushes=self.pushes, pause=self.pause, snapshots=self.snapshots,
            recount=self.recount, emit=self.events.emit,
            is_down=self.membership.is_down if self.membership else None,
            remote=RemoteRehome(
                self.name, cfg.push.min_copies_before_delete, cfg.hosts, manifest=self.manifest,
                recount=self.recount, router=self.router, is_down=self.membership.is_down,
                peers=self.peers) if self.membership else None)
        """Operator-requested runs and orphan re-homing up to min_copies verified copies."""
        write_through = None
        if strategy == "ephemeral":
            durable = frozenset(n for n, h in cfg.hosts.items()
                                if not h.ephemeral and n != self.name)
            write_through = WriteThrough(
                self.name, strategy, WriteThroughQueue(self.data.state / QUEUE_FILE), durable,
                manifest=self.manifest, scanner=self.scanner, events=self.events)
        self.daemon = AutoSyncDaemon(
            self.name, strategy, cfg.auto_sync, manifest=self.manifest, router=self.router,
            scanner=self.scanner, pushes=self.pushes, pause=self.pause,
            snapshots=self.snapshots, emit=self.events.emit, root_id=self.root_id,
            write_through=write_through, rehome=self.recovery.rehome)
        """Finds finished artifacts and pushes them where the router says."""
        self.pause.on_resume(lambda: self.daemon.sync_now("resume"))

    def _open_manifest(self) -> ClusterManifest:
        """Open the manifest; on a full disk, with the space kept aside for that."""
        reserve = self.data.state / "reserve"
        try:
            manifest = ClusterManifest(self.data.state / "manifest.db", self.name)
        except sqlite3.OperationalError as exc:
            if not reserve.exists():
                raise
            log.error("cannot open the manifest (%s): using the space kept aside", exc)
            reserve.unlink()
            manifest = ClusterManifest(self.data.state / "manifest.db", self.name)
        diskio.ensure_reserve(reserve)
        return manifest

    async def _components(self, _app: web.Application) -> AsyncIterator[None]:
        await self.peers.open()
        ssh = self.ssh = SshSetup(self.name, self.data.state, self.config.hosts.values())
        await asyncio.to_thread(ssh.write)
        meter = MeterServer(ssh.control_dir / "meter.sock", GRANT_BYTES)
        await meter.start()
        pool = self.ssh_pool = SshPool(ssh, self.config.host)
        """Pooled asyncssh connections: remote operations and the tunnels of ``auto``."""
        context = TransportContext(self.name, self.peers.session, self.bandwidth,
                                   self.config.transfer.chunk_bytes, host_of=self.config.host,
                                   ssh=ssh, ssh_pool=pool, meter=meter)
        routes = {h.name: h.transport for h in self.config.hosts.values()
                  if h.name != self.name and h.transport != "http"}
        built = [transport_registry.build(name, context) for name in ("http", "rsync")]
        built.append(AutoTransport(built[0], built[1], pool))
        self.transports = Transports(built, "http", routes)
        self.bandwidth.attach_rsync(self.transports.get("rsync"))  # the seed's sync_file
        """The transports this node pushes with, by name (``engine.transport.registry``)."""
        self.pushes.attach(self.transports)
        await self.usage.refresh()
        background = TaskSet(f"node {self.name}")
        background.spawn(self.copies.adopt_unknown(), name="adopt-copies")
        supervisor = self.supervisor
        supervisor.add(Service("capacity", self._capacity_step, CAPACITY_REFRESH_SECONDS,
                               first_delay=CAPACITY_REFRESH_SECONDS))
        supervisor.add(Service("cluster_view", self.view_refresher.step,
                               self.view_refresher.interval,
                               max_backoff=self.view_refresher.interval))
        if self.membership:
            supervisor.add(Service("membership", self.membership.check_all,
                                   self.membership.interval))
        if self.manifest_pull:
            supervisor.add(Service("manifest_pull", self.manifest_pull.step,
                                   self.manifest_pull.interval))
        await supervisor.start()
        await self.hooks.start()
        supervisor.add(Service("auto_sync", self.daemon.step, self.daemon.interval,
                               wakeup=self.daemon.wakeup, next_delay=self.daemon.next_delay))
        if self.gossip:
            supervisor.add(Service("gossip", self.gossip.round, self.gossip.interval))
        if self.live.interval > 0:
            supervisor.add(Service("live_snapshots", self.live.step, self.live.interval))
        supervisor.add(Service("health_watch", self._watch_health,
                               self.config.membership.interval_seconds, first_delay=1.0))
        if self.push:
            supervisor.add(Service("sync_push", self.push.run_cycle,
                                   self.push.thresholds.interval_seconds,
                                   wakeup=self.push.wakeup))
        if self.scrub.enabled:
            supervisor.add(Service("scrub", self.scrub.step, self.scrub.interval,
                                   next_delay=self.scrub.next_delay))
        yield
        # an ephemeral node (SIGTERM on a spot host) pushes what is not safe yet, while the
        # daemons and the session still run; a no-op for other strategies
        await supervisor.stop(["auto_sync"])
        await self.daemon.final_push(self.config.auto_sync.final_push_seconds)
        if self.cluster_feed is not None:
            await self.cluster_feed.stop()
        await supervisor.stop(["scrub"])
        await self.verifier.stop()
        await self.sender.stop()
        await supervisor.stop(["sync_push", "live_snapshots", "gossip"])
        if self.push:
            await self.push.stop()
        await self.recovery.stop()
        await supervisor.stop(["auto_sync"])
        self.daemon.close()
        await supervisor.stop()
        if self.manifest_pull:
            await self.manifest_pull.stop()
        await self.pushes.close()
        await background.close()
        await meter.stop()
        await pool.close()
        await asyncio.to_thread(ssh.close)
        await self.peers.close()
        await self.hooks.stop()
        self.events.close()
        self.manifest.close()
        self.lock.release()

    async def _end_streams(self, _app: web.Application) -> None:
        self.events.end_streams()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def run(self) -> None:
        """Start, serve until ``shutdown`` is set, stop."""
        await self.start()
        log.info("node %s serving on %s", self.name, self.host.url)
        try:
            await self.shutdown.wait()
            log.warning("node %s stopping: waiting for %s", self.name, self.waiting_for())
        finally:
            await self.stop()

    # -- capacity ---------------------------------------------------------------------------
    async def _capacity_step(self) -> None:
        """The ``capacity`` service's step: abandoned partials, usage, backpressure, and the
        start-up checks or the space kept aside while the disk was full."""
        removed = await asyncio.to_thread(self.data.prune_partials, PARTIAL_MAX_AGE_SECONDS,
                                          set(self.uploads_in_progress), time.time())
        for part in removed:
            log.info("removed abandoned partial upload %s", part.name)
        await self.usage.refresh()
        self.backpressure.check()
        if not self.startup.done:
            self.startup.run()
        elif not (self.data.state / "reserve").exists():
            await asyncio.to_thread(diskio.ensure_reserve, self.data.state / "reserve")

    async def _watch_health(self) -> None:
        """The ``health_watch`` service's step: a WARNING line when ``/health`` turns
        unhealthy or its failing parts change, an INFO line when it is healthy again."""
        result = self.health_check()
        bad = tuple(sorted(k for k, p in result.details.items() if not p["is_healthy"]))
        if bad == self._unhealthy:
            return
        self._unhealthy = bad
        if bad:
            log.warning("node %s unhealthy: %s", self.name, "; ".join(
                f"{k}: {result.details[k]['message']}" for k in bad))
        else:
            log.info("node %s healthy again", self.name)

    def waiting_for(self) -> str:
        """What a graceful stop waits for (logged on SIGTERM)."""
        parts = [f"{len(self.uploads_in_progress)} uploads arriving",
                 f"{len(self.inflight)} pushes under way"]
        if self.daemon.write_through is not None:
            parts.append(f"a final push of what is not safe yet (at most"
                         f" {self.config.auto_sync.final_push_seconds:g}s)")
        parts.append(f"{len(self.supervisor.services)} components to stop")
        return ", ".join(parts)

    def _wake_sync(self, reason: str) -> None:
        """A target came back or released backpressure (``reason`` is ``<why>:<node>``): a
        cycle now, whatever the backoff."""
        self.daemon.sync_now(reason.partition(":")[0])

    # -- control ----------------------------------------------------------------------------
    def request_priority_sync(self, reason: str, config_key: str | None) -> dict[str, Any]:
        self.events.emit(PrioritySyncRequested(reason=reason, source_node=self.name,
                                               config_key=config_key))
        self.daemon.sync_now(reason, config_key)
        return {"node": self.name, "accepted": True, "reason": reason, "config_key": config_key,
                "paused": self.pause.paused}

    async def request_recovery(self, reason: str, by: str) -> dict[str, Any]:
        """Bring under-replicated artifacts up to min_copies verified copies (counted by
        asking the holders now; the pushes run in the background)."""
        return await self.recovery.request(reason, by)

    def start_verification(self, by: str) -> dict[str, Any]:
        """Re-hash every replica this node holds (background); raises VerificationRunning."""
        return self.verifier.start(by)

    def list_artifacts(self, limit: int) -> dict[str, Any]:
        """The newest ``limit`` live artifacts (by mtime) with their replicas."""
        total, rows = self.manifest.newest_artifacts(limit)
        fields = ("data_type", "path", "config_key", "size", "sha256", "mtime", "origin")
        return {"node": self.name, "total": total, "artifacts": [
            {**{k: getattr(art, k) for k in fields},
             "replicas": [{"node": r.node, "sha256": r.sha256, "verified_at": r.verified_at}
                          for r in reps]}
            for art, reps in rows]}

    def set_paused(self, paused: bool, by: str) -> dict[str, Any]:
        self.pause.set(paused, by)
        return {"node": self.name, "paused": self.pause.paused}

    # -- reporting --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        push = self.config.push
        return {
            "node": self.name, "role": self.host.role, "provider": self.host.provider,
            "url": self.host.url, "ephemeral": self.host.ephemeral, "time": time.time(),
            "root_id": self.root_id, "manifest_id": self.manifest.manifest_id,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "strategy": self.daemon.strategy, "paused": self.pause.paused,
            "disk": self.usage.disk(),
            "thresholds": {"push_percent": push.push_percent, "urgent_percent": push.urgent_percent,
                           "cleanup_percent": push.cleanup_percent,
                           "min_copies_before_delete": push.min_copies_before_delete},
            "artifacts": self.manifest.counts_by_type(),
            "transfers": self.transfers.snapshot(),
            "sync": self.daemon.status(),
            "gossip": self.gossip.status() if self.gossip else None,
            "push": self.push.status() if self.push else None,
            "hooks": self.hooks.status(),
            "backpressure": self.backpressure.status(),
            "routing": self.router.status(),
            "live_snapshots": self.live.status(),
            "scrub": self.scrub.status(),
            "recovery": self.recovery.status(),
            "components": self.supervisor.status(),
            "connections": self.connections.status(),
            "bandwidth": {h: {k: v[k] for k in ("limit_mbps", "allocated_mbps",
                                                 "active_transfers", "current_mbps")}
                          for h, v in self.bandwidth.status()["hosts"].items()},
            "manifest_seq": self.manifest.seq, "events_seq": self.events.last_seq,
            **({"manifest_pull": self.manifest_pull.status()} if self.manifest_pull else {}),
        }

    def membership_view(self) -> dict[str, Any]:
        if self.membership is None:
            return {"coordinator": self.config.coordinator.name, "members": {}}
        return {"coordinator": self.name, "members": self.membership.view(),
                "self": {"name": self.name, "state": "up",
                         "status": {"disk": self.usage.disk(),
                                    "backpressure": self.backpressure.status()}}}

    def health_check(self) -> HealthCheckResult:
        parts = {"components": self.supervisor.health_check(),
                 "startup": self.startup.health_check(),
                 "auto_sync": self.daemon.health_check(), "router": self.router.health_check(),
                 "backpressure": self.backpressure.health_check(),
                 "live_snapshots": self.live.health_check(),
                 "verification": self.verifier.health_check(),
                 "scrub": self.scrub.health_check(),
                 "recovery": self.recovery.health_check(),
                 **{f"transport:{t.name}": t.health_check() for t in self.transports}}
        if self.membership:
            parts["membership"] = self.membership.health_check()
        if self.manifest_pull:
            parts["manifest_pull"] = self.manifest_pull.health_check()
        if self.gossip:
            parts["gossip"] = self.gossip.health_check()
        if self.push:
            parts["sync_push"] = self.push.health_check()
        parts["hooks"] = self.hooks.health_check()
        return HealthCheckResult.combine(parts)
