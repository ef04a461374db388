"""engine.router.SyncRouter: targets per strategy, eligibility, events, gossip placement and
replica targets for recovery.

Pure routing decisions over a real config, a real (temporary) manifest, a cluster view and
breakers whose state the tests set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cluster_view import ClusterView
from engine.config import ClusterConfig
from engine.daemons.breaker import Breakers
from engine.events import EventBus
from engine.manifest import Artifact, ClusterManifest
from engine.router import SyncRouter

pytestmark = pytest.mark.unit

GiB = 1 << 30


def config(tmp_path: Path, settings: dict[str, Any] | None = None,
           **extra_hosts: dict[str, Any]) -> ClusterConfig:
    """coord, gpu-1..3 (gpu-3 ephemeral), cpu-1 — in an order that puts GPUs before the CPU."""
    hosts: dict[str, dict[str, Any]] = {
        "gpu-1": {"role": "gpu"}, "coord": {"role": "coordinator"}, "gpu-2": {"role": "gpu"},
        "gpu-3": {"role": "gpu", "ephemeral": True}, "cpu-1": {"role": "cpu"}, **extra_hosts}
    for port, (name, host) in enumerate(hosts.items(), start=9000):
        host.update(provider="test", port=port, data_root=str(tmp_path / name))
    return ClusterConfig.model_validate({"hosts": hosts, **(settings or {})})


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[ClusterManifest]:
    m = ClusterManifest(tmp_path / "manifest.db", "coord")
    m.upsert_artifact(Artifact("npz", "k/a.npz", "k", 1000, "a" * 64, 1.0, "gpu-1"))
    try:
        yield m
    finally:
        m.close()


def router(tmp_path: Path, manifest: ClusterManifest, node: str = "gpu-1",
           down: frozenset[str] = frozenset(), settings: dict[str, Any] | None = None,
           own_percent: float = 0.0) -> SyncRouter:
    view = ClusterView()
    view.down = set(down)
    bus = EventBus(node)
    breakers = Breakers(node, bus, failure_threshold=2, reset_seconds=60)
    return SyncRouter(config(tmp_path, settings), node, manifest, view, breakers,
                      lambda: own_percent)


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
    targets = r.replica_targets("npz", "k/a.npz", 10, origin="gpu-1")
    assert targets == ["cpu-1", "gpu-2"]  # not gpu-1 (origin), coord (self), gpu-3 (ephemeral)
    assert r.replica_targets("npz", "k/a.npz", 10, exclude={"cpu-1"},
                             origin="gpu-1") == ["gpu-2"]
    assert r.replica_targets("npz", "k/a.npz", 0, origin="gpu-1") == []
    # without an origin the path names this node's own file (coord's k/a.npz: another
    # artifact), so gpu-1 is a target like any other
    assert r.replica_targets("npz", "k/a.npz", 10) == ["cpu-1", "gpu-1", "gpu-2"]


def test_down_and_excluded_nodes_are_skipped(tmp_path: Path, manifest: ClusterManifest) -> None:
    manifest.add_exclusion("cpu-1", "npz/*", "operator")
    r = router(tmp_path, manifest, node="gpu-1", down=frozenset({"coord"}))
    assert r.replica_targets("npz", "k/a.npz", 10) == ["gpu-2"]
    assert r.replica_targets("games", "k/a.db", 10) == ["cpu-1", "gpu-2"]  # exclusion is per path


def test_role_first_then_free_space_and_nodes_without_room_are_skipped(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    manifest.set_capacity("gpu-2", used_bytes=1 * GiB, total_bytes=10 * GiB)  # 9 GiB free
    manifest.set_capacity("cpu-1", used_bytes=6 * GiB, total_bytes=10 * GiB)  # 4 GiB free
    r = router(tmp_path, manifest, node="gpu-1")
    # coordinator, CPU, GPU whatever the free space (GPUs fill their own disks with self-play)
    assert r.replica_targets("npz", "k/a.npz", 10) == ["coord", "cpu-1", "gpu-2"]
    manifest.set_capacity("cpu-1", used_bytes=7 * GiB, total_bytes=10 * GiB)  # at 70 %: full
    assert r.replica_targets("npz", "k/a.npz", 10) == ["coord", "gpu-2"]
    manifest.set_capacity("cpu-1", used_bytes=6 * GiB, total_bytes=10 * GiB)
    manifest.set_capacity("coord", used_bytes=10 * GiB - 500, total_bytes=100 * GiB)
    assert r.replica_targets("npz", "k/a.npz", 10) == ["coord", "cpu-1", "gpu-2"]
    manifest.set_capacity("coord", used_bytes=10 * GiB - 500, total_bytes=10 * GiB)
    assert r.replica_targets("npz", "k/a.npz", 10) == ["cpu-1", "gpu-2"]  # full, and no room


def test_free_space_orders_nodes_of_one_role(tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="coord")
    manifest.set_capacity("cpu-1", used_bytes=6 * GiB, total_bytes=10 * GiB)
    manifest.set_capacity("gpu-2", used_bytes=0, total_bytes=10 * GiB)
    manifest.set_capacity("cpu-2", used_bytes=1 * GiB, total_bytes=10 * GiB)
    r.config = config(tmp_path, None, **{"cpu-2": {"role": "cpu"}})
    assert r.replica_targets("npz", "k/a.npz", 10, origin="gpu-1") == ["cpu-2", "cpu-1", "gpu-2"]


def test_an_unknown_artifact_excludes_only_this_node(tmp_path: Path,
                                                     manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="gpu-2")
    assert r.replica_targets("npz", "never/seen.npz", 10) == ["coord", "cpu-1", "gpu-1"]


# -- strategies ---------------------------------------------------------------------------
def test_backpressure_holds_normal_pushes_and_sends_urgent_ones_to_a_durable_node(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest)
    r.backpressure("coord", "disk")
    route = r.route("npz", "k", "k/a.npz")
    assert route.targets == [] and route.held == {"coord": "backpressure:disk"}
    # urgent: elsewhere, never the ephemeral gpu-3, never this node; CPU before GPU by bandwidth
    # (no capacity known: config order among equals)
    assert r.get_sync_targets("npz", "k", "k/a.npz", urgent=True) == ["gpu-2"]
    # once a durable node holds it, it stays the urgent target (no copy on every node in turn)
    from engine.manifest import Replica

    manifest.set_replica(Replica("npz", "k/a.npz", "cpu-1", "a" * 64, 5.0, origin="gpu-1"))
    assert r.get_sync_targets("npz", "k", "k/a.npz", urgent=True) == ["cpu-1"]
    # a copy of another version does not count as holding this one
    manifest.set_replica(Replica("npz", "k/a.npz", "coord", "b" * 64, 5.0, origin="gpu-1"))
    assert r.get_sync_targets("npz", "k", "k/a.npz", urgent=True) == ["cpu-1"]
    manifest.set_replica(Replica("npz", "k/a.npz", "coord", "a" * 64, 5.0, origin="gpu-1"))
    assert r.get_sync_targets("npz", "k", "k/a.npz", urgent=True) == []  # the coordinator has it
    r.backpressure("coord", None)
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]
    assert r.counts == {"recovered": 0, "backpressure_activated": 1, "backpressure_released": 1}


def test_an_open_breaker_or_a_full_coordinator_holds_like_a_down_one(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest)
    r.breakers.failure("coord", "refused")
    r.breakers.failure("coord", "refused")  # threshold 2: open
    assert r.route("npz", "k", "k/a.npz").held == {"coord": "breaker open"}
    r.node_recovered("coord")  # NODE_RECOVERED closes it: send there again
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]
    manifest.set_capacity("coord", used_bytes=80, total_bytes=100)
    assert r.route("npz", "k", "k/a.npz").held == {"coord": "full"}


def test_ephemeral_nodes_never_wait_for_the_coordinator(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="gpu-3", down=frozenset({"coord"}))
    assert r.strategy == "ephemeral"
    manifest.set_capacity("cpu-1", used_bytes=1, total_bytes=10 * GiB)
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["cpu-1"]  # most free space first
    r.view.down.clear()
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]


def test_broadcast_sends_its_types_to_every_eligible_node_but_not_the_coordinator(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    settings = {"auto_sync": {"strategy": "broadcast"},
                "sync_routing": {"priority_hosts": ["cpu-1"],
                                 "policies": {"models": {"broadcast": True}}}}
    r = router(tmp_path, manifest, node="gpu-1", settings=settings)
    assert r.get_sync_targets("models", None, "m/best.pt") == ["cpu-1", "gpu-2", "gpu-3"]
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]  # not a broadcast type
    named = {**settings, "sync_routing": {"policies": {"models": {
        "broadcast": True, "roles": ["gpu"], "hosts": ["coord"], "exclude_hosts": ["gpu-3"]}}}}
    r = router(tmp_path, manifest, node="gpu-1", settings=named)
    assert r.get_sync_targets("models", None, "m/best.pt") == ["coord", "gpu-2"]


def test_bus_events_reach_the_router(tmp_path: Path, manifest: ClusterManifest) -> None:
    from engine.events import BackpressureActivated, NodeRecovered

    r = router(tmp_path, manifest, down=frozenset({"coord"}))
    woken: list[str] = []
    r.wake = woken.append
    bus = EventBus("coord")
    bus.listen(r.on_event)
    bus.emit(NodeRecovered(node="coord", down_seconds=3.0))
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]
    bus.emit(BackpressureActivated(node="coord", disk_percent=71.0, queue_depth=0, reason="disk"))
    assert r.get_sync_targets("npz", "k", "k/a.npz") == []
    assert woken == ["node_recovered:coord"]


# -- gossip -------------------------------------------------------------------------------
GOSSIP = {"auto_sync": {"strategy": "gossip"}}


def test_gossip_peers_are_gossip_nodes_that_are_up_never_the_unnamed_coordinator(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    r = router(tmp_path, manifest, node="gpu-1", settings=GOSSIP, down=frozenset({"cpu-1"}))
    assert r.gossip_peers() == ["gpu-2"]  # gpu-3 is ephemeral: its own strategy
    assert r.get_sync_targets("npz", "k", "k/a.npz") == []  # gossip pushes nothing
    named = {**GOSSIP, "sync_routing": {"policies": {"npz": {"hosts": ["coord"]}}}}
    r = router(tmp_path, manifest, node="gpu-1", settings=named)
    assert "coord" in r.gossip_peers()
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord"]


def test_gossip_placement_is_the_same_on_every_node(tmp_path: Path,
                                                     manifest: ClusterManifest) -> None:
    settings = {**GOSSIP, "sync_routing": {"replication_target": 2}}
    art = manifest.get_artifact("npz", "k/a.npz")
    assert art is not None
    nodes = ["gpu-2", "cpu-1", "coord"]
    holders = {n for n in nodes if router(tmp_path, manifest, node=n,
                                          settings=settings).should_hold(art)}
    assert holders == {"gpu-2", "cpu-1"}  # the coordinator is not named; origin gpu-1 never
    everyone = {**GOSSIP, "sync_routing": {"policies": {"npz": {"replication_target": "all"}}}}
    assert router(tmp_path, manifest, node="gpu-2", settings=everyone).should_hold(art)
    assert not router(tmp_path, manifest, node="gpu-2", settings=everyone,
                      own_percent=75.0).should_hold(art)  # over max_disk_usage_percent
    assert not router(tmp_path, manifest, node="gpu-1", settings=everyone).should_hold(art)


def test_pull_sources_are_first_hand_holders_then_the_origin(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    from engine.manifest import Replica

    manifest.set_replica(Replica("npz", "k/a.npz", "cpu-1", "a" * 64, 5.0, origin="gpu-1"))
    manifest.set_replica(Replica("npz", "k/a.npz", "gpu-3", "b" * 64, 5.0,
                                 origin="gpu-1"))  # another version
    manifest.set_replica(Replica("npz", "k/a.npz", "coord", "a" * 64, 5.0,
                                 origin="gpu-2"))  # another origin's file of that name
    r = router(tmp_path, manifest, node="gpu-2", settings=GOSSIP)
    art = manifest.get_artifact("npz", "k/a.npz", "gpu-1")
    assert art is not None
    assert r.pull_sources(art) == ["cpu-1", "gpu-1"]
    r.view.down.add("cpu-1")
    assert r.pull_sources(art) == ["gpu-1"]
    r.view.down.clear()
    # the origin is no source of a version it superseded, nor of one it deleted
    manifest.upsert_artifact(Artifact("npz", "k/a.npz", "k", 1000, "c" * 64, 2.0, "gpu-1"))
    old = manifest.get_artifact("npz", "k/a.npz", "gpu-1", "a" * 64)
    assert old is not None and old.superseded
    assert r.pull_sources(old) == ["cpu-1"]
    current = manifest.get_artifact("npz", "k/a.npz", "gpu-1")
    assert current is not None and r.pull_sources(current) == ["gpu-1"]
    manifest.record_deletion(current, ["cpu-1"])
    assert r.pull_sources(current) == []


def test_a_policy_s_replication_target_adds_durable_copies_to_the_coordinator_s(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    two = {"sync_routing": {"policies": {"npz": {"replication_target": 2}}}}
    r = router(tmp_path, manifest, settings=two)
    # config order among equals (no capacity known, same bandwidth); never ephemeral gpu-3
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord", "gpu-2"]
    assert r.get_sync_targets("games", "k", "k/a.db") == ["coord"]  # default: the coordinator
    everyone = {"sync_routing": {"policies": {"npz": {"replication_target": "all"}}}}
    r = router(tmp_path, manifest, settings=everyone)
    assert r.get_sync_targets("npz", "k", "k/a.npz") == ["coord", "gpu-2", "cpu-1"]
