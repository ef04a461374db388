"""ReplicaVerifier without a Node: a real ClusterManifest, EventBus, DataRoot and
StoredCopies on tmp_path; its run is a background task in the verifier's TaskSet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.daemons.verification import ReplicaVerifier, VerificationRunning, stored_copies
from engine.events import EventType
from engine.manifest import ClusterManifest, Replica
from tests.unit.test_scrub_parts import Parts

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> Parts:
    return Parts(tmp_path, open_manifest("coord"))


def verifier(parts: Parts) -> ReplicaVerifier:
    return ReplicaVerifier("coord", manifest=parts.manifest, copies=parts.copies,
                           emit=parts.bus.emit)


async def finished(v: ReplicaVerifier) -> None:
    for _ in range(500):
        if not v.running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the verification never finished")


def test_stored_copies_are_the_copies_not_the_own_sources(parts: Parts) -> None:
    theirs, _ = parts.copy("gpu-1", "npz/k/a.npz", b"a" * 10)
    own, _ = parts.copy("coord", "npz/k/pushed-back.npz", b"p" * 10)  # a copy of its own
    parts.manifest.set_replica(Replica("npz", "k/src.npz", "coord", "0" * 64, time.time(),
                                       origin="coord", root_id="root-coord"))
    found = stored_copies("coord", parts.manifest, parts.copies)
    assert sorted(a.key for a, _ in found) == sorted([theirs.key, own.key])


async def test_a_run_re_hashes_every_copy_and_quarantines_what_changed(parts: Parts) -> None:
    good, _ = parts.copy("gpu-1", "npz/k/good.npz", b"g" * 100)
    bad, bad_file = parts.copy("gpu-1", "npz/k/bad.npz", b"b" * 100)
    gone, gone_file = parts.copy("gpu-2", "npz/k/gone.npz", b"x" * 100)
    bad_file.write_bytes(b"B" * 100)
    gone_file.unlink()
    v = verifier(parts)
    assert v.health_check().message == "no verification run yet"
    assert v.start("operator") == {"node": "coord", "replicas": 3, "started": True}
    with pytest.raises(VerificationRunning):
        v.start("operator")
    await finished(v)
    assert (v.last["checked"], v.last["matched"], v.last["mismatched"], v.last["missing"]) == (
        3, 1, 1, 1)
    [summary] = parts.events(EventType.REPLICAS_VERIFIED)
    assert summary.requested_by == "operator"
    assert {e.artifact for e in parts.events(EventType.REPLICA_QUARANTINED)} == {
        bad.key, gone.key}
    assert parts.holds(good) and not parts.holds(bad) and not parts.holds(gone)
    assert v.health_check().message == "last run: 1 of 3 copies matched, 1 changed, 1 missing"
    assert v.start("again")["replicas"] == 1, "a finished run lets the next start"
    await finished(v)


async def test_stop_cancels_a_run_under_way(parts: Parts) -> None:
    parts.copy("gpu-1", "npz/k/a.npz", b"a" * 100)
    v = verifier(parts)
    async with parts.copies.hash_slots, parts.copies.hash_slots:  # every slot taken: it waits
        v.start("operator")
        await asyncio.sleep(0.05)
        assert v.running and v.health_check().message == "verification running"
        await v.stop()
    assert not v.running and v.last is None
    assert parts.events(EventType.REPLICAS_VERIFIED) == []
