"""PushPath without a Node: a real ClusterManifest, EventBus, Breakers, PushLimiter,
InFlight, TransferTracker and RetryPolicy; the target is a scripted transport.

The helpers here (``FakeTransport``, ``make_push_path``, ``cluster_config``, ``write_file``)
are shared by the other ``*_parts`` tests of the sync daemons.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.cluster_view import ClusterView
from engine.config import ClusterConfig
from engine.daemons.breaker import Breakers
from engine.daemons.limiter import PushLimiter
from engine.daemons.retry import RetryPolicy
from engine.daemons.snapshots import SnapshotKeeper
from engine.events import EventBus, EventType
from engine.health import HealthCheckResult
from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest
from engine.pause import PauseGate
from engine.paths import DataRoot
from engine.push_path import PushPath
from engine.router import SyncRouter
from engine.scanner import Scanner
from engine.transfers import Transfer, TransferTracker
from engine.transport import PushRequest, PushResult, TransferError
from engine.transport.registry import Transports

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NODE = "gpu-1"


# -- shared helpers -------------------------------------------------------------------------
class FakeTransport:
    """A scripted target side: ``fail[target]`` is raised for pushes to ``target`` (until
    removed), ``gate`` (when set) holds every push until it is set; otherwise the push
    "arrives" and the result vouches for the SHA-256 of the bytes read from the source file."""

    name = "http"

    def __init__(self) -> None:
        self.requests: list[PushRequest] = []
        self.sent: list[bytes] = []
        """The bytes of each push, read while it ran."""
        self.fail: dict[str, TransferError] = {}
        self.gate: asyncio.Event | None = None
        self.fail_artifacts: dict[str, TransferError] = {}
        """Raised for pushes of an artifact (by key), whatever the target."""
        self.holds: dict[str, asyncio.Event] = {}
        """Per target: pushes to it wait until its event is set."""
        self.started = asyncio.Event()
        """Set as soon as a push reached the transport."""

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        self.requests.append(request)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if request.target in self.holds:
            await self.holds[request.target].wait()
        error = self.fail.get(request.target) or self.fail_artifacts.get(request.artifact.key)
        if error is not None:
            raise error
        data = request.source_file.read_bytes()
        self.sent.append(data)
        transfer.done = len(data)
        return PushResult(request.target, hashlib.sha256(data).hexdigest(), len(data),
                          time.time(), False, len(data), root_id=f"root-{request.target}")

    def health_check(self) -> HealthCheckResult:
        return HealthCheckResult(True, "fake transport", {})

    def targets(self) -> list[str]:
        return [r.target for r in self.requests]


@dataclass
class Pushes:
    """A PushPath and the real parts behind it."""

    path: PushPath
    transport: FakeTransport
    manifest: ClusterManifest
    bus: EventBus
    breakers: Breakers
    transfers: TransferTracker
    backpressure: list[tuple[str, str]] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [1000.0])

    def events(self, kind: EventType) -> list[Any]:
        return [e.payload for e in self.bus.recent(10_000) if e.type is kind]


def make_push_path(manifest: ClusterManifest, bus: EventBus | None = None, *,
                   node: str = NODE, breakers: Breakers | None = None, threshold: int = 3,
                   strategy: str = "push_from_generator", attach: bool = True,
                   slots: int = 4, inflight: InFlight | None = None,
                   pause: PauseGate | None = None) -> Pushes:
    bus = bus or EventBus(node)
    clock = [1000.0]
    breakers = breakers or Breakers(node, bus, failure_threshold=threshold, reset_seconds=30,
                                    clock=lambda: clock[0])
    transfers = TransferTracker()
    transport = FakeTransport()
    pressure: list[tuple[str, str]] = []
    path = PushPath(node, strategy, limiter=PushLimiter(slots), inflight=inflight or InFlight(),
                    breakers=breakers, transfers=transfers, record=manifest.register_sync,
                    emit=bus.emit, url_of=lambda n: f"http://{n}.test:9000",
                    on_backpressure=lambda t, why: pressure.append((t, why)),
                    retry=RetryPolicy(10.0, 60.0), pause=pause)
    if attach:
        path.attach(Transports([transport], "http"))
    return Pushes(path, transport, manifest, bus, breakers, transfers, pressure, clock)


def cluster_config(tmp_path: Path, **settings: Any) -> ClusterConfig:
    """coord (coordinator), gpu-1, cpu-1, gpu-2: the order replica targets are chosen in is
    coordinator, CPU, GPU."""
    hosts: dict[str, dict[str, Any]] = {
        "coord": {"role": "coordinator"}, "gpu-1": {"role": "gpu"}, "cpu-1": {"role": "cpu"},
        "gpu-2": {"role": "gpu"}}
    for port, (name, host) in enumerate(hosts.items(), start=9100):
        host.update(provider="test", port=port, data_root=str(tmp_path / name))
    return ClusterConfig.model_validate({"hosts": hosts, **settings})


def write_file(file: Path, data: bytes, age: float = 60.0) -> Path:
    """``data`` at ``file``, last modified ``age`` seconds ago (finished for the scanner)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    then = time.time() - age
    os.utime(file, (then, then))
    return file


def artifact_of(file: Path, rel: str, origin: str = NODE) -> Artifact:
    data = file.read_bytes()
    data_type, path = rel.split("/", 1)
    return Artifact(data_type, path, path.split("/")[0] if "/" in path else None, len(data),
                    hashlib.sha256(data).hexdigest(), time.time(), origin)


@dataclass
class NodeParts:
    """The real parts of one node's sync side, with no Node: data root, scanner, router,
    pause gate, snapshot keeper and push path (its target a ``FakeTransport``)."""

    config: ClusterConfig
    data: DataRoot
    scanner: Scanner
    view: ClusterView
    router: SyncRouter
    pause: PauseGate
    snapshots: SnapshotKeeper
    pushes: Pushes

    @property
    def manifest(self) -> ClusterManifest:
        return self.pushes.manifest

    @property
    def bus(self) -> EventBus:
        return self.pushes.bus

    @property
    def transport(self) -> FakeTransport:
        return self.pushes.transport

    def events(self, kind: EventType) -> list[Any]:
        return self.pushes.events(kind)


def make_node_parts(tmp_path: Path, manifest: ClusterManifest, *, node: str = NODE,
                    finished_after: float = 1.0, threshold: int = 3,
                    capacity: int = 10 * 2**30, **settings: Any) -> NodeParts:
    config = cluster_config(tmp_path, **settings)
    data = DataRoot(tmp_path / "roots" / node)
    data.create()
    bus = EventBus(node)
    view = ClusterView()
    breakers = Breakers(node, bus, failure_threshold=threshold, reset_seconds=30)
    router = SyncRouter(config, node, manifest, view, breakers)
    pushes = make_push_path(manifest, bus, node=node, breakers=breakers,
                            strategy=config.strategy_for(node))
    pushes.path._on_backpressure = router.backpressure
    scanner = Scanner(data, node, config.sync_routing.exclude_patterns, finished_after)
    snapshots = SnapshotKeeper(node, scanner, manifest, router, pushes.path.inflight,
                               lambda: capacity)
    return NodeParts(config, data, scanner, view, router, PauseGate(node, bus.emit), snapshots,
                     pushes)


def make_database(file: Path, rows: int, age: float | None = 60.0, blob: int = 100) -> Path:
    """A closed SQLite database of ``rows`` rows of ``blob`` bytes each (``age``: seconds
    since its last change, None: now)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(file)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS games (id INTEGER PRIMARY KEY, moves BLOB)")
        db.executemany("INSERT INTO games (moves) VALUES (?)",
                       [(os.urandom(blob),) for _ in range(rows)])
        db.commit()
    finally:
        db.close()
    if age is not None:
        then = time.time() - age
        os.utime(file, (then, then))
    return file


# -- PushPath -------------------------------------------------------------------------------
@pytest.fixture
def parts(open_manifest: Callable[[str], ClusterManifest]) -> Pushes:
    return make_push_path(open_manifest(NODE), threshold=2)


@pytest.fixture
def art(tmp_path: Path) -> tuple[Artifact, Path]:
    file = write_file(tmp_path / "src" / "a.npz", b"x" * 1000)
    return artifact_of(file, "npz/k/a.npz"), file


async def test_a_push_that_arrives_records_the_receipt_and_closes_the_breaker(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.breakers.failure("coord", "earlier trouble")  # one failure short of opening
    assert parts.breakers.get("coord").failures == 1
    ok = await parts.path.push(artifact, "coord", "interval", source_file=file, urgent=True)
    assert ok is True
    [request] = parts.transport.requests
    assert (request.target, request.target_url, request.reason, request.urgency,
            request.live) == ("coord", "http://coord.test:9000", "interval", "urgent", False)
    # the target's verification is the manifest's verified replica on the target
    assert parts.manifest.verified_holders(artifact) == {"coord"}
    [receipt] = parts.manifest.receipts()
    assert (receipt.source_node, receipt.target_node, receipt.sha256, receipt.size,
            receipt.transport, receipt.root_id, receipt.origin) == (
        NODE, "coord", artifact.sha256, 1000, "http", "root-coord", NODE)
    assert parts.breakers.get("coord").failures == 0
    assert parts.breakers.state("coord") == "closed"
    assert parts.path.totals == {"pushed_files": 1, "pushed_bytes": 1000, "failed": 0}
    [transfer] = parts.transfers.recent
    assert (transfer.target, transfer.error, transfer.attempt) == ("coord", None, 1)
    assert not parts.transfers.live
    assert parts.events(EventType.DATA_SYNC_FAILED) == []


async def test_a_half_open_breaker_closes_on_a_successful_probe(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.breakers.failure("coord", "down")
    parts.breakers.failure("coord", "down")
    assert parts.breakers.state("coord") == "open"
    parts.clock[0] += 31  # the reset period is over: one probe may go
    assert parts.breakers.state("coord") == "half_open"
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is True
    assert parts.breakers.state("coord") == "closed"
    changes = [(p.previous, p.state) for p in parts.events(EventType.CIRCUIT_BREAKER_CHANGED)]
    assert changes[-1] == ("half_open", "closed")


async def test_a_failed_push_is_reported_with_its_retry_time_and_backs_off(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("coord answered 503", target_fault=False)
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.source, failed.target, failed.artifact, failed.error, failed.attempt,
            failed.reason, failed.strategy) == (NODE, "coord", "npz/k/a.npz",
                                                 "coord answered 503", 1, "interval",
                                                 "push_from_generator")
    assert failed.retry_in_seconds is not None and 5.0 <= failed.retry_in_seconds <= 10.0
    key = (artifact.ident, "coord")
    assert parts.path.ready(key) is False
    state = parts.path.state(key)
    assert state is not None and state.attempts == 1 and not state.permanent
    assert parts.manifest.receipts() == [] and parts.manifest.verified_holders(artifact) == set()
    assert parts.path.totals["failed"] == 1 and parts.path.last_error == "coord answered 503"
    assert parts.breakers.get("coord").failures == 0  # not the target's fault
    [transfer] = parts.transfers.recent
    assert transfer.error == "coord answered 503"
    # the next attempt counts on; a success clears the retry state
    state.next_at = 0.0
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    assert parts.events(EventType.DATA_SYNC_FAILED)[-1].attempt == 2
    del parts.transport.fail["coord"]
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is True
    assert parts.path.state(key) is None and parts.path.ready(key)
    assert parts.transfers.recent[-1].attempt == 3


async def test_a_failure_that_cannot_be_retried_is_permanent(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("conflict: other bytes", retryable=False,
                                                  target_fault=False)
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert failed.retry_in_seconds is None
    state = parts.path.state((artifact.ident, "coord"))
    assert state is not None and state.permanent
    assert parts.path.ready((artifact.ident, "coord")) is False


async def test_target_faults_feed_the_breaker_which_then_holds_pushes_back(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("coord unreachable")  # target_fault
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    assert parts.breakers.state("coord") == "closed"
    assert await parts.path.push(artifact, "coord", "interval", source_file=file,
                                 retry=False) is False
    assert parts.breakers.state("coord") == "open"  # threshold 2
    [opened] = parts.events(EventType.CIRCUIT_BREAKER_CHANGED)
    assert (opened.target, opened.state, opened.previous) == ("coord", "open", "closed")
    tried, failures = len(parts.transport.requests), len(parts.events(EventType.DATA_SYNC_FAILED))
    # open: nothing is tried and nothing reported, the answer is None
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is None
    assert len(parts.transport.requests) == tried == 2
    assert len(parts.events(EventType.DATA_SYNC_FAILED)) == failures == 2
    assert len(parts.transfers.recent) == 2 and not parts.transfers.live


async def test_a_backpressure_refusal_goes_to_the_router(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("coord is full", target_fault=False,
                                                  backpressure="disk")
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    assert parts.backpressure == [("coord", "disk")]
    assert parts.breakers.get("coord").failures == 0
    parts.transport.fail["coord"] = TransferError("coord 500")
    await parts.path.push(artifact, "coord", "interval", source_file=file, retry=False)
    assert parts.backpressure == [("coord", "disk")], "only a backpressure refusal is handed on"


async def test_a_live_push_records_no_receipt(parts: Pushes,
                                              art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    key = ("live", artifact.key)
    parts.transport.fail["coord"] = TransferError("busy", target_fault=False)
    assert await parts.path.push(artifact, "coord", "live_snapshot", source_file=file,
                                 live=True, retry_key=key) is False
    assert not parts.path.ready(key)
    assert parts.path.state((artifact.ident, "coord")) is None  # under its own key only
    del parts.transport.fail["coord"]
    parts.path.retries[key].next_at = 0.0
    assert await parts.path.push(artifact, "coord", "live_snapshot", source_file=file,
                                 live=True, retry_key=key) is True
    assert parts.transport.requests[-1].live is True
    assert parts.manifest.receipts() == []
    assert parts.manifest.verified_holders(artifact) == set()
    assert parts.path.state(key) is None
    assert parts.path.totals["pushed_files"] == 1


async def test_a_one_off_push_schedules_no_retry(parts: Pushes,
                                                 art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("coord 503", target_fault=False)
    assert await parts.path.push(artifact, "coord", "gossip", source_file=file,
                                 retry=False) is False
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert failed.retry_in_seconds is None and failed.attempt == 1
    assert parts.path.retries == {}


async def test_a_vanished_source_or_no_transport_fails_without_blaming_the_target(
        open_manifest: Callable[[str], ClusterManifest], art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts = make_push_path(open_manifest(NODE), threshold=1, attach=False)
    assert await parts.path.push(artifact, "coord", "interval", source_file=file) is False
    assert "no transport yet" in parts.events(EventType.DATA_SYNC_FAILED)[-1].error
    parts.path.attach(Transports([parts.transport], "http"))
    gone = file.with_name("gone.npz")
    assert await parts.path.push(artifact, "cpu-1", "interval", source_file=gone) is False
    assert "gone.npz vanished" in parts.events(EventType.DATA_SYNC_FAILED)[-1].error
    assert parts.transport.requests == []
    assert parts.breakers.state("coord") == parts.breakers.state("cpu-1") == "closed"


async def test_push_once_skips_a_pair_that_is_claimed_and_releases_its_own_claim(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    pair = (artifact.ident, "coord")
    assert parts.path.inflight.claim_one(pair)
    assert await parts.path.push_once(artifact, "coord", "gossip", source_file=file) is None
    assert parts.transport.requests == []
    assert pair in parts.path.inflight  # the other claimer's claim stays
    parts.path.inflight.release((pair,))
    parts.transport.gate = asyncio.Event()
    task = asyncio.create_task(parts.path.push_once(artifact, "coord", "gossip",
                                                    source_file=file))
    await parts.transport.started.wait()
    assert pair in parts.path.inflight
    assert await parts.path.push_once(artifact, "coord", "gossip", source_file=file) is None
    parts.transport.gate.set()
    assert await task is True
    assert pair not in parts.path.inflight and len(parts.path.inflight) == 0
    assert len(parts.transport.requests) == 1


async def test_forget_drops_the_retry_state_of_rejected_keys(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    artifact, file = art
    parts.path.failed(artifact.key, "coord", "x", True, "interval", ("a", 1))
    parts.path.failed(artifact.key, "coord", "x", True, "interval", ("b", 2))
    parts.path.forget(lambda k: k[0] == "a")
    assert set(parts.path.retries) == {("a", 1)}


async def test_a_push_waiting_for_a_slot_starts_nothing_once_the_node_is_paused(
        open_manifest: Callable[[str], ClusterManifest], art: tuple[Artifact, Path]) -> None:
    bus = EventBus(NODE)
    gate = PauseGate(NODE, bus.emit)
    parts = make_push_path(open_manifest(NODE), bus, slots=1, pause=gate)
    artifact, file = art
    parts.transport.gate = asyncio.Event()
    first = asyncio.create_task(parts.path.push(artifact, "coord", "interval", source_file=file))
    await parts.transport.started.wait()
    queued = asyncio.create_task(parts.path.push(artifact, "cpu-1", "interval",
                                                 source_file=file))
    await asyncio.sleep(0.01)
    gate.set(True, "test")  # paused while the second push waits for the only slot
    parts.transport.gate.set()
    assert await first is True
    assert await queued is None
    assert parts.transport.targets() == ["coord"]


async def test_a_live_push_refused_as_not_retryable_is_still_tried_again(
        parts: Pushes, art: tuple[Artifact, Path]) -> None:
    """A 401 during a token rotation must not stop a database's live snapshots for good."""
    artifact, file = art
    parts.transport.fail["coord"] = TransferError("401 bad token", retryable=False)
    key = ("live", artifact.key)
    assert await parts.path.push(artifact, "coord", "live_snapshot", source_file=file,
                                 live=True, retry_key=key) is False
    state = parts.path.state(key)
    assert state is not None and not state.permanent
