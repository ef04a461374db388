"""StartupChecks without a Node: a real data root, ClusterManifest, StoredCopies and
EventBus; the failing step is a real OSError of the data root."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.copies import StoredCopies
from engine.events import EventBus, EventType
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.paths import DataRoot
from engine.startup import StartupChecks

pytestmark = pytest.mark.unit

NODE = "gpu-1"
SHA = "ab" * 32


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]):
    data = DataRoot(tmp_path / "root")
    data.create()
    manifest = open_manifest(NODE)
    bus = EventBus(NODE)
    copies = StoredCopies(NODE, data, manifest, bus, "root-1", 2)
    yield data, manifest, bus, copies
    bus.close()


def lost_copy(manifest: ClusterManifest) -> Replica:
    """A copy of cpu-1's artifact the manifest says this node holds, not on the disk."""
    manifest.upsert_artifact(Artifact("npz", "k/a.npz", None, 10, SHA, time.time(), "cpu-1"))
    rep = Replica("npz", "k/a.npz", NODE, SHA, time.time(), origin="cpu-1", root_id="root-1")
    manifest.set_replica(rep)
    return rep


def test_every_step_runs_in_order_and_once(parts) -> None:
    data, manifest, bus, copies = parts
    lost_copy(manifest)
    before = manifest.manifest_id
    checks = StartupChecks(NODE, data, manifest, copies, bus.emit)
    assert checks.run() and checks.done
    assert manifest.manifest_id != before, "a new incarnation"
    assert manifest.held_by(NODE) == [], "reconciled: the lost copy is no longer counted"
    assert checks.health_check().is_healthy
    after = manifest.manifest_id
    assert checks.run() and manifest.manifest_id == after, "nothing runs twice"
    assert not bus.recent()


def test_a_failing_step_is_reported_once_retried_and_holds_back_the_rest(parts) -> None:
    data, manifest, bus, copies = parts
    lost_copy(manifest)
    (data.state / "deleting").mkdir(parents=True)
    (data.state / "deleting" / "leftover.bin").write_bytes(b"x")
    data.quarantine.mkdir(parents=True, exist_ok=True)
    data.quarantine.rmdir()
    data.quarantine.write_bytes(b"not a directory")  # moving the stray there fails
    before = manifest.manifest_id
    checks = StartupChecks(NODE, data, manifest, copies, bus.emit)

    assert not checks.run() and not checks.run()
    assert manifest.manifest_id != before, "the step ahead of the failing one is done"
    health = checks.health_check()
    assert not health.is_healthy and "interrupted deletions failed" in health.message
    assert health.details["pending"] == ["interrupted deletions", "reconcile with the disk"]
    failed = [e for e in bus.recent() if e.type == EventType.DATA_SYNC_FAILED]
    assert len(failed) == 1, "the same error is reported once"
    assert failed[0].payload.reason == "startup" and failed[0].payload.target == NODE
    assert "interrupted deletions failed" in failed[0].payload.error
    assert len(manifest.held_by(NODE)) == 1, "reconcile waits for the step before it"

    data.quarantine.unlink()  # the operator freed it
    assert checks.run() and checks.done and checks.health_check().is_healthy
    assert (data.quarantine / "deleting" / "leftover.bin").read_bytes() == b"x"
    assert manifest.held_by(NODE) == []
