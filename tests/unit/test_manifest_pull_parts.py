"""ManifestPuller without a Node: the coordinator's real ClusterManifest pulls the deltas of
another node's real ClusterManifest, served by a real aiohttp peer on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from engine.daemons import manifest_pull
from engine.daemons.manifest_pull import ManifestPuller
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.peer_client import PeerClient
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def artifact(origin: str, n: int) -> Artifact:
    return Artifact("games", f"g{n}.db", None, 100 + n, f"{n:064x}", 1000.0 + n, origin)


def fill(manifest: ClusterManifest, count: int) -> None:
    """``count`` of the manifest's own artifacts, each with its own verified replica row."""
    for n in range(count):
        art = artifact(manifest.node, n)
        manifest.upsert_artifact(art)
        manifest.set_replica(Replica(art.data_type, art.path, manifest.node, art.sha256,
                                     2000.0, origin=art.origin, root_id="root-gpu"))


def serving(manifest: ClusterManifest, asked: list[dict[str, str]] | None = None,
            rewrite: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Callable]:
    """``GET /v1/manifest`` answered from ``manifest`` as a node answers it."""
    async def handler(request: web.Request) -> web.Response:
        if asked is not None:
            asked.append(dict(request.query))
        answer = manifest.changes_since(int(request.query["since"]),
                                        int(request.query["limit"]))
        return web.json_response(rewrite(answer) if rewrite else answer)
    return {"GET /v1/manifest": handler}


def puller(client: PeerClient, manifest: ClusterManifest, nodes: tuple[str, ...],
           is_down: Callable[[str], bool] | None = None) -> ManifestPuller:
    return ManifestPuller("coord", nodes, 0.2, manifest=manifest, peers=client,
                          is_down=is_down)


async def test_a_pull_merges_the_nodes_own_rows_and_a_quiet_node_sends_none(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    coord, gpu = open_manifest("coord"), open_manifest("gpu-1")
    fill(gpu, 3)
    async with peers({"gpu-1": serving(gpu)}) as client:
        pull = puller(client, coord, ("coord", "gpu-1"))
        await pull.pull(pull.peers["gpu-1"])
        figures = pull.peers["gpu-1"]
        assert coord.peer_cursor("gpu-1") == gpu.seq
        assert {a.path for a in coord.artifacts(origin="gpu-1")} == {"g0.db", "g1.db", "g2.db"}
        assert coord.verified_holders(artifact("gpu-1", 1)) == {"gpu-1"}
        assert figures.rows_merged == 6 and figures.rows_received >= 6
        assert figures.last_error is None and figures.last_pull_at is not None
        await pull.pull(figures)  # nothing new: one request, no rows
    assert figures.requests == 2 and figures.rows_merged == 6
    assert pull.status()["peers"]["gpu-1"]["cursor"] == gpu.seq
    assert pull.health_check().is_healthy


async def test_a_long_delta_is_paged_from_the_moving_cursor(
        open_manifest: Callable[[str], ClusterManifest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_pull, "PAGE_LIMIT", 2)
    coord, gpu = open_manifest("coord"), open_manifest("gpu-1")
    fill(gpu, 5)
    asked: list[dict[str, str]] = []
    async with peers({"gpu-1": serving(gpu, asked)}) as client:
        pull = puller(client, coord, ("coord", "gpu-1"))
        await pull.pull(pull.peers["gpu-1"])
    sinces = [int(q["since"]) for q in asked]
    assert len(sinces) > 2 and sinces == sorted(sinces) and sinces[0] == 0
    assert all(q["limit"] == "2" for q in asked)
    assert len(coord.artifacts(origin="gpu-1")) == 5 and coord.peer_cursor("gpu-1") == gpu.seq


async def test_a_round_skips_down_nodes_and_notes_the_unreachable(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    coord, gpu = open_manifest("coord"), open_manifest("gpu-1")
    fill(gpu, 1)
    asked: list[dict[str, str]] = []
    async with peers({"gpu-1": serving(gpu, asked), "gpu-2": serving(gpu, asked)},
                     down=["cpu-1"]) as client:
        pull = puller(client, coord, ("coord", "gpu-1", "gpu-2", "cpu-1"),
                      is_down=lambda n: n == "gpu-2")
        await pull.step()
        assert set(pull.status()["peers"]) == {"gpu-1", "gpu-2", "cpu-1"}
        for _ in range(200):
            if not any(p["in_flight"] for p in pull.status()["peers"].values()):
                break
            await asyncio.sleep(0.01)
        await pull.stop()
    assert len(asked) == 1  # gpu-2 is down: not asked
    assert pull.peers["gpu-2"].requests == 0 and pull.rounds == 1
    cpu = pull.peers["cpu-1"]
    assert cpu.last_error is not None and "cpu-1 unreachable" in cpu.last_error
    assert not cpu.merge_error
    health = pull.health_check()
    assert health.is_healthy and health.details["failing"] == ["cpu-1"]
    assert "cpu-1" in health.message


async def test_an_answer_it_cannot_merge_turns_health_unhealthy(
        open_manifest: Callable[[str], ClusterManifest]) -> None:
    coord, gpu = open_manifest("coord"), open_manifest("gpu-1")
    fill(gpu, 1)
    wrong_node = serving(gpu, rewrite=lambda a: {**a, "node": "cpu-9"})
    no_seq = serving(gpu, rewrite=lambda a: {k: v for k, v in a.items() if k != "seq"})
    async with peers({"gpu-1": wrong_node, "gpu-2": no_seq}) as client:
        pull = puller(client, coord, ("coord", "gpu-1", "gpu-2"))
        await pull.pull(pull.peers["gpu-1"])
        await pull.pull(pull.peers["gpu-2"])
    gpu1, gpu2 = pull.peers["gpu-1"], pull.peers["gpu-2"]
    assert gpu1.merge_error and gpu1.last_error is not None
    assert gpu1.last_error.startswith("merge: ValueError:") and "cpu-9" in gpu1.last_error
    assert gpu2.last_error == "/v1/manifest answered without a seq" and not gpu2.merge_error
    health = pull.health_check()
    assert not health.is_healthy and health.details["merge_errors"] == ["gpu-1"]
    assert coord.artifacts(origin="gpu-1") == [] and coord.peer_cursor("gpu-1") == 0


async def test_a_pull_that_raises_is_reported_against_its_node(
        open_manifest: Callable[[str], ClusterManifest],
        monkeypatch: pytest.MonkeyPatch) -> None:
    coord = open_manifest("coord")

    def broken(_peer: str, _relay: bool = False) -> int:
        raise OSError("disk I/O error")

    async with peers({}, down=["gpu-1"]) as client:
        pull = puller(client, coord, ("coord", "gpu-1"))
        monkeypatch.setattr(coord, "peer_cursor", broken)
        pull.round()
        for _ in range(200):
            if pull.peers["gpu-1"].last_error:
                break
            await asyncio.sleep(0.01)
        await pull.stop()
    assert pull.peers["gpu-1"].last_error == "OSError: disk I/O error"
    assert pull.peers["gpu-1"].merge_error
