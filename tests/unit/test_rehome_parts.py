"""RemoteRehome without a Node: the coordinator's real ClusterManifest, SyncRouter and
VouchClient; holders are real aiohttp peers on loopback answering ``/v1/gossip/send``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.cluster_view import ClusterView
from engine.config import ClusterConfig
from engine.daemons.breaker import Breakers
from engine.daemons.rehome import RemoteRehome
from engine.events import EventBus
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.peer_client import PeerClient
from engine.router import SyncRouter
from engine.recount import Recount
from engine.vouches import VouchClient
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def config(tmp_path: Path) -> ClusterConfig:
    roles = {"coord": "coordinator", "gpu-0": "gpu", "gpu-1": "gpu", "gpu-2": "gpu",
             "cpu-1": "cpu", "cpu-2": "cpu"}
    hosts = {name: {"role": role, "provider": name, "port": port,
                    "data_root": str(tmp_path / name)}
             for port, (name, role) in enumerate(roles.items(), start=9300)}
    return ClusterConfig.model_validate({"hosts": hosts})


def art(origin: str, name: str, sha: str = "a") -> Artifact:
    return Artifact("games", name, None, 10, sha * 64, 1.0, origin)


def held(manifest: ClusterManifest, a: Artifact, *nodes: str) -> None:
    for node in nodes:
        manifest.set_replica(Replica(a.data_type, a.path, node, a.sha256, 5.0, origin=a.origin,
                                     root_id=f"root-{node}"))


def rehome(tmp_path: Path, manifest: ClusterManifest, client: PeerClient,
           down: set[str]) -> RemoteRehome:
    cfg = config(tmp_path)
    view = ClusterView(lambda n: n in down)
    router = SyncRouter(cfg, "coord", manifest, view, Breakers("coord", EventBus("coord"), 2, 60))
    vouches = VouchClient("coord", "root-coord", manifest=manifest, hosts=cfg.hosts,
                          policy=cfg.sync_routing.policy, peers=client)
    return RemoteRehome("coord", 2, cfg.hosts, manifest=manifest,
                        recount=Recount(vouches, view.is_down),
                        router=router, is_down=lambda n: n in down, peers=client)


def sender(name: str, asked: list[dict[str, Any]], status: int = 202) -> dict[str, Callable]:
    async def send(request: web.Request) -> web.Response:
        asked.append({"by": name, **await request.json()})
        return web.json_response({"accepted": status == 202}, status=status)
    return {"POST /v1/gossip/send": send}


async def test_a_holder_is_asked_to_send_each_orphan_the_coordinator_lacks(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("coord")
    orphan = art("gpu-0", "orphan.db")                 # origin down, one copy on gpu-1
    mine = art("gpu-0", "mine.db")                     # the coordinator holds it: Recovery's
    safe = art("gpu-0", "safe.db")                     # two copies already
    alive = art("gpu-2", "alive.db")                   # its origin can still push it
    old, new = art("gpu-2", "old.db", "b"), art("gpu-2", "old.db", "c")  # superseded
    for a in (orphan, mine, safe, alive, old):
        manifest.upsert_artifact(a)
    manifest.upsert_artifact(new)
    held(manifest, orphan, "gpu-1")
    held(manifest, mine, "gpu-1", "coord")
    held(manifest, safe, "gpu-1", "cpu-2")
    held(manifest, alive, "gpu-1")
    held(manifest, old, "cpu-2")
    asked: list[dict[str, Any]] = []
    async with peers({"gpu-1": sender("gpu-1", asked), "cpu-2": sender("cpu-2", asked)},
                     down=["gpu-0"]) as client:
        remote = rehome(tmp_path, manifest, client, down={"gpu-0"})
        assert sorted(c.artifact.path for c in await remote.short()) == ["old.db", "orphan.db"]
        assert await remote.run() == 2
        assert await remote.run() == 0  # asked once per REASK_SECONDS
    assert remote.asked_total == 2
    by_path = {q["path"]: q for q in asked}
    assert len(asked) == 2
    assert by_path["orphan.db"] == {"by": "gpu-1", "origin": "gpu-0", "data_type": "games",
                                    "path": "orphan.db", "sha256": orphan.sha256,
                                    "to": "coord"}  # itself first (it lacks a copy)
    assert by_path["old.db"]["by"] == "cpu-2" and by_path["old.db"]["sha256"] == old.sha256
    assert by_path["old.db"]["to"] == "coord"


async def test_a_refusal_or_an_unreachable_holder_is_not_counted(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest],
        caplog: pytest.LogCaptureFixture) -> None:
    manifest = open_manifest("coord")
    first, second = art("gpu-0", "one.db"), art("gpu-0", "two.db")
    for a in (first, second):
        manifest.upsert_artifact(a)
    held(manifest, first, "gpu-1")
    held(manifest, second, "cpu-2")
    asked: list[dict[str, Any]] = []
    caplog.set_level(logging.WARNING, "engine.daemons.rehome")
    async with peers({"gpu-1": sender("gpu-1", asked, status=409)},
                     down=["gpu-0", "cpu-2"]) as client:
        remote = rehome(tmp_path, manifest, client, down={"gpu-0"})
        assert await remote.run() == 0
    assert remote.asked_total == 0 and len(asked) == 1
    assert "gpu-1 refused to send it to coord (HTTP 409)" in caplog.text
    assert "cpu-2 unreachable" in caplog.text


async def test_a_holder_membership_reports_down_is_not_asked(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("coord")
    orphan = art("gpu-0", "orphan.db")
    manifest.upsert_artifact(orphan)
    held(manifest, orphan, "gpu-1")
    asked: list[dict[str, Any]] = []
    async with peers({"gpu-1": sender("gpu-1", asked)}) as client:
        remote = rehome(tmp_path, manifest, client, down={"gpu-0", "gpu-1"})
        assert await remote.short() == [], "a down holder counts as no copy to send from"
        assert await remote.run() == 0
    assert asked == [] and client.counts["calls"] == 0


async def test_a_holder_that_refuses_to_send_is_followed_by_the_next(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    """Three copies wanted; cpu-2 cannot read its copy and refuses, gpu-1 can send: it is
    asked next (only the first holder was ever asked, every REASK_SECONDS, for good)."""
    manifest = open_manifest("coord")
    orphan = art("gpu-0", "orphan.db")
    manifest.upsert_artifact(orphan)
    held(manifest, orphan, "cpu-2", "gpu-1")
    asked: list[dict[str, Any]] = []
    async with peers({"cpu-2": sender("cpu-2", asked, status=409),
                      "gpu-1": sender("gpu-1", asked)}, down=["gpu-0"]) as client:
        remote = rehome(tmp_path, manifest, client, down={"gpu-0"})
        remote.required = 3
        assert await remote.run() == 1
    assert [q["by"] for q in asked] == ["cpu-2", "gpu-1"]
