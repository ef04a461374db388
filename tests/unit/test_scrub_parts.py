"""Scrubber without a Node: a real ClusterManifest, EventBus, DataRoot and StoredCopies on
tmp_path; the nodes it asks for repairs are real aiohttp peers reached through a real
PeerClient (``tests.support.peer_server``). Each test drives the ``scrub`` service's
``step`` itself, with its own clock."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.config.schema import Scrub
from engine.copies import StoredCopies
from engine.daemons.scrub import REASK_SECONDS, Scrubber
from engine.events import EventBus, EventType
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.paths import DataRoot
from engine.peer_client import PeerClient
from engine.runtime import Service, Supervisor
from tests.support.peer_server import peers
from tests.unit.test_push_path_parts import write_file

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

HOSTS = ("coord", "gpu-1", "gpu-2", "cpu-1")


class Parts:
    """coord's stored copies, bus and the scrubber over them."""

    def __init__(self, tmp_path: Path, manifest: ClusterManifest) -> None:
        self.data = DataRoot(tmp_path / "coord")
        self.data.create()
        self.manifest = manifest
        self.bus = EventBus("coord")
        self.copies = StoredCopies("coord", self.data, manifest, self.bus, "root-coord", 2)
        self.down: set[str] = set()
        self.clock = [1000.0]
        self.settings = Scrub()
        """One pass a day (a step runs the pass only when it is due)."""

    def scrubber(self, client: PeerClient | None, **settings: Any) -> Scrubber:
        return Scrubber("coord", self.settings.model_copy(update=settings), coordinator="coord",
                        hosts=HOSTS, manifest=self.manifest, copies=self.copies,
                        is_down=self.down.__contains__, peers=client,  # type: ignore[arg-type]
                        emit=self.bus.emit, clock=lambda: self.clock[0])

    def copy(self, origin: str, rel: str, body: bytes, *holders: str) -> tuple[Artifact, Path]:
        """A verified copy of ``origin``'s ``rel`` stored here, also held by ``holders``."""
        data_type, path = rel.split("/", 1)
        art = Artifact(data_type, path, "k", len(body), hashlib.sha256(body).hexdigest(),
                       time.time(), origin)
        self.manifest.upsert_artifact(art)
        file = write_file(self.copies.path(art.ident), body)
        for node in ("coord", *holders):
            self.manifest.set_replica(Replica(data_type, path, node, art.sha256, time.time(),
                                              origin=origin, root_id=f"root-{node}"))
        return art, file

    def holds(self, art: Artifact) -> bool:
        return any(r.node == "coord" and r.verified_at is not None
                   for r in self.manifest.replicas(art))

    def events(self, kind: EventType) -> list[Any]:
        return [e.payload for e in self.bus.recent(1000) if e.type is kind]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> Parts:
    return Parts(tmp_path, open_manifest("coord"))


def send_route(answers: list[int], asked: list[dict[str, Any]]):
    """``POST /v1/gossip/send`` answering each request with the next status of ``answers``
    (the last one repeats) and noting what was asked."""

    async def send(request: web.Request) -> web.Response:
        asked.append(await request.json())
        status = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.json_response({"started": True} if status == 202 else {"error": "no"},
                                 status=status)

    return {"POST /v1/gossip/send": send}


async def test_a_pass_checks_every_copy_and_asks_a_holder_to_repair_the_rotted_one(
        parts: Parts) -> None:
    good, _ = parts.copy("gpu-1", "npz/k/good.npz", b"g" * 1000, "cpu-1")
    bad, bad_file = parts.copy("gpu-1", "npz/k/bad.npz", b"b" * 1000, "cpu-1")
    bad_file.write_bytes(b"X" * 1000)  # rot: same size, other bytes
    parts.down.add("gpu-1")  # the origin cannot be asked: the other holder is
    asked: list[dict[str, Any]] = []
    async with peers({"cpu-1": send_route([202], asked)}, caller="coord") as client:
        scrub = parts.scrubber(client)
        await scrub.step()
    assert scrub.findings == {"checked": 2, "matched": 1, "mismatched": 1, "missing": 0,
                              "repairs_asked": 1, "repairs_unsourced": 0, "repaired": 0}
    assert parts.holds(good) and not parts.holds(bad)
    assert not bad_file.exists(), "moved to the quarantine"
    [quarantined] = parts.events(EventType.REPLICA_QUARANTINED)
    assert quarantined.artifact == "npz/k/bad.npz"
    assert asked == [{"origin": "gpu-1", "data_type": "npz", "path": "k/bad.npz",
                      "sha256": bad.sha256, "to": "coord"}]
    [summary] = parts.events(EventType.REPLICAS_VERIFIED)
    assert (summary.checked, summary.matched, summary.mismatched, summary.requested_by) == (
        2, 1, 1, "scrub")
    assert scrub.status()["passes"] == 1 and scrub.status()["repairs_pending"] == 1
    assert scrub.health_check().is_healthy, "a repair under way is not a fault"
    # the copy comes back (the receiver verified it): the next step counts the repair
    parts.copy("gpu-1", "npz/k/bad.npz", b"b" * 1000)
    await scrub.step()
    assert scrub.findings["repaired"] == 1 and scrub.repairs == {}
    assert scrub.status()["passes"] == 1, "the next pass is not due yet"


async def test_a_repair_nobody_can_send_is_reported_once_and_asked_again(
        parts: Parts) -> None:
    bad, bad_file = parts.copy("gpu-1", "npz/k/bad.npz", b"b" * 1000, "gpu-2")
    bad_file.unlink()  # missing altogether
    answers = [404, 404, 404, 202]
    asked: list[dict[str, Any]] = []
    async with peers({"gpu-2": send_route(answers, asked)}, down=["gpu-1"],
                     caller="coord") as client:
        scrub = parts.scrubber(client)
        assert scrub.repair_sources(bad) == ["gpu-1", "gpu-2"], "the origin first"
        await scrub.step()  # the pass asks, then the pending repairs ask again at once
        assert len(asked) == 2
        assert scrub.findings["missing"] == 1 and scrub.findings["repairs_unsourced"] == 1
        [failed] = parts.events(EventType.DATA_SYNC_FAILED)
        assert (failed.reason, failed.target, failed.artifact) == ("scrub", "coord", bad.key)
        assert "gpu-1: unreachable" in failed.error and "gpu-2: HTTP 404" in failed.error
        health = scrub.health_check()
        assert not health.is_healthy and "wait for a good copy" in health.message
        await scrub.step()  # asked again (nobody accepted); no second event
        assert len(asked) == 3 and len(parts.events(EventType.DATA_SYNC_FAILED)) == 1
        await scrub.step()  # gpu-2 accepts now
        assert len(asked) == 4 and scrub.health_check().is_healthy
        await scrub.step()
        assert len(asked) == 4, "accepted: not asked again before REASK_SECONDS"
        parts.clock[0] += REASK_SECONDS
        await scrub.step()
        assert len(asked) == 5, "accepted long ago and still not here: asked again"
    assert scrub.status()["passes"] == 1
    assert scrub.findings["repairs_asked"] == 2


def test_repair_sources_skip_down_nodes_this_node_and_strangers(parts: Parts) -> None:
    art, _ = parts.copy("gpu-1", "npz/k/a.npz", b"a" * 10, "cpu-1", "gpu-2", "stranger")
    scrub = parts.scrubber(None)
    assert scrub.repair_sources(art) == ["gpu-1", "cpu-1", "gpu-2"]
    parts.down.add("cpu-1")
    parts.manifest.record_deletion(art, ["coord", "gpu-2"])  # the origin deleted its source
    assert scrub.repair_sources(art) == ["gpu-2"]


async def test_a_failing_step_is_the_services_failure_and_the_pass_waits(
        parts: Parts) -> None:
    scrub = parts.scrubber(None, pass_hours=1.0)
    passes: list[int] = []

    async def broken_pass() -> dict[str, int]:
        passes.append(1)
        raise OSError("disk gone")

    scrub.scrub_pass = broken_pass  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await scrub.step()
    assert scrub.status()["last_error"] == "OSError: disk gone"
    await scrub.step()  # the failed pass is not run again before the next is due
    assert passes == [1]
    parts.clock[0] += 3600
    with pytest.raises(OSError):
        await scrub.step()
    assert passes == [1, 1]
    # under a supervisor the failure is a COMPONENT_FAILED naming the scrub
    supervisor = Supervisor("coord", parts.bus.emit, backoff_for=lambda n: 30.0)
    parts.clock[0] += 3600
    supervisor.add(Service("scrub", scrub.step, scrub.interval, next_delay=scrub.next_delay))
    await supervisor.start()
    try:
        for _ in range(100):
            if parts.events(EventType.COMPONENT_FAILED):
                break
            await asyncio.sleep(0.01)
    finally:
        await supervisor.stop()
    [failed] = parts.events(EventType.COMPONENT_FAILED)
    assert (failed.component, failed.error) == ("scrub", "OSError: disk gone")
    assert not supervisor.health_check().is_healthy


def test_the_rate_follows_the_settings(parts: Parts) -> None:
    assert parts.scrubber(None, bytes_per_second=64 * 2**20).rate(10**12) == 64 * 2**20
    daily = parts.scrubber(None, pass_hours=1.0)
    assert daily.rate(3600 * 10**6) == 10**6
    assert daily.rate(1) == daily.config.min_bytes_per_second
    assert not parts.scrubber(None, enabled=False).enabled
    assert parts.scrubber(None, enabled=False).health_check().message == "scrub disabled"


async def test_with_a_fixed_rate_every_step_is_a_pass(parts: Parts) -> None:
    parts.copy("gpu-1", "npz/k/a.npz", b"a" * 100)
    scrub = parts.scrubber(None, bytes_per_second=2**20)
    await scrub.step()
    await scrub.step()
    assert scrub.status()["passes"] == 2 and scrub.findings["matched"] == 2
