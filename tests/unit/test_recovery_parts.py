"""Recovery without a Node: a real manifest, router, scanner, pause gate, snapshot keeper,
push path and VouchClient (its holders real aiohttp peers where a run asks them live)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from engine.daemons.recovery import Recovery, Shortfall
from engine.events import EventType
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.peer_client import PeerClient
from engine.transport import TransferError
from engine.recount import Recount
from engine.vouches import VouchClient
from tests.support.peer_server import peers
from tests.unit.test_push_path_parts import (NODE, NodeParts, artifact_of, make_node_parts,
                                             write_file)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> NodeParts:
    return make_node_parts(tmp_path, open_manifest(NODE))


def make_recovery(parts: NodeParts, client: PeerClient | None = None,
                  required: int = 2) -> Recovery:
    vouches = VouchClient(NODE, "root-gpu-1", manifest=parts.manifest, hosts=parts.config.hosts,
                          policy=parts.config.sync_routing.policy,
                          peers=client)  # type: ignore[arg-type]
    return Recovery(NODE, required, manifest=parts.manifest, router=parts.router,
                    scanner=parts.scanner, vouches=vouches, copies=None,  # type: ignore[arg-type]
                    pushes=parts.pushes.path, pause=parts.pause, snapshots=parts.snapshots,
                    recount=Recount(vouches, parts.router.view.is_down), emit=parts.bus.emit)


def own(parts: NodeParts, name: str, *holders: str) -> Artifact:
    """An own file registered in the manifest, verified on this node and on ``holders``."""
    rel = f"npz/k/{name}"
    art = artifact_of(write_file(parts.data.root / rel, name.encode() * 50), rel)
    parts.manifest.upsert_artifact(art)
    for node in (NODE, *holders):
        parts.manifest.set_replica(Replica(art.data_type, art.path, node, art.sha256,
                                           time.time(), origin=NODE, root_id=f"root-{node}"))
    return art


def holders(parts: NodeParts, art: Artifact) -> set[str]:
    return parts.manifest.verified_holders(art) - {NODE}


async def test_shortfalls_are_own_artifacts_with_too_few_verified_holders(parts: NodeParts) -> None:
    a = own(parts, "a.npz")
    b = own(parts, "b.npz", "coord")
    own(parts, "c.npz", "coord", "cpu-1")
    gone = own(parts, "d.npz")  # its source was deleted: nothing here to push
    parts.manifest.record_deletion(gone, ["coord", "cpu-1"])
    (parts.data.root / "npz" / "k" / "d.npz").unlink()
    recovery = make_recovery(parts)
    found = {s.artifact.key: s for s in await recovery.shortfalls()}
    assert set(found) == {a.key, b.key}
    assert (found[a.key].holders, found[a.key].first) == (frozenset(), ("coord",))
    assert (found[b.key].holders, found[b.key].first) == (frozenset({"coord"}), ("coord",))
    assert not found[a.key].stored_copy
    # the router's target first, then further replica targets (coordinator, CPU, GPU)
    assert recovery.plan(found[a.key], set()) == ["coord", "cpu-1"]
    assert recovery.plan(found[b.key], set()) == ["cpu-1"]
    assert recovery.plan(found[b.key], {"cpu-1"}) == [], "a push under way counts as coming"
    silent = Shortfall(b, found[b.key].holders, found[b.key].first, avoid=frozenset({"cpu-1"}))
    assert "cpu-1" not in recovery.plan(silent, set()), \
        "a holder that was asked and did not vouch is no target for another copy"
    assert (await make_recovery(parts, required=1).shortfalls())[0].artifact.key == a.key


async def test_two_holders_on_one_data_root_count_once(parts: NodeParts) -> None:
    art = own(parts, "a.npz", "coord")
    parts.manifest.set_replica(Replica(art.data_type, art.path, "cpu-1", art.sha256,
                                       time.time(), origin=NODE, root_id="root-coord"))
    [short] = await make_recovery(parts).shortfalls()
    assert short.artifact == art and len(short.holders) == 1


async def test_a_run_pushes_to_enough_targets_and_releases_its_claims(
        parts: NodeParts) -> None:
    a = own(parts, "a.npz")
    b = own(parts, "b.npz", "coord")
    recovery = make_recovery(parts)
    parts.transport.gate = asyncio.Event()
    run = asyncio.create_task(recovery.replicate(await recovery.shortfalls(), "operator_recovery"))
    await parts.transport.started.wait()
    inflight = parts.pushes.path.inflight
    assert set(inflight) == {(a.ident, "coord"), (a.ident, "cpu-1"), (b.ident, "cpu-1")}
    assert await recovery.replicate(await recovery.shortfalls(), "again") == {}, \
        "what is under way is not scheduled twice"
    parts.transport.gate.set()
    arrived = await run
    assert {t: sorted(x.key for x in arts) for t, arts in arrived.items()} == {
        "coord": [a.key], "cpu-1": [a.key, b.key]}
    assert holders(parts, a) == {"coord", "cpu-1"} and holders(parts, b) == {"coord", "cpu-1"}
    assert len(inflight) == 0
    assert await recovery.shortfalls() == []
    [started] = parts.events(EventType.DATA_SYNC_STARTED)
    assert (started.targets, started.files, started.reason) == (["coord", "cpu-1"], 3,
                                                                  "operator_recovery")
    done = {e.target: e for e in parts.events(EventType.DATA_SYNC_COMPLETED)}
    assert set(done) == {"coord", "cpu-1"} and done["cpu-1"].files == 2
    assert done["coord"].reason == "operator_recovery"


async def test_each_pair_is_released_as_soon_as_its_push_ends(parts: NodeParts) -> None:
    a = own(parts, "a.npz")
    recovery = make_recovery(parts)
    hold = parts.transport.holds["cpu-1"] = asyncio.Event()
    run = asyncio.create_task(recovery.replicate(await recovery.shortfalls(), "operator_recovery"))
    inflight = parts.pushes.path.inflight
    for _ in range(200):
        if holders(parts, a) == {"coord"}:
            break
        await asyncio.sleep(0.01)
    assert holders(parts, a) == {"coord"}
    assert set(inflight) == {(a.ident, "cpu-1")}, "the pair to coord is free once it arrived"
    hold.set()
    await run
    assert len(inflight) == 0 and holders(parts, a) == {"coord", "cpu-1"}


async def test_a_failed_further_target_is_replaced_by_the_next_candidate(
        parts: NodeParts) -> None:
    a = own(parts, "a.npz", "coord")
    parts.transport.fail["cpu-1"] = TransferError("cpu-1 is full", target_fault=False)
    recovery = make_recovery(parts)
    arrived = await recovery.replicate(await recovery.shortfalls(), "operator_recovery")
    assert parts.transport.targets() == ["cpu-1", "gpu-2"]
    assert list(arrived) == ["gpu-2"] and holders(parts, a) == {"coord", "gpu-2"}
    [failed] = parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.retry_in_seconds) == ("cpu-1", None)
    assert parts.pushes.path.retries == {}, "a further target is not retried later"
    assert len(parts.pushes.path.inflight) == 0


async def test_a_run_ends_when_every_candidate_failed(parts: NodeParts) -> None:
    a = own(parts, "a.npz", "coord")
    for target in ("cpu-1", "gpu-2"):
        parts.transport.fail[target] = TransferError(f"{target} is full", target_fault=False)
    recovery = make_recovery(parts)
    async with asyncio.timeout(5):
        assert await recovery.replicate(await recovery.shortfalls(), "operator_recovery") == {}
    assert parts.transport.targets() == ["cpu-1", "gpu-2"], "each candidate once"
    assert holders(parts, a) == {"coord"} and len(parts.pushes.path.inflight) == 0
    assert [s.artifact for s in await recovery.shortfalls()] == [a]


async def test_a_paused_node_schedules_nothing(parts: NodeParts) -> None:
    own(parts, "a.npz")
    recovery = make_recovery(parts)
    parts.pause.set(True, "operator")
    answer = await recovery.request("operator_recovery", by="test")
    assert answer == {"node": NODE, "under_replicated": 1, "scheduled": 0, "paused": True,
                      "reason": "operator_recovery"}
    assert not recovery.running and parts.transport.requests == []
    assert await recovery.replicate(await recovery.shortfalls(), "disk_pressure") == {}
    assert parts.events(EventType.DATA_SYNC_STARTED) == []
    [asked] = parts.events(EventType.PRIORITY_SYNC_REQUESTED)
    assert (asked.reason, asked.source_node) == ("operator_recovery", NODE)


async def test_a_requested_run_counts_live_vouches_and_pushes_in_the_background(
        parts: NodeParts) -> None:
    a = own(parts, "a.npz")
    b = own(parts, "b.npz", "coord")
    c = own(parts, "c.npz", "coord", "cpu-1")  # cpu-1 does not answer: c is short live
    by_sha = {x.sha256: x for x in (a, b, c)}

    async def vouch(request: web.Request) -> web.Response:
        art = by_sha[request.query["sha256"]]
        return web.json_response({"node": "coord", "sha256": art.sha256, "size": art.size,
                                  "rehashed": True, "root_id": "root-coord"})

    async with peers({"coord": {"GET /v1/vouch/{tail:.*}": vouch}}, down=["cpu-1", "gpu-2"],
                     caller=NODE) as client:
        recovery = make_recovery(parts, client)
        assert {s.artifact for s in await recovery.shortfalls()} == {a, b}  # from memory
        answer = await recovery.request()
        assert (answer["under_replicated"], answer["scheduled"], answer["paused"]) == (
            3, 4, False)
        for _ in range(200):
            if not recovery.running:
                break
            await asyncio.sleep(0.01)
        assert not recovery.running
        await recovery.stop()
    assert sorted(parts.transport.targets()) == ["coord", "cpu-1", "cpu-1", "cpu-1"]
    assert holders(parts, a) == {"coord", "cpu-1"}
    assert len(parts.pushes.path.inflight) == 0


async def test_the_coordinator_rehomes_orphans_of_a_node_that_is_down(
        tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> None:
    parts = make_node_parts(tmp_path, open_manifest("coord"), node="coord")
    stored = write_file(tmp_path / "stored" / "a.v1.npz", b"orphaned bytes")
    art = artifact_of(stored, "npz/k/a.npz", origin="gpu-1")
    parts.manifest.upsert_artifact(art)
    parts.manifest.set_replica(Replica(art.data_type, art.path, "coord", art.sha256,
                                       time.time(), origin="gpu-1", root_id="root-coord"))
    vouches = VouchClient("coord", "root-coord", manifest=parts.manifest,
                          hosts=parts.config.hosts, policy=parts.config.sync_routing.policy,
                          peers=None)  # type: ignore[arg-type]
    down = {"gpu-1"}
    recovery = Recovery("coord", 2, manifest=parts.manifest, router=parts.router,
                        scanner=parts.scanner, vouches=vouches,
                        copies=SimpleNamespace(path=lambda ident: stored),  # type: ignore[arg-type]
                        pushes=parts.pushes.path, pause=parts.pause, snapshots=parts.snapshots,
                        recount=Recount(vouches, down.__contains__), emit=parts.bus.emit,
                        is_down=down.__contains__)
    [orphan] = await recovery.orphans()
    assert orphan.stored_copy and orphan.holders == frozenset({"coord"})
    assert recovery.plan(orphan, set()) == ["cpu-1"], "never the origin, never itself"
    assert recovery.rehome()
    for _ in range(200):
        if not recovery.running:
            break
        await asyncio.sleep(0.01)
    [request] = parts.transport.requests
    assert (request.target, request.source_file, request.reason) == (
        "cpu-1", stored, "orphan_games_recovery")
    assert parts.manifest.verified_holders(art) == {"coord", "cpu-1"}
    assert await recovery.orphans() == []
    down.clear()
    parts.manifest.remove_replica(art.ident, "cpu-1")
    assert await recovery.orphans() == [], "an origin that is up pushes its own"
    await recovery.stop()


async def test_a_run_never_releases_a_pair_another_component_claimed_after_it(
        parts: NodeParts) -> None:
    """The run's push to coord fails and lets the pair go; an auto sync cycle claims (v,
    coord) before the run ends; the run's end must leave that claim alone."""
    art = own(parts, "a.npz")
    transport = parts.pushes.transport
    transport.fail["coord"] = TransferError("coord unreachable")
    transport.holds["cpu-1"] = asyncio.Event()  # the run's other push takes a while
    recovery = make_recovery(parts)
    inflight = parts.pushes.path.inflight
    run = asyncio.create_task(recovery.replicate(await recovery.shortfalls(), "disk_pressure"))
    for _ in range(200):
        if parts.pushes.events(EventType.DATA_SYNC_FAILED):  # the push to coord failed
            break
        await asyncio.sleep(0.01)
    assert "coord" in transport.targets()
    assert (art.ident, "coord") not in inflight
    assert inflight.claim_one((art.ident, "coord")), "another component claims it now"
    transport.holds["cpu-1"].set()
    await run
    assert (art.ident, "coord") in inflight, "the run dropped someone else's claim"
    assert (art.ident, "cpu-1") not in inflight


def _bare_coordinator(remote_run, orphans) -> Recovery:
    """A coordinator's Recovery with its round's two halves scripted (pure logic)."""
    recovery = Recovery("coord", 2, manifest=None, router=None,  # type: ignore[arg-type]
                        scanner=None, vouches=None, copies=None,  # type: ignore[arg-type]
                        pushes=SimpleNamespace(inflight=set()),  # type: ignore[arg-type]
                        pause=SimpleNamespace(paused=False),  # type: ignore[arg-type]
                        snapshots=None,  # type: ignore[arg-type]
                        recount=SimpleNamespace(status=dict),  # type: ignore[arg-type]
                        emit=lambda p: None, is_down=lambda n: False,
                        remote=SimpleNamespace(run=remote_run))  # type: ignore[arg-type]
    recovery.orphans = orphans  # type: ignore[method-assign]
    return recovery


async def test_a_failing_half_of_a_rehoming_round_cancels_the_other_and_is_reported() -> None:
    state = {"cancelled": False}

    async def remote_run() -> int:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return 0

    async def orphans(budget: int = 0) -> list:
        await asyncio.sleep(0.05)
        raise RuntimeError("database or disk is full")

    recovery = _bare_coordinator(remote_run, orphans)
    assert recovery.rehome()
    for _ in range(100):
        if recovery.last_error:
            break
        await asyncio.sleep(0.01)
    assert state["cancelled"], "the remote half ran on, outside the round and its stop"
    assert "database or disk is full" in recovery.last_error
    assert not recovery.health_check().is_healthy
    await recovery.stop()


async def test_a_slow_orphan_push_does_not_hold_up_later_rehoming_rounds() -> None:
    from engine.daemons.recovery import Jobs
    from engine.inflight import Claims
    calls = {"remote": 0}

    async def remote_run() -> int:
        calls["remote"] += 1
        return 0

    orphan = Artifact("npz", "k/a.npz", "k", 10, "a" * 64, 1.0, "gpu-1")

    async def orphans(budget: int = 0) -> list[Shortfall]:
        return [Shortfall(orphan, frozenset({"coord"}), stored_copy=True)]

    recovery = _bare_coordinator(remote_run, orphans)
    recovery._schedule = lambda found: Jobs([(found[0], ["cpu-1"])],  # type: ignore[method-assign]
                                            Claims(set()))  # type: ignore[arg-type]
    gate = asyncio.Event()

    async def slow_run(run, reason, urgency="normal"):  # noqa: ANN001 (a 50 GiB push)
        await gate.wait()
        return {}

    recovery._run = slow_run  # type: ignore[method-assign]
    started = 0
    for _ in range(30):  # sync cycles while the push runs
        started += recovery.rehome()
        await asyncio.sleep(0.01)
    gate.set()
    await recovery.stop()
    assert started > 1 and calls["remote"] > 1, "every later round waited for one push"
