"""Cleaner runs without a Node: a real DataRoot, ClusterManifest, Scanner, InFlight,
EventBus, DiskUsage (against a quota) and VouchClient; the holders' live vouches come from
a stand-in peer client that answers ``GET /v1/vouch/...`` for the copies it is told of.

The local checks on each source (unchanged, idle, closed) are tests/unit/test_cleanup.py's.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.capacity import DiskUsage
from engine.daemons.cleanup import Cleaner
from engine.events import EventBus, EventType
from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.manifest.store import stat_identity
from engine.paths import DataRoot
from engine.peer_client import PeerAnswer, PeerError
from engine.scanner import Scanner
from engine.vouches import VouchClient
from tests.unit.test_push_path_parts import cluster_config, write_file

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

KIB = 1024
QUOTA = 1024 * KIB


class Holders:
    """A stand-in PeerClient: each holder vouches for the versions (SHA-256) it is given."""

    def __init__(self) -> None:
        self.copies: dict[str, dict[str, int]] = {}
        """holder -> {sha256: size} it holds."""

    async def call(self, peer: str, method: str, path: str, *, timeout: float,
                   expect: Collection[int] = (200,), params: Mapping[str, str] | None = None,
                   **_: Any) -> PeerAnswer:
        assert method == "GET" and path.startswith("/v1/vouch/") and params is not None
        held = self.copies.get(peer)
        if held is None:
            raise PeerError(f"{peer} unreachable", node=peer, unreachable=True)
        size = held.get(params["sha256"])
        if size is None:
            return PeerAnswer(404, {"error": "no copy"}, b"")
        body = {"node": peer, "sha256": params["sha256"], "size": size, "rehashed": True,
                "root_id": f"root-{peer}"}
        return PeerAnswer(200, body, b"")


class Parts:
    def __init__(self, tmp_path: Path, manifest: ClusterManifest) -> None:
        config = cluster_config(tmp_path)
        self.data = DataRoot(tmp_path / "gpu-1")
        self.data.create()
        self.manifest = manifest
        self.bus = EventBus("gpu-1")
        self.inflight = InFlight()
        self.usage = DiskUsage(self.data, QUOTA)
        self.holders = Holders()
        self.vouches = VouchClient("gpu-1", "root-gpu-1", manifest=manifest,
                                   hosts=config.hosts, policy=config.sync_routing.policy,
                                   peers=self.holders)  # type: ignore[arg-type]
        self.scanner = Scanner(self.data, "gpu-1", [], 0.0)

    def cleaner(self, cleanup_percent: float) -> Cleaner:
        return Cleaner("gpu-1", 2, cleanup_percent, 0.0, data=self.data,
                       manifest=self.manifest, scanner=self.scanner, inflight=self.inflight,
                       vouches=self.vouches, measure=self.usage.refresh,
                       note_stored=self.usage.note_stored, emit=self.bus.emit)

    def source(self, name: str, age: float, *vouching: str) -> tuple[Artifact, Path]:
        """An own finished 100 KiB source, ``age`` seconds old, held (and vouched for, live)
        by ``vouching``."""
        body = name.encode() * (100 * KIB // len(name))
        file = write_file(self.data.root / "npz" / "k" / name, body, age=age)
        dev, ino, size, mtime_ns, ctime_ns = stat_identity(file.stat())
        art = Artifact("npz", f"k/{name}", "k", size, hashlib.sha256(body).hexdigest(),
                       file.stat().st_mtime, "gpu-1", size, mtime_ns, dev, ino, ctime_ns)
        self.manifest.upsert_artifact(art)
        for holder in vouching:
            self.manifest.set_replica(Replica("npz", art.path, holder, art.sha256, time.time(),
                                              origin="gpu-1", root_id=f"root-{holder}"))
            self.holders.copies.setdefault(holder, {})[art.sha256] = size
        return art, file

    def events(self, kind: EventType) -> list[Any]:
        return [e.payload for e in self.bus.recent(1000) if e.type is kind]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> Parts:
    return Parts(tmp_path, open_manifest("gpu-1"))


async def test_a_run_deletes_only_what_enough_holders_vouch_for_now(parts: Parts) -> None:
    a, a_file = parts.source("a.npz", 400, "coord", "cpu-1")
    b, b_file = parts.source("b.npz", 300, "coord", "gpu-2")
    c, c_file = parts.source("c.npz", 200, "coord", "cpu-1")
    d, d_file = parts.source("d.npz", 100, "coord", "cpu-1")
    del parts.holders.copies["gpu-2"]  # remembered by the manifest, but it does not answer
    parts.inflight.claim_one((c.ident, "gpu-2"))  # a push is reading c
    report = await parts.cleaner(1.0).run()
    assert [art.key for art, _ in report.deleted] == [a.key, d.key]
    assert report.deleted[0][1] == ["coord", "cpu-1"]
    assert (report.short_of_copies, report.busy, report.unfinished) == (1, 1, 0)
    assert report.freed_bytes == a.size + d.size
    assert not a_file.exists() and not d_file.exists() and b_file.exists() and c_file.exists()
    assert parts.manifest.deleted_sources("gpu-1") == {a.ident, d.ident}
    assert report.percent_after < report.percent_before
    deleted = parts.events(EventType.ARTIFACT_DELETED)
    assert [(e.artifact, e.vouched_by, e.reason) for e in deleted] == [
        (a.key, ["coord", "cpu-1"], "disk_pressure"), (d.key, ["coord", "cpu-1"], "disk_pressure")]
    [done] = parts.events(EventType.CLEANUP_COMPLETED)
    assert (done.deleted, done.busy, done.short_of_copies, done.required) == (2, 1, 1, 2)
    assert done.freed_bytes == report.freed_bytes


async def test_a_run_stops_once_usage_is_under_the_cleanup_level(parts: Parts) -> None:
    a, a_file = parts.source("a.npz", 400, "coord", "cpu-1")
    b, b_file = parts.source("b.npz", 300, "coord", "cpu-1")
    disk = await parts.usage.refresh()
    # between the usage now and the usage once one source is gone
    level = 100.0 * (disk["used_bytes"] - 50 * KIB) / QUOTA
    cleaner = parts.cleaner(level)
    report = await cleaner.run("operator", disk)
    assert [art.key for art, _ in report.deleted] == [a.key], "the oldest first, then enough"
    assert b_file.exists() and not a_file.exists()
    assert report.percent_after < level <= report.percent_before
    assert cleaner.totals == {"runs": 1, "deleted": 1, "freed_bytes": a.size}
    assert parts.events(EventType.ARTIFACT_DELETED)[0].reason == "operator"
    # under the level already: a run deletes nothing
    assert (await cleaner.run()).deleted == []
    assert cleaner.totals["runs"] == 2


async def test_a_source_rewritten_since_it_was_hashed_stays(parts: Parts) -> None:
    a, a_file = parts.source("a.npz", 400, "coord", "cpu-1")
    a_file.write_bytes(b"changed" * 100)
    os.utime(a_file, (time.time() - 60, time.time() - 60))
    report = await parts.cleaner(0.1).run()
    assert report.percent_before >= 0.1
    assert report.deleted == [] and report.unfinished == 1
    assert a_file.exists() and parts.manifest.deleted_sources("gpu-1") == set()
