"""engine.manifest.store.ClusterManifest: sequence numbers, deltas, tombstones, verified holders.

An artifact is one version of one node's file: (origin, data_type, path, sha256) -- ``ident``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.manifest import Artifact, ClusterManifest, Replica, SyncReceipt

pytestmark = pytest.mark.unit

TABLES = ("artifacts", "replicas", "receipts", "capacity", "exclusions")
SHA_A = "a" * 64
SHA_B = "b" * 64


def art(path: str = "hex8_2p/g1.db", sha: str = SHA_A, size: int = 100, data_type: str = "games",
        origin: str = "gpu-1", mtime: float = 1_700_000_000.25) -> Artifact:
    return Artifact(data_type, path, path.split("/")[0] if "/" in path else None, size, sha, mtime,
                    origin, size + 1, 1_700_000_000_250_000_000)


def ident(path: str = "hex8_2p/g1.db", sha: str = SHA_A, data_type: str = "games",
          origin: str = "gpu-1") -> tuple[str, str, str, str]:
    return (origin, data_type, path, sha)


def rep(path: str, node: str, sha: str = SHA_A, verified_at: float | None = 1.0,
        data_type: str = "games", origin: str = "gpu-1") -> Replica:
    """``node``'s copy of version ``sha`` of ``origin``'s ``data_type/path``."""
    return Replica(data_type, path, node, sha, verified_at, origin=origin)


def receipt(path: str = "hex8_2p/g1.db", sha: str = SHA_A, target: str = "coord",
            verified_at: float = 123.5, origin: str = "gpu-1") -> SyncReceipt:
    return SyncReceipt("games", path, "gpu-1", target, sha, 100, verified_at, "http",
                       origin=origin)


@pytest.fixture
def manifest(open_manifest: Callable[[str], ClusterManifest]) -> ClusterManifest:
    return open_manifest("gpu-1")


def _rows(m: ClusterManifest, table: str) -> list[dict]:
    return [dict(r) for r in m._db.execute(f"SELECT * FROM {table}")]


def _row_key(table: str, row: dict) -> tuple:
    if table == "artifacts":
        return (row["origin"], row["data_type"], row["path"], row["sha256"])
    if table == "replicas":
        return (row["origin"], row["data_type"], row["path"], row["sha256"], row["node"])
    if table == "receipts":
        return (row["id"],)
    if table == "capacity":
        return (row["node"],)
    return (row["node"], row["pattern"])


def _populate(m: ClusterManifest) -> None:
    """A mix of every kind of mutation, touching every table, with tombstones."""
    for i in range(6):
        m.upsert_artifact(art(f"hex8_2p/g{i}.db"))
    for i in range(4):
        m.set_replica(rep(f"hex8_2p/g{i}.db", f"node-{i}", verified_at=10.0 + i))
    m.remove_replica(ident("hex8_2p/g1.db"), "node-1")
    m.remove_artifact(art("hex8_2p/g5.db"))
    for i in range(3):
        m.register_sync(receipt(f"npz/n{i}.npz", target=f"rx-{i}"),
                        art(f"npz/n{i}.npz", data_type="npz") if i % 2 == 0 else None)
    for i in range(3):
        m.set_capacity(f"node-{i}", 10 * i, 1000)
    m.add_exclusion("node-0", "games/*.tmp", "temp files")
    m.add_exclusion("node-1", "npz/old/*", "old")
    m.upsert_artifact(art("hex8_2p/g0.db", sha=SHA_B))  # a new version supersedes the old


# -- sequence numbers -------------------------------------------------------------------------

def test_fresh_manifest_starts_at_zero(manifest: ClusterManifest) -> None:
    assert manifest.seq == 0
    d = manifest.changes_since(0)
    assert d["seq"] == 0 and d["complete"] is True
    assert all(d[t] == [] for t in TABLES)


def test_every_mutation_takes_the_next_seq_and_stamps_its_rows(manifest: ClusterManifest) -> None:
    m = manifest
    a = art()
    steps = [
        ("artifacts", lambda: m.upsert_artifact(a)),
        ("replicas", lambda: m.set_replica(rep(a.path, "coord"))),
        ("replicas", lambda: m.remove_replica(a.ident, "coord")),
        ("receipts", lambda: m.register_sync(receipt(target="gpu-2"))),
        ("capacity", lambda: m.set_capacity("gpu-1", 5, 10)),
        ("exclusions", lambda: m.add_exclusion("gpu-1", "*.tmp", "tmp")),
        ("artifacts", lambda: m.upsert_artifact(art(sha=SHA_B))),
        ("artifacts", lambda: m.remove_artifact(art(sha=SHA_B))),
    ]
    for expected, (table, step) in enumerate(steps, start=1):
        step()
        assert m.seq == expected, table
        assert max(r["seq"] for r in _rows(m, table)) == expected, table


def test_removing_a_replica_that_is_not_counted_takes_no_seq(manifest: ClusterManifest) -> None:
    m = manifest
    m.set_replica(rep(art().path, "coord"))
    assert m.remove_replica(ident(sha=SHA_B), "coord") is False  # another version: not held
    assert m.remove_replica(ident(), "cpu-1") is False           # another node
    assert m.seq == 1
    assert m.remove_replica(ident(), "coord") is True
    assert m.remove_replica(ident(), "coord") is False           # already removed
    assert m.seq == 2


def test_register_sync_returns_its_seq(manifest: ClusterManifest) -> None:
    manifest.upsert_artifact(art())
    assert manifest.register_sync(receipt()) == 2 == manifest.seq


def test_upsert_unchanged_returns_false_and_takes_no_seq(manifest: ClusterManifest) -> None:
    a = art()
    assert manifest.upsert_artifact(a) is True
    assert manifest.seq == 1
    assert manifest.upsert_artifact(a) is False
    assert manifest.upsert_artifact(Artifact(**{**a.__dict__})) is False  # an equal copy
    assert manifest.seq == 1
    assert manifest.changes_since(1)["artifacts"] == []
    # any changed field is a change
    assert manifest.upsert_artifact(art(size=101)) is True
    assert manifest.seq == 2
    assert manifest.get_artifact("games", a.path) == art(size=101)


def test_upsert_of_a_removed_artifact_revives_it(manifest: ClusterManifest) -> None:
    a = art()
    manifest.upsert_artifact(a)
    manifest.remove_artifact(a)
    assert manifest.get_artifact("games", a.path) is None
    assert manifest.artifacts() == []
    assert manifest.upsert_artifact(a) is True  # same fields, but it was a tombstone
    assert manifest.seq == 3
    assert manifest.get_artifact("games", a.path) == a
    (row,) = manifest.changes_since(2)["artifacts"]
    assert row["removed"] == 0 and row["seq"] == 3


def test_failed_mutation_takes_no_seq(manifest: ClusterManifest) -> None:
    manifest.upsert_artifact(art())
    with pytest.raises(sqlite3.IntegrityError):
        manifest.set_replica(rep("x", "coord", sha=None))  # type: ignore[arg-type]
    assert manifest.seq == 1
    assert manifest.replicas(ident("x")) == []
    manifest.set_capacity("coord", 1, 2)  # the manifest still works, and seq is contiguous
    assert manifest.seq == 2


# -- deltas -----------------------------------------------------------------------------------

def test_changes_since_returns_exactly_rows_changed_after_seq(manifest: ClusterManifest) -> None:
    m = manifest
    m.upsert_artifact(art("hex8_2p/old.db"))                           # 1
    m.set_replica(rep("hex8_2p/old.db", "coord"))                      # 2
    m.set_capacity("coord", 1, 2)                                      # 3
    m.add_exclusion("coord", "old/*", "old")                           # 4
    m.register_sync(receipt("hex8_2p/old.db", target="gpu-3"))         # 5
    base = m.seq
    m.upsert_artifact(art("hex8_2p/new.db"))                           # 6
    m.set_replica(rep("hex8_2p/new.db", "coord", verified_at=2.0))     # 7
    m.register_sync(receipt("hex8_2p/new.db", sha=SHA_B, target="gpu-2"),
                    art("hex8_2p/new.db", sha=SHA_B))                  # 8: a second version
    m.set_capacity("gpu-2", 5, 10)                                     # 9
    m.add_exclusion("gpu-2", "*.tmp", "tmp")                           # 10
    m.set_capacity("coord", 3, 4)                                      # 11: update of an old row

    d = m.changes_since(base)
    assert d["since"] == base and d["node"] == "gpu-1"
    assert d["seq"] == m.seq == 11 and d["complete"] is True
    assert [(r["path"], r["sha256"], r["seq"]) for r in d["artifacts"]] == [
        ("hex8_2p/new.db", SHA_A, 6), ("hex8_2p/new.db", SHA_B, 8)]
    assert sorted((r["node"], r["sha256"], r["seq"]) for r in d["replicas"]) == [
        ("coord", SHA_A, 7), ("gpu-2", SHA_B, 8)]
    assert [(r["target_node"], r["origin"], r["seq"]) for r in d["receipts"]] == [
        ("gpu-2", "gpu-1", 8)]
    assert [(r["node"], r["used_bytes"], r["seq"]) for r in d["capacity"]] == [
        ("gpu-2", 5, 9), ("coord", 3, 11)]
    assert [(r["node"], r["pattern"], r["seq"]) for r in d["exclusions"]] == [("gpu-2", "*.tmp", 10)]
    # nothing after the newest seq
    last = m.changes_since(m.seq)
    assert all(last[t] == [] for t in TABLES) and last["complete"] is True


def test_changes_since_matches_a_direct_query_at_every_seq(manifest: ClusterManifest) -> None:
    _populate(manifest)
    for since in range(manifest.seq + 1):
        d = manifest.changes_since(since)
        assert d["complete"] is True and d["seq"] == manifest.seq
        for table in TABLES:
            expected = sorted(_row_key(table, r) for r in _rows(manifest, table) if r["seq"] > since)
            assert sorted(_row_key(table, r) for r in d[table]) == expected, (since, table)


def test_tombstones_travel_as_deltas(manifest: ClusterManifest) -> None:
    m = manifest
    m.upsert_artifact(art())
    m.set_replica(rep(art().path, "coord"))
    before = m.seq
    m.remove_replica(art().ident, "coord")
    m.remove_artifact(art())
    d = m.changes_since(before)
    assert [(r["node"], r["removed"], r["seq"]) for r in d["replicas"]] == [("coord", 1, before + 1)]
    assert [(r["path"], r["removed"], r["seq"]) for r in d["artifacts"]] == [
        (art().path, 1, before + 2)]
    # and the live views no longer show them
    assert m.replicas(art()) == []
    assert m.get_artifact("games", art().path) is None
    assert m.counts_by_type() == {}


def test_truncated_delta_is_a_consistent_prefix(manifest: ClusterManifest) -> None:
    _populate(manifest)
    full = {t: _rows(manifest, t) for t in TABLES}
    for limit in (1, 2, 3, 5):
        for since in range(0, manifest.seq):
            d = manifest.changes_since(since, limit=limit)
            upto = d["seq"]
            assert since < upto <= manifest.seq, (limit, since)  # always makes progress
            assert d["complete"] is (upto == manifest.seq)
            for table in TABLES:
                # at most ``limit`` rows, unless the answer is one change sent whole (a new
                # version and the one it supersedes change in one seq)
                assert len(d[table]) <= limit or {
                    r["seq"] for t in TABLES for r in d[t]} == {upto}, (limit, since, table)
                got = sorted(_row_key(table, r) for r in d[table])
                want = sorted(_row_key(table, r) for r in full[table] if since < r["seq"] <= upto)
                assert got == want, (limit, since, table)


def test_small_limit_truncates_and_reports_incomplete(manifest: ClusterManifest) -> None:
    _populate(manifest)
    d = manifest.changes_since(0, limit=2)
    assert d["complete"] is False
    assert d["seq"] < manifest.seq
    assert all(r["seq"] <= d["seq"] for t in TABLES for r in d[t])


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_paging_yields_everything_exactly_once(manifest: ClusterManifest, limit: int) -> None:
    _populate(manifest)
    want = {t: sorted(_row_key(t, r) for r in _rows(manifest, t)) for t in TABLES}
    got: dict[str, list[tuple]] = {t: [] for t in TABLES}
    since, pages = 0, 0
    while True:
        d = manifest.changes_since(since, limit=limit)
        pages += 1
        assert pages <= manifest.seq + 1, "paging does not terminate"
        for t in TABLES:
            got[t] += [_row_key(t, r) for r in d[t]]
        assert d["seq"] > since or d["complete"]
        since = d["seq"]
        if d["complete"]:
            break
    assert since == manifest.seq
    for t in TABLES:
        assert sorted(got[t]) == want[t], t  # sorted lists: duplicates would show
    if limit < 3:
        assert pages > 1


# -- receipts and verified holders ------------------------------------------------------------

def test_register_sync_records_receipt_and_verified_replica(manifest: ClusterManifest) -> None:
    m = manifest
    a = art()
    m.upsert_artifact(a)
    seq = m.register_sync(receipt(target="coord", verified_at=42.0))
    (r,) = m.receipts()
    assert r == receipt(target="coord", verified_at=42.0)
    assert m.replicas(a) == [rep(a.path, "coord", verified_at=42.0)]
    assert m.verified_holders(a) == {"coord"}
    d = m.changes_since(seq - 1)
    assert len(d["receipts"]) == 1 and len(d["replicas"]) == 1 and d["artifacts"] == []


def test_register_sync_records_the_holders_root_id(manifest: ClusterManifest) -> None:
    a = art()
    manifest.upsert_artifact(a)
    manifest.register_sync(dataclasses.replace(receipt(target="coord"), root_id="root-c"))
    (r,) = manifest.replicas(a)
    assert (r.node, r.root_id) == ("coord", "root-c")
    # a later row without a root id keeps the one the holder reported
    manifest.set_replica(rep(a.path, "coord", verified_at=200.0))
    (r,) = manifest.replicas(a)
    assert (r.root_id, r.verified_at) == ("root-c", 200.0)


def test_register_sync_with_artifact_records_the_artifact(manifest: ClusterManifest) -> None:
    m = manifest
    a = art("hex8_2p/remote.db", origin="gpu-7")
    seq = m.register_sync(receipt("hex8_2p/remote.db", target="gpu-1", origin="gpu-7"), a)
    got = m.get_artifact("games", a.path, "gpu-7")
    assert got is not None
    assert (got.size, got.sha256, got.config_key, got.origin, got.mtime) == (
        a.size, a.sha256, a.config_key, a.origin, a.mtime)
    assert m.verified_holders(got) == {"gpu-1"}
    d = m.changes_since(seq - 1)
    assert [r["seq"] for r in d["artifacts"]] == [seq]
    assert [r["seq"] for r in d["receipts"]] == [seq]
    assert [(r["origin"], r["seq"]) for r in d["replicas"]] == [("gpu-7", seq)]


def test_register_sync_revives_a_removed_artifact_and_replica(manifest: ClusterManifest) -> None:
    m = manifest
    a = art()
    m.register_sync(receipt(target="coord"), a)
    m.remove_replica(a.ident, "coord")
    m.remove_artifact(a)
    m.register_sync(receipt(target="coord", verified_at=99.0), a)
    assert m.get_artifact("games", a.path) is not None
    assert m.replicas(a) == [rep(a.path, "coord", verified_at=99.0)]
    assert len(m.receipts()) == 2


def test_receipts_newest_first_and_limited(manifest: ClusterManifest) -> None:
    for i in range(5):
        manifest.register_sync(receipt(f"p{i}", target=f"t{i}"))
    assert [r.target_node for r in manifest.receipts(limit=3)] == ["t4", "t3", "t2"]


def test_verified_holders_counts_only_matching_verified_replicas(manifest: ClusterManifest) -> None:
    m = manifest
    a = art()
    m.upsert_artifact(a)
    m.set_replica(rep(a.path, "good-1", verified_at=1.0))
    m.set_replica(rep(a.path, "good-2", verified_at=2.0))
    m.set_replica(rep(a.path, "other-version", sha=SHA_B, verified_at=3.0))
    m.set_replica(rep(a.path, "other-origin", origin="gpu-2", verified_at=3.0))
    m.set_replica(rep(a.path, "unverified", verified_at=None))
    m.set_replica(rep("hex8_2p/other.db", "other-path", verified_at=4.0))
    m.set_replica(rep(a.path, "other-type", data_type="npz", verified_at=4.0))
    m.set_replica(rep(a.path, "removed", verified_at=5.0))
    m.remove_replica(a.ident, "removed")
    assert m.verified_holders(a) == {"good-1", "good-2"}

    assert m.verified_holders_by_artifact("gpu-1") == {a.ident: {"good-1", "good-2"}}
    assert m.verified_holders_by_artifact("someone-else") == {}

    # a replica that is re-recorded without verification stops counting
    m.set_replica(rep(a.path, "good-2", verified_at=None))
    assert m.verified_holders(a) == {"good-1"}
    assert m.verified_holders_by_artifact("gpu-1") == {a.ident: {"good-1"}}


def test_a_new_version_has_its_own_holders_and_the_old_one_keeps_its_own(
        manifest: ClusterManifest) -> None:
    m = manifest
    m.upsert_artifact(art(sha=SHA_A))
    m.set_replica(rep(art().path, "coord", sha=SHA_A))
    m.set_replica(rep(art().path, "gpu-2", sha=SHA_B))
    assert m.verified_holders(m.get_artifact("games", art().path)) == {"coord"}
    m.upsert_artifact(art(sha=SHA_B))
    current = m.get_artifact("games", art().path)
    assert current is not None and current.sha256 == SHA_B and not current.superseded
    assert m.verified_holders(current) == {"gpu-2"}
    # the old version stays known (superseded) with its copies: nothing counts across versions
    old = m.get_artifact("games", art().path, "gpu-1", SHA_A)
    assert old is not None and old.superseded
    assert m.verified_holders(old) == {"coord"}
    assert m.verified_holders_by_artifact("gpu-1") == {current.ident: {"gpu-2"}}
    assert m.verified_holders_by_artifact("gpu-1", versions=True) == {
        current.ident: {"gpu-2"}, old.ident: {"coord"}}


def test_register_sync_of_two_versions_keeps_their_holders_apart(
        manifest: ClusterManifest) -> None:
    m = manifest
    m.register_sync(receipt(target="coord", sha=SHA_A), art(sha=SHA_A))
    m.register_sync(receipt(target="gpu-2", sha=SHA_B), art(sha=SHA_B))
    assert m.verified_holders(art(sha=SHA_A)) == {"coord"}
    assert m.verified_holders(art(sha=SHA_B)) == {"gpu-2"}
    assert {a.sha256 for a in m.artifacts(versions=True)} == {SHA_A, SHA_B}


# -- other views ------------------------------------------------------------------------------

def test_artifacts_filters_and_counts(manifest: ClusterManifest) -> None:
    m = manifest
    m.upsert_artifact(art("a/1.db", origin="gpu-1", mtime=3.0))
    m.upsert_artifact(art("a/2.db", origin="gpu-2", mtime=1.0))
    m.upsert_artifact(art("a/3.npz", data_type="npz", origin="gpu-1", mtime=2.0))
    assert [a.path for a in m.artifacts()] == ["a/2.db", "a/3.npz", "a/1.db"]  # by mtime
    assert [a.path for a in m.artifacts(data_type="games")] == ["a/2.db", "a/1.db"]
    assert [a.path for a in m.artifacts(origin="gpu-1")] == ["a/3.npz", "a/1.db"]
    assert [a.path for a in m.artifacts("games", "gpu-1")] == ["a/1.db"]
    assert m.counts_by_type() == {"games": 2, "npz": 1}
    assert art("a/1.db").key == "games/a/1.db"


def test_capacity_and_exclusions(manifest: ClusterManifest) -> None:
    m = manifest
    m.set_capacity("coord", 10, 100)
    m.set_capacity("coord", 20, 100)
    cap = m.capacity()
    assert set(cap) == {"coord"}
    assert (cap["coord"]["used_bytes"], cap["coord"]["total_bytes"]) == (20, 100)
    m.add_exclusion("gpu-2", "*.tmp", "first")
    m.add_exclusion("gpu-2", "*.tmp", "second")
    assert m.exclusions() == [("gpu-2", "*.tmp", "second")]
    assert m.seq == 4


# -- storage ----------------------------------------------------------------------------------

def test_database_is_in_wal_mode(manifest: ClusterManifest) -> None:
    manifest.upsert_artifact(art())
    other = sqlite3.connect(manifest.db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    header = manifest.db_path.read_bytes()[:20]
    assert header[18] == 2 and header[19] == 2  # file format: WAL


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = ClusterManifest(path, "gpu-1")
    _populate(m)
    seq, arts = m.seq, m.artifacts()
    delta = m.changes_since(0)
    m.close()

    m2 = ClusterManifest(path, "gpu-1")
    try:
        assert m2.seq == seq
        assert m2.artifacts() == arts
        again = m2.changes_since(0)
        for t in TABLES:
            assert again[t] == delta[t], t
        m2.set_capacity("late", 1, 2)
        assert m2.seq == seq + 1  # numbering continues, never reuses
        (row,) = m2.changes_since(seq)["capacity"]
        assert row["node"] == "late" and row["seq"] == seq + 1
    finally:
        m2.close()


def test_newest_artifacts_with_replicas_in_one_answer(manifest: ClusterManifest) -> None:
    m = manifest
    for i, mtime in enumerate((30.0, 10.0, 20.0)):
        m.upsert_artifact(art(f"k/g{i}.db", mtime=mtime))
    m.set_replica(rep("k/g0.db", "coord", verified_at=5.0))
    m.set_replica(rep("k/g0.db", "cpu-1", verified_at=None))
    m.set_replica(rep("k/g0.db", "gpu-3", sha=SHA_B, verified_at=5.0))  # another version
    m.set_replica(rep("k/g2.db", "gone", verified_at=5.0))
    m.remove_replica(ident("k/g2.db"), "gone")
    m.upsert_artifact(art("k/removed.db", mtime=99.0))
    m.remove_artifact(art("k/removed.db", mtime=99.0))
    m.upsert_artifact(art("k/old.db", mtime=98.0))
    m.upsert_artifact(art("k/old.db", sha=SHA_B, mtime=1.0))  # supersedes the newer-mtime one
    total, rows = m.newest_artifacts(2)
    assert total == 4
    assert [(a.path, [(r.node, r.sha256, r.verified_at) for r in reps]) for a, reps in rows] == [
        ("k/g0.db", [("coord", SHA_A, 5.0), ("cpu-1", SHA_A, None)]), ("k/g2.db", [])]
    assert m.newest_artifacts(10)[1][-1][0].ident == ident("k/old.db", sha=SHA_B)
    for path in ("k/g0.db", "k/g1.db", "k/g2.db"):
        m.remove_artifact(art(path))
    m.remove_artifact(art("k/old.db", sha=SHA_B))
    assert m.newest_artifacts(10) == (0, [])


def test_held_by_lists_one_nodes_live_replicas(manifest: ClusterManifest) -> None:
    m = manifest
    for path in ("k/a.db", "k/b.db", "k/c.db"):
        m.upsert_artifact(art(path))
        m.set_replica(rep(path, "coord"))
    m.set_replica(rep("k/a.db", "cpu-1"))
    m.set_replica(rep("k/a.db", "coord", sha=SHA_B))  # a version the manifest does not know
    m.remove_replica(ident("k/b.db"), "coord")
    m.remove_artifact(art("k/c.db"))
    held = m.held_by("coord")
    assert [(a.path, r.node, r.sha256) for a, r in held] == [("k/a.db", "coord", SHA_A)]
    assert held[0][0] == m.get_artifact("games", "k/a.db")
    assert held[0][1].ident == held[0][0].ident


# -- merging a peer's deltas ------------------------------------------------------------------

@pytest.fixture
def coord(open_manifest: Callable[[str], ClusterManifest]) -> ClusterManifest:
    return open_manifest("coord")


@pytest.fixture
def cpu(open_manifest: Callable[[str], ClusterManifest]) -> ClusterManifest:
    return open_manifest("cpu-1")


def _live(m: ClusterManifest) -> dict[str, set[tuple]]:
    """Every row of the merged tables without its seq (what a merge is about)."""
    return {t: {tuple(v for k, v in sorted(r.items()) if k != "seq") for r in _rows(m, t)}
            for t in ("artifacts", "replicas", "deletions")}


def _pull(into: ClusterManifest, peer: ClusterManifest, limit: int = 5000) -> int:
    """Page through ``peer``'s deltas from ``into``'s cursor, as the puller does."""
    changed = 0
    while True:
        answer = peer.changes_since(into.peer_cursor(peer.node), limit)
        changed += into.merge_peer(peer.node, answer)
        if answer["complete"]:
            return changed


def test_merge_peer_takes_only_the_holders_own_replica_rows(coord: ClusterManifest,
                                                            cpu: ClusterManifest) -> None:
    a = art(origin="gpu-1")
    # cpu-1 received gpu-1's artifact (its own verified replica), then pushed it to gpu-2 and
    # recorded gpu-2's answer: a second-hand row.
    cpu.register_sync(receipt(target="cpu-1", verified_at=50.0), a)
    cpu.register_sync(SyncReceipt("games", a.path, "cpu-1", "gpu-2", SHA_A, 100, 60.0, "http",
                                  origin="gpu-1"))
    cpu.set_capacity("gpu-2", 1, 2)
    cpu.add_exclusion("gpu-2", "*.tmp", "tmp")
    before = coord.seq
    assert coord.merge_peer("cpu-1", cpu.changes_since(0)) == 1
    assert coord.replicas(a) == [rep(a.path, "cpu-1", verified_at=50.0)]
    assert coord.get_artifact("games", a.path) is None  # gpu-1's artifact: only gpu-1 says it
    assert coord.receipts() == [] and coord.capacity() == {} and coord.exclusions() == []
    assert coord.seq == before + 1
    assert [(r["node"], r["seq"]) for r in coord.changes_since(before)["replicas"]] == [
        ("cpu-1", before + 1)]  # the coordinator's own deltas carry what it learned


def test_merge_peer_takes_artifacts_only_from_their_origin(coord: ClusterManifest,
                                                           manifest: ClusterManifest) -> None:
    gpu = manifest  # node gpu-1
    coord.upsert_artifact(art("k/coords.db", origin="coord"))
    coord.register_sync(receipt("k/clash.db", target="coord", origin="gpu-2"),
                        art("k/clash.db", origin="gpu-2"))
    gpu.upsert_artifact(art("k/own.db"))
    gpu.upsert_artifact(art("k/clash.db", sha=SHA_B))     # gpu-1's own file, same path as gpu-2's
    gpu.upsert_artifact(art("k/coords.db", sha=SHA_B))    # and as one of the coordinator's
    gpu.register_sync(receipt("k/relayed.db", target="gpu-1", origin="gpu-7"),
                      art("k/relayed.db", origin="gpu-7"))
    # gpu-1's three own artifacts + its own replica of gpu-7's; gpu-7's artifact is not taken
    assert coord.merge_peer("gpu-1", gpu.changes_since(0)) == 4
    assert coord.get_artifact("games", "k/own.db", "gpu-1") == art("k/own.db")
    # one path, two origins: two artifacts, and neither overwrites the other
    assert coord.get_artifact("games", "k/clash.db", "gpu-2") == art("k/clash.db", origin="gpu-2")
    assert coord.get_artifact("games", "k/clash.db", "gpu-1") == art("k/clash.db", sha=SHA_B)
    assert coord.get_artifact("games", "k/coords.db", "coord") == art("k/coords.db",
                                                                       origin="coord")
    assert coord.get_artifact("games", "k/coords.db", "gpu-1") == art("k/coords.db", sha=SHA_B)
    # without an origin, this node's own file first
    assert coord.get_artifact("games", "k/coords.db") == art("k/coords.db", origin="coord")
    assert coord.get_artifact("games", "k/relayed.db") is None
    assert coord.replicas(ident("k/relayed.db", origin="gpu-7")) == [
        rep("k/relayed.db", "gpu-1", verified_at=123.5, origin="gpu-7")]

    # a new version by the origin is taken and supersedes the old one; so is its tombstone
    seen = gpu.seq
    gpu.upsert_artifact(art("k/own.db", sha=SHA_B, size=7))
    assert coord.merge_peer("gpu-1", gpu.changes_since(seen)) == 2  # the new row, the old one
    assert coord.get_artifact("games", "k/own.db", "gpu-1") == art("k/own.db", sha=SHA_B, size=7)
    old = coord.get_artifact("games", "k/own.db", "gpu-1", SHA_A)
    assert old is not None and old.superseded
    gpu.remove_artifact(art("k/own.db", sha=SHA_B, size=7))
    assert coord.merge_peer("gpu-1", gpu.changes_since(coord.peer_cursor("gpu-1"))) == 1
    assert coord.get_artifact("games", "k/own.db", "gpu-1") is None
    assert coord.get_artifact("games", "k/own.db", "gpu-1", SHA_A) == old  # exactly one version
    assert coord.peer_cursor("gpu-1") == gpu.seq


def test_an_artifact_received_from_its_origin_is_completed_not_duplicated(
        coord: ClusterManifest, manifest: ClusterManifest) -> None:
    a = art()
    manifest.upsert_artifact(a)
    # the receiver's row, as the sender described it: no source identity
    sent = dataclasses.replace(a, source_size=None, source_mtime_ns=None)
    coord.register_sync(receipt(target="coord"), sent)
    assert coord.get_artifact("games", a.path, "gpu-1") == sent
    assert coord.merge_peer("gpu-1", manifest.changes_since(0)) == 1
    assert coord.get_artifact("games", a.path, "gpu-1") == a
    assert len(_rows(coord, "artifacts")) == 1
    assert coord.verified_holders(a) == {"coord"}


def _own_npz(m: ClusterManifest, count: int, first_verified_at: float = 0.0) -> None:
    """``count`` npz artifacts k/0.npz… of ``m``'s node, each with its own verified row."""
    for i in range(count):
        a = art(f"k/{i}.npz", data_type="npz", origin=m.node)
        m.upsert_artifact(a)
        m.set_replica(rep(a.path, m.node, verified_at=first_verified_at + i, data_type="npz",
                          origin=m.node))


def test_merge_peer_takes_one_seq_and_a_second_time_changes_nothing(
        coord: ClusterManifest, manifest: ClusterManifest) -> None:
    gpu = manifest
    _own_npz(gpu, 4, first_verified_at=10.0)
    answer = gpu.changes_since(0)
    coord.set_capacity("gpu-1", 1, 2)
    before = coord.seq
    assert coord.merge_peer("gpu-1", answer) == 8
    assert coord.seq == before + 1
    assert {r["seq"] for t in ("artifacts", "replicas") for r in _rows(coord, t)} == {before + 1}
    assert coord.peer_cursor("gpu-1") == gpu.seq == answer["seq"]
    state = _live(coord)
    assert coord.merge_peer("gpu-1", answer) == 0  # idempotent: no change, no seq
    assert coord.merge_peer("gpu-1", gpu.changes_since(gpu.seq)) == 0  # a quiet round
    assert coord.seq == before + 1 and _live(coord) == state
    assert coord.peer_cursor("gpu-1") == gpu.seq


def test_merge_peer_follows_tombstones_and_deletions(coord: ClusterManifest,
                                                     manifest: ClusterManifest,
                                                     cpu: ClusterManifest) -> None:
    gpu, a = manifest, art()
    gpu.upsert_artifact(a)
    gpu.set_replica(rep(a.path, "gpu-1", verified_at=5.0))
    cpu.register_sync(receipt(target="cpu-1", verified_at=50.0), a)
    _pull(coord, gpu)
    _pull(coord, cpu)
    assert coord.verified_holders(a) == {"gpu-1", "cpu-1"}

    # cpu-1's copy is quarantined (re-hashed to other bytes, its row removed): the tombstone
    # travels
    assert cpu.remove_replica(a.ident, "cpu-1") is True
    assert _pull(coord, cpu) == 1
    assert coord.verified_holders(a) == {"gpu-1"}
    assert [r["removed"] for r in _rows(coord, "replicas") if r["node"] == "cpu-1"] == [1]

    # gpu-1 deletes its source: the deletion row arrives and its replica row goes
    gpu.record_deletion(a, ["coord", "cpu-1"])
    assert _pull(coord, gpu) == 2
    (row,) = coord.deletions()
    assert (row["origin"], row["node"], row["sha256"], row["vouched_by"]) == (
        "gpu-1", "gpu-1", SHA_A, ["coord", "cpu-1"])
    assert coord.replicas(a) == []
    assert coord.deleted_sources("gpu-1") == {a.ident}
    assert coord.deleted_sources("cpu-1") == set()


def test_a_deletion_removes_exactly_one_version(manifest: ClusterManifest) -> None:
    gpu = manifest
    old, new = art(sha=SHA_A), art(sha=SHA_B)
    gpu.upsert_artifact(old)
    gpu.set_replica(rep(old.path, "gpu-1", sha=SHA_A))
    gpu.upsert_artifact(new)  # the same file with new bytes: a new version
    gpu.set_replica(rep(new.path, "gpu-1", sha=SHA_B))
    gpu.record_deletion(old, ["coord"])
    assert gpu.deleted_sources("gpu-1") == {old.ident}
    assert gpu.replicas(old) == []
    assert [r.node for r in gpu.replicas(new)] == ["gpu-1"]
    assert gpu.get_artifact("games", new.path) == new  # the current version is untouched


def test_a_deletion_alone_marks_the_deleting_nodes_replica_removed(
        coord: ClusterManifest, manifest: ClusterManifest) -> None:
    gpu, a, b = manifest, art("k/a.db"), art("k/b.db")
    for x in (a, b):
        gpu.upsert_artifact(x)
        gpu.set_replica(rep(x.path, "gpu-1", verified_at=5.0))
    _pull(coord, gpu)
    seen = gpu.seq
    gpu.record_deletion(a, ["coord"])
    gpu.record_deletion(b, ["coord"])
    gpu.set_replica(rep(b.path, "gpu-1", verified_at=9.0))  # b is back on gpu-1 since
    answer = gpu.changes_since(seen)
    answer["replicas"] = [r for r in answer["replicas"] if r["path"] == b.path]  # no a row
    assert coord.merge_peer("gpu-1", answer) == 4  # 2 deletions, a's replica, b's new row
    assert {r.node for r in coord.replicas(a)} == set()
    assert coord.replicas(b) == [rep(b.path, "gpu-1", verified_at=9.0)]


def test_merge_peer_never_takes_rows_about_this_node(coord: ClusterManifest,
                                                     manifest: ClusterManifest) -> None:
    gpu, a = manifest, art()
    gpu.upsert_artifact(a)
    gpu.register_sync(receipt(target="coord", verified_at=42.0))  # gpu-1's row about coord
    gpu.record_deletion(art("k/x.db", origin="coord"), ["gpu-1"])  # claims about coord
    gpu.upsert_artifact(art("k/mine.db", origin="coord"))  # claims an artifact of coord's
    coord.merge_peer("gpu-1", gpu.changes_since(0))
    assert coord.replicas(a) == []
    assert coord.deletions() == []
    assert coord.artifacts(origin="coord") == []
    with pytest.raises(ValueError, match="own manifest"):
        coord.merge_peer("coord", coord.changes_since(0))
    with pytest.raises(ValueError, match="not 'cpu-1'"):
        coord.merge_peer("cpu-1", gpu.changes_since(0))
    assert coord.peer_cursor("cpu-1") == 0


def test_a_holders_later_answer_seen_first_is_kept(coord: ClusterManifest,
                                                   cpu: ClusterManifest) -> None:
    a = art()
    cpu.register_sync(receipt(target="cpu-1", verified_at=50.0), a)
    cpu.remove_replica(a.ident, "cpu-1")
    stale = cpu.changes_since(0)  # fetched before cpu-1 got a new copy
    coord.register_sync(receipt(target="cpu-1", verified_at=80.0), a)  # coord's push's answer
    assert coord.merge_peer("cpu-1", stale) == 0
    assert coord.replicas(a) == [rep(a.path, "cpu-1", verified_at=80.0)]


def test_paged_merge_equals_one_answer_and_ends_at_the_peers_seq(
        tmp_path: Path, manifest: ClusterManifest) -> None:
    gpu = manifest
    _own_npz(gpu, 7)
    gpu.remove_replica(ident("k/3.npz", data_type="npz"), "gpu-1")
    gpu.remove_artifact(art("k/5.npz", data_type="npz"))
    gpu.upsert_artifact(art("k/1.npz", data_type="npz", sha=SHA_B))
    whole, paged = (ClusterManifest(tmp_path / f"{n}.db", "coord") for n in ("whole", "paged"))
    try:
        whole.merge_peer("gpu-1", gpu.changes_since(0))
        _pull(paged, gpu, limit=2)
        assert paged.peer_cursor("gpu-1") == whole.peer_cursor("gpu-1") == gpu.seq
        assert _live(paged) == _live(whole)
        assert paged.seq > whole.seq == 1  # one seq per answer merged
    finally:
        whole.close()
        paged.close()


def test_a_big_merge_is_one_change_yet_pages_with_any_limit(coord: ClusterManifest,
                                                            manifest: ClusterManifest) -> None:
    for i in range(6):
        manifest.upsert_artifact(art(f"k/{i}.db"))
    coord.set_capacity("gpu-1", 1, 2)
    coord.merge_peer("gpu-1", manifest.changes_since(0))  # 6 rows, one seq
    d = coord.changes_since(1, limit=2)  # the change is not split, and the pager progresses
    assert d["seq"] == 2 and d["complete"] is True and len(d["artifacts"]) == 6
    d = coord.changes_since(0, limit=2)
    assert (d["seq"], d["complete"], len(d["capacity"]), d["artifacts"]) == (1, False, 1, [])
    since, pages = 0, 0
    while True:
        d = coord.changes_since(since, limit=2)
        pages += 1
        assert d["seq"] > since or d["complete"], "paging does not progress"
        since = d["seq"]
        if d["complete"] or pages > 5:
            break
    assert (since, pages) == (coord.seq, 2)


def test_manifest_id_is_random_persistent_and_in_every_answer(tmp_path: Path) -> None:
    one = ClusterManifest(tmp_path / "one.db", "gpu-1")
    two = ClusterManifest(tmp_path / "two.db", "gpu-1")
    ident = one.manifest_id
    assert len(ident) >= 16 and ident != two.manifest_id
    assert one.changes_since(0)["manifest_id"] == ident
    one.close()
    two.close()
    again = ClusterManifest(tmp_path / "one.db", "gpu-1")
    try:
        assert again.manifest_id == ident
    finally:
        again.close()


def test_a_peer_that_started_over_is_read_again_from_zero(tmp_path: Path,
                                                          coord: ClusterManifest) -> None:
    old = ClusterManifest(tmp_path / "old.db", "gpu-1")
    for i in range(5):
        old.upsert_artifact(art(f"k/old{i}.db"))
    _pull(coord, old)
    assert coord.peer_cursor("gpu-1") == 5
    old.close()
    new = ClusterManifest(tmp_path / "new.db", "gpu-1")  # gpu-1's data root was wiped
    try:
        new.upsert_artifact(art("k/new0.db"))
        new.upsert_artifact(art("k/new1.db"))
        answer = new.changes_since(coord.peer_cursor("gpu-1"))  # since=5: sees nothing of 1..2
        assert answer["seq"] == 2 and answer["artifacts"] == []
        assert coord.merge_peer("gpu-1", answer) == 0
        assert coord.peer_cursor("gpu-1") == 0  # start that peer over
        assert _pull(coord, new) == 2
        assert coord.peer_cursor("gpu-1") == 2
        assert {a.path for a in coord.artifacts()} == {f"k/old{i}.db" for i in range(5)} | {
            "k/new0.db", "k/new1.db"}  # nothing dropped
    finally:
        new.close()


def test_an_answer_older_than_the_cursor_is_ignored(coord: ClusterManifest,
                                                    manifest: ClusterManifest) -> None:
    gpu, a = manifest, art()
    gpu.upsert_artifact(a)
    gpu.set_replica(rep(a.path, "gpu-1", verified_at=5.0))
    early = gpu.changes_since(0)
    gpu.remove_replica(a.ident, "gpu-1")
    _pull(coord, gpu)
    assert coord.replicas(a) == []
    seq = coord.seq
    assert coord.merge_peer("gpu-1", early) == 0  # would revive the replica
    assert coord.replicas(a) == [] and coord.seq == seq
    assert coord.peer_cursor("gpu-1") == gpu.seq
