"""VouchClient without a Node: holders are real aiohttp peers on loopback that hash real
files when asked (as ``engine.server.vouch`` does); the manifest is a real ClusterManifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.config import ClusterConfig
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.peer_client import PeerClient
from engine.vouches import VouchClient
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

BYTES = b"the version's bytes\n" * 100
SHA = hashlib.sha256(BYTES).hexdigest()
ART = Artifact("npz", "k/a b.npz", "k", len(BYTES), SHA, 1.0, "gpu-0")


def config(tmp_path: Path, settings: dict[str, Any] | None = None) -> ClusterConfig:
    hosts: dict[str, dict[str, Any]] = {
        "coord": {"role": "coordinator", "provider": "aws"},
        "gpu-0": {"role": "gpu", "provider": "aws"},
        "gpu-1": {"role": "gpu", "provider": "aws"},
        "gpu-2": {"role": "gpu", "provider": "gcp"},
        "gpu-3": {"role": "gpu", "provider": "gcp"},
        "spot-1": {"role": "gpu", "provider": "vast", "ephemeral": True},
        "cpu-1": {"role": "cpu", "provider": "hetzner"},
        "cpu-2": {"role": "cpu", "provider": "hetzner"},
    }
    for port, (name, host) in enumerate(hosts.items(), start=9200):
        host.update(port=port, data_root=str(tmp_path / name))
    return ClusterConfig.model_validate({"hosts": hosts, **(settings or {})})


def holder(name: str, root: str, stored: Path, asked: list[dict[str, str]]) -> dict[str, Callable]:
    """A holder that hashes ``stored`` now, or answers 404 when it has no such file."""
    async def vouch(request: web.Request) -> web.Response:
        asked.append({"path": request.match_info["path"], **request.query})
        if not stored.exists():
            return web.json_response({"error": f"{name} stores no copy"}, status=404)
        data = stored.read_bytes()
        return web.json_response({"node": name, "root_id": root, "sha256":
                                  hashlib.sha256(data).hexdigest(), "size": len(data),
                                  "rehashed": True})
    return {"GET /v1/vouch/{data_type}/{path:.+}": vouch}


def copy(tmp_path: Path, name: str, data: bytes | None = BYTES) -> Path:
    path = tmp_path / "stores" / name / "copy"
    path.parent.mkdir(parents=True)
    if data is not None:
        path.write_bytes(data)
    return path


def hold(manifest: ClusterManifest, *nodes: str) -> None:
    for node in nodes:
        manifest.set_replica(Replica(ART.data_type, ART.path, node, SHA, 5.0, origin=ART.origin,
                                     root_id=f"root-{node}"))


def client_of(cfg: ClusterConfig, manifest: ClusterManifest, client: PeerClient,
              name: str = "gpu-0", root_id: str = "root-gpu-0") -> VouchClient:
    return VouchClient(name, root_id, manifest=manifest, hosts=cfg.hosts,
                       policy=cfg.sync_routing.policy, peers=client)


async def test_live_vouches_count_and_a_holder_without_the_bytes_loses_its_row(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest, cfg = open_manifest("gpu-0"), config(tmp_path)
    manifest.upsert_artifact(ART)
    hold(manifest, "gpu-0", "gpu-1", "gpu-2", "gpu-3", "cpu-1", "cpu-2", "old-1")
    asked: list[dict[str, str]] = []

    async def busy(_request: web.Request) -> web.Response:
        return web.json_response({"error": "no hash slot"}, status=503)

    nodes = {
        "gpu-1": holder("gpu-1", "r1", copy(tmp_path, "gpu-1"), asked),
        "gpu-2": holder("gpu-2", "r2", copy(tmp_path, "gpu-2", b"rotted"), asked),
        "gpu-3": holder("gpu-3", "r3", copy(tmp_path, "gpu-3", None), asked),
        "cpu-2": {"GET /v1/vouch/{data_type}/{path:.+}": busy},
    }
    async with peers(nodes, down=["cpu-1"], caller="gpu-0") as client:
        vouches = client_of(cfg, manifest, client)
        counted = await vouches.counted(ART)
    assert [(v.node, v.root_id, v.provider, v.ephemeral) for v in counted] == [
        ("gpu-1", "r1", "aws", False)]
    assert len(asked) == 3  # gpu-1..3; never itself nor the decommissioned old-1
    assert {q["path"] for q in asked} == {"k/a b.npz"}
    assert all(q["origin"] == "gpu-0" and q["sha256"] == SHA for q in asked)
    left = {r.node for r in manifest.replicas(ART)}
    assert left == {"gpu-0", "gpu-1", "cpu-1", "cpu-2", "old-1"}  # gpu-2 rotted, gpu-3 lost it


async def test_one_root_counts_once_and_the_policy_decides_on_spot_and_providers(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-0")
    manifest.upsert_artifact(ART)
    hold(manifest, "gpu-1", "gpu-2", "gpu-3", "spot-1", "cpu-1", "cpu-2")
    asked: list[dict[str, str]] = []
    nodes = {"cpu-1": holder("cpu-1", "r5", copy(tmp_path, "cpu-1"), asked),
             "cpu-2": holder("cpu-2", "r6", copy(tmp_path, "cpu-2"), asked),  # same provider
             "gpu-1": holder("gpu-1", "r1", copy(tmp_path, "gpu-1"), asked),
             "gpu-2": holder("gpu-2", "r2", copy(tmp_path, "gpu-2"), asked),
             "gpu-3": holder("gpu-3", "r2", copy(tmp_path, "gpu-3"), asked),  # gpu-2's root
             "spot-1": holder("spot-1", "r4", copy(tmp_path, "spot-1"), asked)}
    policies = {"npz": {"ephemeral_copies_count": True, "distinct_providers": True}}
    async with peers(nodes, caller="gpu-0") as client:
        plain = client_of(config(tmp_path), manifest, client)
        assert [v.node for v in await plain.counted(ART)] == ["cpu-1", "cpu-2", "gpu-1",
                                                               "gpu-2"]
        strict = client_of(config(tmp_path, {"sync_routing": {"policies": policies}}),
                           manifest, client)
        assert [v.node for v in await strict.counted(ART)] == ["cpu-1", "gpu-1", "gpu-2",
                                                                "spot-1"]
        mine = client_of(config(tmp_path), manifest, client, root_id="r1")  # gpu-1's root
        assert [v.node for v in await mine.counted(ART)] == ["cpu-1", "cpu-2", "gpu-2"]


async def test_an_answer_in_another_name_does_not_vouch(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-0")
    hold(manifest, "gpu-1")
    asked: list[dict[str, str]] = []
    nodes = {"gpu-1": holder("gpu-9", "r1", copy(tmp_path, "gpu-1"), asked)}
    async with peers(nodes, caller="gpu-0") as client:
        vouches = client_of(config(tmp_path), manifest, client)
        assert await vouches.ask(ART, "gpu-1") is None
        assert await vouches.ask(ART, "old-1") is None  # not in the config: not even asked
    assert len(asked) == 1 and {r.node for r in manifest.replicas(ART)} == {"gpu-1"}


def test_remembered_applies_the_same_rules_to_the_remembered_roots(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    manifest = open_manifest("gpu-0")
    hold(manifest, "gpu-1", "gpu-2", "spot-1")
    manifest.set_replica(Replica(ART.data_type, ART.path, "gpu-3", SHA, 5.0, origin=ART.origin,
                                 root_id="root-gpu-2"))
    client = PeerClient("gpu-0", "t", {})  # never opened: remembered() asks nobody
    vouches = client_of(config(tmp_path), manifest, client)
    assert vouches.remembered(ART, {"gpu-0", "gpu-1", "gpu-2", "gpu-3", "spot-1", "old-1"}) \
        == {"gpu-1", "gpu-2"}


async def test_an_orphans_copies_count_alongside_the_coordinators_own(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    """On the coordinator (aws) an orphan of gpu-0 held by itself and gpu-1 (aws): with
    ``distinct_providers`` gpu-1 adds no copy beside the coordinator's own; cpu-1 does."""
    cfg = config(tmp_path, {"sync_routing": {"policies": {"npz": {"distinct_providers": True}}}})
    manifest = open_manifest("coord")
    manifest.upsert_artifact(ART)
    hold(manifest, "coord", "gpu-1", "cpu-1")
    asked: list[dict[str, str]] = []
    stores = {n: holder(n, f"root-{n}", copy(tmp_path, n), asked) for n in ("gpu-1", "cpu-1")}
    async with peers(stores, caller="coord") as client:
        vouches = client_of(cfg, manifest, client, "coord", "root-coord")
        assert vouches.remembered(ART, {"gpu-1", "cpu-1"}) == {"gpu-1", "cpu-1"}
        assert vouches.remembered(ART, {"gpu-1", "cpu-1"}, alongside=True) == {"cpu-1"}
        assert [v.node for v in await vouches.counted(ART, alongside=True)] == ["cpu-1"]
        assert vouches.remembered(ART, {"gpu-1"}, alongside=True) == set()
