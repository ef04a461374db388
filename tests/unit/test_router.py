"""engine.router.SyncRouter: push-from-generator targets and replica targets for recovery.

Pure routing decisions over a real config and a real (temporary) manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import ClusterConfig
from engine.manifest import Artifact, ClusterManifest
from engine.router import SyncRouter

pytestmark = pytest.mark.unit

GiB = 1 << 30


def config(tmp_path: Path, **extra_hosts: dict[str, Any]) -> ClusterConfig:
    """coord, gpu-1..3 (gpu-3 ephemeral), cpu-1 — in an order that puts GPUs before the CPU."""
    hosts: dict[str, dict[str, Any]] = {
        "gpu-1": {"role": "gpu"}, "coord": {"role": "coordinator"}, "gpu-2": {"role": "gpu"},
        "gpu-3": {"role": "gpu", "ephemeral": True}, "cpu-1": {"role": "cpu"}, **extra_hosts}
    for port, (name, host) in enumerate(hosts.items(), start=9000):
        host.update(provider="test", port=port, data_root=str(tmp_path / name))
    return ClusterConfig.model_validate({"hosts": hosts})


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[ClusterManifest]:
    m = ClusterManifest(tmp_path / "manifest.db", "coord")
    m.upsert_artifact(Artifact("npz", "k/a.npz", "k", 1000, "a" * 64, 1.0, "gpu-1"))
    try:
        yield m
    finally:
        m.close()


def router(tmp_path: Path, manifest: ClusterManifest, node: str = "gpu-1",
           down: frozenset[str] = frozenset()) -> SyncRouter:
    return SyncRouter(config(tmp_path), node, manifest, lambda name: name in down)


def test_producers_push_to_the_coordinator_unless_it_is_down_or_excluded(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    assert router(tmp_path, manifest).get_sync_targets("npz", "k", "k/a.npz") == ["coord"]
    assert router(tmp_path, manifest, node="coord").get_sync_targets("npz", "k") == []
    assert router(tmp_path, manifest, down=frozenset({"coord"})).get_sync_targets("npz") == []
    manifest.add_exclusion("coord", "npz/k/*", "full")
    assert router(tmp_path, manifest).get_sync_targets("npz", "k", "k/a.npz") == []


def test_without_capacity_non_gpu_nodes_come_first_then_config_order(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="gpu-1")
    assert r.replica_targets("npz", "k/a.npz", 10) == ["coord", "cpu-1", "gpu-2"]
    assert r.replica_targets("npz", "k/a.npz", 2) == ["coord", "cpu-1"]


def test_never_the_origin_this_node_holders_or_ephemeral_hosts(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="coord")  # an orphan re-homed by the coordinator
    targets = r.replica_targets("npz", "k/a.npz", 10)
    assert targets == ["cpu-1", "gpu-2"]  # not gpu-1 (origin), coord (self), gpu-3 (ephemeral)
    assert r.replica_targets("npz", "k/a.npz", 10, exclude={"cpu-1"}) == ["gpu-2"]
    assert r.replica_targets("npz", "k/a.npz", 0) == []


def test_down_and_excluded_nodes_are_skipped(tmp_path: Path, manifest: ClusterManifest) -> None:
    manifest.add_exclusion("cpu-1", "npz/*", "operator")
    r = router(tmp_path, manifest, node="gpu-1", down=frozenset({"coord"}))
    assert r.replica_targets("npz", "k/a.npz", 10) == ["gpu-2"]
    assert r.replica_targets("games", "k/a.db", 10) == ["cpu-1", "gpu-2"]  # exclusion is per path


def test_known_capacity_orders_by_free_space_and_skips_nodes_without_room(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    manifest.set_capacity("gpu-2", used_bytes=1 * GiB, total_bytes=10 * GiB)  # 9 GiB free
    manifest.set_capacity("cpu-1", used_bytes=8 * GiB, total_bytes=10 * GiB)  # 2 GiB free
    r = router(tmp_path, manifest, node="gpu-1")
    # Known nodes by free space (a GPU before the CPU), nodes without figures after them.
    assert r.replica_targets("npz", "k/a.npz", 10) == ["gpu-2", "cpu-1", "coord"]
    manifest.set_capacity("coord", used_bytes=10 * GiB - 500, total_bytes=10 * GiB)
    assert r.replica_targets("npz", "k/a.npz", 10) == ["gpu-2", "cpu-1"]  # 500 B < 1000 B
    manifest.set_capacity("coord", used_bytes=0, total_bytes=20 * GiB)
    assert r.replica_targets("npz", "k/a.npz", 2) == ["coord", "gpu-2"]


def test_an_unknown_artifact_excludes_only_this_node(tmp_path: Path,
                                                     manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="gpu-2")
    assert r.replica_targets("npz", "never/seen.npz", 10) == ["coord", "cpu-1", "gpu-1"]
