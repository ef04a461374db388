"""SnapshotKeeper without a Node: real SQLite databases and their snapshots in a real data
root, a real manifest, router and in-flight set, and a tiny snapshot budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.daemons import snapshots as snapshots_module
from engine.hashing import sha256_file
from engine.manifest import Artifact, ClusterManifest, Replica
from tests.unit.test_push_path_parts import (NODE, NodeParts, make_database, make_node_parts,
                                             write_file)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def parts(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> NodeParts:
    return make_node_parts(tmp_path, open_manifest(NODE), capacity=0)  # budget: the minimum


def register(parts: NodeParts, **rows: int) -> dict[str, Artifact]:
    """Databases games/k/<name>.db of ``rows`` 1 KB rows each, registered as the scanner
    does (each with its snapshot)."""
    for name, count in rows.items():
        make_database(parts.data.root / "games" / "k" / f"{name}.db", count, blob=1000)
    found = {}
    for cand in parts.scanner.candidates({}):
        art = parts.scanner.prepare(cand)
        assert art is not None
        parts.manifest.upsert_artifact(art)
        found[Path(art.path).stem] = art
    assert set(found) == set(rows)
    return found


def snap(parts: NodeParts, art: Artifact) -> Path:
    return parts.scanner.snapshot_path(art.data_type, art.path)


def footprint(parts: NodeParts, art: Artifact) -> int:
    return snap(parts, art).stat().st_blocks * 512


def placed(parts: NodeParts, art: Artifact, on: str = "coord") -> None:
    """``on`` holds ``art`` verified (a receipt recorded it)."""
    parts.manifest.set_replica(Replica(art.data_type, art.path, on, art.sha256, time.time(),
                                       origin=art.origin, root_id=f"root-{on}"))


@pytest.fixture
def three(parts: NodeParts, monkeypatch: pytest.MonkeyPatch) -> dict[str, Artifact]:
    """small, medium and large, each already held verified by the coordinator (waiting for
    further targets), with a budget one byte short of all three."""
    arts = register(parts, small=5, medium=40, large=160)
    for art in arts.values():
        placed(parts, art)
    sizes = {name: footprint(parts, a) for name, a in arts.items()}
    assert sizes["small"] < sizes["medium"] < sizes["large"]
    monkeypatch.setattr(snapshots_module, "BUDGET_MIN_BYTES", sum(sizes.values()) - 1)
    return arts


def present(parts: NodeParts, arts: dict[str, Artifact]) -> set[str]:
    return {name for name, a in arts.items() if snap(parts, a).exists()}


async def test_past_the_budget_the_largest_remakeable_snapshot_goes(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    keeper = parts.snapshots
    total = sum(footprint(parts, a) for a in three.values())
    large = footprint(parts, three["large"])
    assert keeper.budget() == total - 1
    assert await keeper.bound() == 1
    assert present(parts, three) == {"small", "medium"}
    assert keeper.kept_bytes == total - large  # what is left after dropping
    assert keeper.totals == {"dropped_for_budget": 1, "remade": 0}
    assert await keeper.bound() == 0, "within the budget now"
    assert keeper.status()["budget_bytes"] == total - 1


async def test_a_snapshot_is_remade_byte_identical_when_a_push_needs_it(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    keeper = parts.snapshots
    await keeper.bound()
    large = three["large"]
    assert not snap(parts, large).exists()
    source = await keeper.source_for(large)
    assert source == snap(parts, large) and source.exists()
    assert sha256_file(source) == large.sha256
    assert keeper.totals["remade"] == 1
    assert await keeper.source_for(large) == source and keeper.totals["remade"] == 1


async def test_a_snapshot_whose_database_changed_is_never_dropped(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    make_database(parts.data.root / "games" / "k" / "large.db", 1, blob=10)  # one more row
    keeper = parts.snapshots
    assert await keeper.bound() == 1
    assert present(parts, three) == {"small", "large"}, "the next largest went instead"
    # were it dropped anyway, it could not be re-made: the push finds it missing
    snap(parts, three["large"]).unlink()
    source = await keeper.source_for(three["large"])
    assert not source.exists() and keeper.totals["remade"] == 0


async def test_a_snapshot_in_flight_is_never_dropped(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    inflight = parts.pushes.path.inflight
    inflight.claim([(three["large"].ident, "coord"), (three["medium"].ident, "cpu-1")])
    keeper = parts.snapshots
    assert await keeper.bound() == 1
    assert present(parts, three) == {"medium", "large"}
    inflight.release(list(inflight))
    assert await keeper.bound() == 0  # small went: within the budget already


async def test_nothing_goes_when_nothing_can_be_remade(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    for name in three:
        make_database(parts.data.root / "games" / "k" / f"{name}.db", 1, blob=10)
    assert await parts.snapshots.bound() == 0
    assert present(parts, three) == set(three)
    assert parts.snapshots.kept_bytes > parts.snapshots.budget()


async def test_within_the_budget_nothing_goes(parts: NodeParts) -> None:
    arts = register(parts, a=5, b=5)
    assert await parts.snapshots.bound() == 0
    assert present(parts, arts) == {"a", "b"}
    assert parts.snapshots.kept_bytes == sum(footprint(parts, a) for a in arts.values())


async def test_a_snapshot_stays_until_every_target_holds_it_verified(
        parts: NodeParts) -> None:
    arts = register(parts, a=5, b=5)
    a, b = arts["a"], arts["b"]
    keeper, manifest = parts.snapshots, parts.manifest
    keeper.drop_finished([a, b])
    assert present(parts, arts) == {"a", "b"}  # the coordinator holds neither yet
    for art in (a, b):
        manifest.set_replica(Replica(art.data_type, art.path, "coord", art.sha256, time.time(),
                                     origin=NODE))
    parts.pushes.path.inflight.claim_one((b.ident, "cpu-1"))  # another push still reads b
    keeper.drop_finished([a, b])
    assert present(parts, arts) == {"b"}


async def test_a_plain_file_is_its_own_source(parts: NodeParts) -> None:
    file = write_file(parts.data.root / "npz" / "k" / "a.npz", b"abc")
    art = Artifact("npz", "k/a.npz", "k", 3, "0" * 64, 1.0, NODE)
    assert await parts.snapshots.source_for(art) == file
    assert parts.snapshots.totals["remade"] == 0


async def test_a_version_no_other_node_holds_keeps_its_snapshot_past_the_budget(
        parts: NodeParts, monkeypatch: pytest.MonkeyPatch) -> None:
    """If its database later changed or vanished, the snapshot would be the only bytes of
    that version: the budget never drops it (the reviewer's scenario: coord down, then the
    source removed)."""
    arts = register(parts, alone=160, placed=40)
    placed(parts, arts["placed"])
    monkeypatch.setattr(snapshots_module, "BUDGET_MIN_BYTES", 1)
    keeper = parts.snapshots
    assert await keeper.bound() == 1
    assert present(parts, arts) == {"alone"}
    (parts.data.root / "games" / "k" / "alone.db").unlink()  # the writer removes its source
    source = await keeper.source_for(arts["alone"])
    assert source.exists() and sha256_file(source) == arts["alone"].sha256


async def test_concurrent_pushes_remake_a_dropped_snapshot_once(
        parts: NodeParts, three: dict[str, Artifact]) -> None:
    import asyncio
    keeper = parts.snapshots
    await keeper.bound()
    large = three["large"]
    assert not snap(parts, large).exists()
    sources = await asyncio.gather(*(keeper.source_for(large) for _ in range(4)))
    assert all(s.exists() and sha256_file(s) == large.sha256 for s in sources)
    assert keeper.totals["remade"] == 1
