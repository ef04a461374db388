"""AutoSyncDaemon without a Node, built from its narrow collaborators as ``Node._build_sync``
wires it: a real manifest, router, scanner over a real data root, pause gate, snapshot keeper
and push path, the target a scripted transport."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config.schema import AutoSync
from engine.daemons.auto_sync import AutoSyncDaemon
from engine.daemons.retry import RetryState
from engine.events import EventType
from engine.manifest import ClusterManifest
from engine.transport import TransferError
from tests.unit.test_push_path_parts import (NODE, NodeParts, make_database, make_node_parts,
                                             write_file)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> NodeParts:
    return make_node_parts(tmp_path, open_manifest(NODE))


def make_daemon(parts: NodeParts, interval: float = 60.0,
                strategy: str = "push_from_generator") -> AutoSyncDaemon:
    return AutoSyncDaemon(
        NODE, strategy, AutoSync(interval_seconds=interval), manifest=parts.manifest,
        router=parts.router, scanner=parts.scanner, pushes=parts.pushes.path, pause=parts.pause,
        snapshots=parts.snapshots, emit=parts.bus.emit, root_id="root-gpu-1")


def test_an_unknown_strategy_is_refused(parts: NodeParts) -> None:
    with pytest.raises(ValueError, match="strategy 'torrent' is not available"):
        make_daemon(parts, strategy="torrent")


async def test_a_cycle_registers_a_new_file_and_pushes_it_to_the_coordinator(
        parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 700)
    write_file(parts.data.root / "npz" / "k" / "busy.npz", b"still written", age=0.0)
    report = await daemon.run_cycle()
    assert (report.scanned, report.pushed, report.bytes, report.failed) == (1, 1, 700, 0)
    [art] = parts.manifest.artifacts(origin=NODE)  # the busy file is not finished yet
    assert art.key == "npz/k/a.npz" and art.config_key == "k"
    assert parts.transport.targets() == ["coord"]
    assert parts.manifest.verified_holders(art) == {NODE, "coord"}
    [own] = [r for r in parts.manifest.replicas(art) if r.node == NODE]
    assert own.root_id == "root-gpu-1"
    [started] = parts.events(EventType.DATA_SYNC_STARTED)
    assert (started.source, started.targets, started.files, started.bytes, started.reason,
            started.urgency) == (NODE, ["coord"], 1, 700, "interval", "normal")
    [done] = parts.events(EventType.DATA_SYNC_COMPLETED)
    assert (done.target, done.files, done.bytes, done.artifacts, done.reason) == (
        "coord", 1, 700, ["npz/k/a.npz"], "interval")
    assert len(parts.pushes.path.inflight) == 0
    # the next cycle finds nothing new and nothing to push
    again = await daemon.run_cycle()
    assert (again.scanned, again.pushed) == (0, 0)
    assert len(parts.transport.requests) == 1
    assert len(parts.events(EventType.DATA_SYNC_STARTED)) == 1
    assert daemon.cycles == 2 and daemon.backlog_files == 0 and daemon.unplaced == 0
    assert daemon.health_check().is_healthy


async def test_a_paused_node_scans_but_pushes_nothing(parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    write_file(parts.data.root / "models" / "m.pth", b"weights")
    parts.pause.set(True, "operator")
    report = await daemon.run_cycle()
    assert report.skipped_paused and report.scanned == 1 and report.pushed == 0
    assert parts.transport.requests == []
    assert parts.events(EventType.DATA_SYNC_STARTED) == []
    assert daemon.backlog_files == 1 and daemon.status()["paused"] is True
    parts.pause.set(False, "operator")
    assert (await daemon.run_cycle("resume")).pushed == 1
    assert parts.transport.targets() == ["coord"]


async def test_a_database_is_pushed_as_its_snapshot_which_goes_once_placed(
        parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    make_database(parts.data.root / "games" / "k" / "g.db", rows=20)
    assert (await daemon.run_cycle()).pushed == 1
    [art] = parts.manifest.artifacts(origin=NODE)
    [request] = parts.transport.requests
    snapshot = parts.scanner.snapshot_path("games", "k/g.db")
    assert request.source_file == snapshot
    assert hashlib.sha256(parts.transport.sent[0]).hexdigest() == art.sha256
    assert parts.manifest.verified_holders(art) == {"coord"}  # a snapshot: no own replica
    assert not snapshot.exists(), "placed everywhere the router names: the snapshot goes"


async def test_a_failed_push_backs_off_until_a_priority_cycle(parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 10)
    parts.transport.fail["coord"] = TransferError("coord answered 503", target_fault=False)
    report = await daemon.run_cycle()
    assert (report.pushed, report.failed) == (0, 1)
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.reason, failed.attempt) == ("coord", "interval", 1)
    assert 0.05 <= daemon.next_delay() <= 10.0 < daemon.interval  # the retry comes first
    assert daemon.status()["retrying"] == 1 and daemon.backlog_files == 1
    await daemon.run_cycle()  # an interval cycle respects the backoff
    assert len(parts.transport.requests) == 1
    del parts.transport.fail["coord"]
    daemon.sync_now("manual")
    assert daemon.wakeup.is_set()
    await daemon.step()  # a priority cycle skips the backoff
    assert len(parts.transport.requests) == 2
    assert parts.events(EventType.DATA_SYNC_COMPLETED)[-1].reason == "manual"
    assert daemon.status()["retrying"] == 0 and daemon.backlog_files == 0


async def test_every_push_failing_for_an_interval_is_nowhere_to_push(
        parts: NodeParts) -> None:
    daemon = make_daemon(parts, interval=0.2)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 10)
    parts.transport.fail["coord"] = TransferError("coord unreachable", target_fault=False)
    before = time.time()
    await daemon.run_cycle()
    since = daemon.stuck_since()
    assert since is not None and before <= since <= time.time()
    await asyncio.sleep(0.25)
    health = daemon.health_check()
    assert not health.is_healthy
    assert health.message.startswith("nowhere to push: 1 artifacts on this node only for")
    assert "coord unreachable" in health.message
    assert (health.details["stuck_since"], health.details["unplaced"]) == (since, 1)
    # paused: not a problem of the node's
    parts.pause.set(True, "operator")
    assert daemon.health_check().is_healthy
    parts.pause.set(False, "operator")
    # a push that arrives ends it
    del parts.transport.fail["coord"]
    await daemon.run_cycle("manual")
    assert daemon.stuck_since() is None and daemon.unplaced == 0
    assert daemon.health_check().is_healthy


async def test_a_push_that_arrives_restarts_the_stuck_clock(parts: NodeParts) -> None:
    daemon = make_daemon(parts, interval=0.2)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 10)
    write_file(parts.data.root / "npz" / "k" / "b.npz", b"b" * 10)
    parts.transport.fail["coord"] = TransferError("coord unreachable", target_fault=False)
    await daemon.run_cycle()
    first = daemon.stuck_since()
    assert first is not None and daemon.unplaced == 2
    await asyncio.sleep(0.25)
    assert not daemon.health_check().is_healthy
    del parts.transport.fail["coord"]
    parts.transport.fail_artifacts["npz/k/b.npz"] = TransferError("b is refused",
                                                                  target_fault=False)
    await daemon.run_cycle("manual")  # a arrives, b still fails
    since = daemon.stuck_since()
    assert since is not None and since > first and daemon.unplaced == 1
    assert daemon.health_check().is_healthy, "something arrived within the interval"


async def test_a_target_held_back_for_an_interval_is_nowhere_to_push_too(
        parts: NodeParts) -> None:
    daemon = make_daemon(parts, interval=0.2)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 10)
    parts.view.down.add("coord")
    await daemon.run_cycle()
    assert parts.transport.requests == []  # nothing to try
    assert daemon.stuck_since() is not None
    await asyncio.sleep(0.25)
    assert daemon.health_check().message.startswith("nowhere to push: 1 artifacts")
    parts.view.down.discard("coord")
    await daemon.run_cycle()
    assert daemon.stuck_since() is None and daemon.health_check().is_healthy


async def test_a_refused_file_name_does_not_stop_the_cycle(parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    folder = parts.data.root / "npz" / "k"
    write_file(folder / "good.npz", b"good")
    bad = os.path.join(os.fsencode(folder), b"bad\xff.npz")
    with open(bad, "wb") as fh:
        fh.write(b"bad")
    os.utime(bad, (time.time() - 60, time.time() - 60))
    report = await daemon.run_cycle()
    assert (report.scanned, report.pushed) == (1, 1)
    assert [a.key for a in parts.manifest.artifacts(origin=NODE)] == ["npz/k/good.npz"]
    [refused] = parts.events(EventType.DATA_SYNC_FAILED)
    assert (refused.target, refused.reason, refused.artifact, refused.attempt,
            refused.retry_in_seconds) == (NODE, "scan", "npz/k/bad\\xff.npz", 0, None)
    assert "not valid UTF-8" in refused.error
    health = daemon.health_check()
    assert health.is_healthy
    assert health.message == "auto sync running; 1 file name refused"
    assert health.details["refused_names"] == ["npz/k/bad\\xff.npz"]
    await daemon.run_cycle()
    assert len(parts.events(EventType.DATA_SYNC_FAILED)) == 1, "reported once per name"


async def test_a_push_that_cannot_be_retried_needs_an_operator(parts: NodeParts) -> None:
    daemon = make_daemon(parts)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a")
    parts.transport.fail["coord"] = TransferError("coord holds other bytes", retryable=False,
                                                  target_fault=False)
    await daemon.run_cycle()
    await daemon.run_cycle("manual")  # never tried again, even by a priority cycle
    assert len(parts.transport.requests) == 1
    health = daemon.health_check()
    assert not health.is_healthy and health.message == "1 pushes need an operator"
    assert health.details["blocked"] == ["npz/k/a.npz -> coord"]
    assert daemon.status()["blocked"] == 1


async def test_a_snapshot_that_cannot_be_remade_fails_its_push_not_the_cycle(
        parts: NodeParts, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError re-making one database's snapshot is that push's failure: the cycle ends
    normally, the other file arrives and no claim is left behind."""
    daemon = make_daemon(parts)
    write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 700)
    write_file(parts.data.root / "npz" / "k" / "b.npz", b"b" * 700)
    real = parts.snapshots.source_for

    async def source_for(art):  # type: ignore[no-untyped-def]
        if art.path.endswith("b.npz"):
            raise OSError(5, "Input/output error")
        return await real(art)

    monkeypatch.setattr(parts.snapshots, "source_for", source_for)
    report = await daemon.run_cycle()
    assert (report.pushed, report.failed) == (1, 1)
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert failed.artifact == "npz/k/b.npz" and "Input/output error" in failed.error
    assert failed.retry_in_seconds is not None
    assert len(parts.pushes.path.inflight) == 0


async def test_only_retries_of_pushes_a_cycle_would_make_wake_the_daemon(
        parts: NodeParts) -> None:
    """A due retry of a version that was superseded (or of a live snapshot) must not make
    the daemon cycle every 50 ms for ever."""
    daemon = make_daemon(parts, interval=60.0)
    file = write_file(parts.data.root / "npz" / "k" / "a.npz", b"a" * 700)
    parts.transport.fail["coord"] = TransferError("coord unreachable")
    await daemon.run_cycle()
    [old] = parts.manifest.artifacts(origin=NODE)
    assert parts.pushes.path.state((old.ident, "coord")) is not None
    parts.pushes.path.retries[("live", "games/k/x.db")] = RetryState(1, 0.0)  # due now
    write_file(file, b"b" * 900)  # rewritten: a new version supersedes the failed one
    del parts.transport.fail["coord"]
    await daemon.run_cycle()
    assert parts.pushes.path.state((old.ident, "coord")) is None, "the stale key went"
    assert daemon.next_delay() == pytest.approx(60.0, abs=0.5)
