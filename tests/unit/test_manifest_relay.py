"""merge_peer(..., relay=True): artifact rows of other origins travel second-hand; replica and
deletion rows, and rows about the merging node itself, never do.

An artifact is a version (origin, data_type, path, sha256): a relayed row fills in a version
that is unknown here, carries the superseded mark, and a relayed tombstone removes exactly
that one version; rows of another origin with the same path are other artifacts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.manifest import Artifact, ClusterManifest, Replica, SyncReceipt

pytestmark = pytest.mark.unit

SHA_A = "a" * 64
SHA_B = "b" * 64
MTIME = 1_700_000_000.25


def art(path: str = "k/g1.npz", origin: str = "gpu-1", sha: str = SHA_A,
        mtime: float = MTIME, size: int = 100) -> Artifact:
    return Artifact("npz", path, "k", size, sha, mtime, origin, size, int(mtime * 1e9))


@pytest.fixture
def node(open_manifest: Callable[[str], ClusterManifest]) -> Callable[[str], ClusterManifest]:
    """``node(name)``: a fresh manifest of ``name`` (the shared ``open_manifest``)."""
    return open_manifest


def receipt(path: str, source: str, target: str, sha: str = SHA_A, verified_at: float = 1.0,
            origin: str = "gpu-1", size: int = 100) -> SyncReceipt:
    return SyncReceipt("npz", path, source, target, sha, size, verified_at, "http", origin=origin)


def relay(into: ClusterManifest, peer: ClusterManifest) -> int:
    """Everything ``peer`` has after ``into``'s relay cursor, merged with relay."""
    return into.merge_peer(peer.node, peer.changes_since(into.peer_cursor(peer.node, relay=True)),
                           relay=True)


def test_an_artifact_crosses_two_hops_and_keeps_its_origin(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    assert relay(b, a) == 1  # first-hand
    assert relay(c, b) == 1  # second-hand: gpu-2 relays gpu-1's row
    assert c.get_artifact("npz", "k/g1.npz") == art()
    assert [r["seq"] for r in c.changes_since(0)["artifacts"]] == [c.seq]  # c relays it too
    assert relay(c, b) == 0 and relay(b, a) == 0  # idempotent


def test_without_relay_only_first_hand_rows_are_taken(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    relay(b, a)
    assert c.merge_peer("gpu-2", b.changes_since(0)) == 0
    assert c.get_artifact("npz", "k/g1.npz") is None


def test_replica_and_deletion_rows_stay_first_hand(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    a.set_replica(Replica("npz", "k/g1.npz", "gpu-1", SHA_A, 10.0, origin="gpu-1"))
    a.record_deletion(art(), ["gpu-4", "gpu-5"])
    assert relay(b, a) == 2  # the artifact and gpu-1's deletion (its removed replica: unknown)
    b.register_sync(receipt("k/g1.npz", "gpu-1", "gpu-2", verified_at=20.0))
    b.register_sync(receipt("k/g1.npz", "gpu-2", "gpu-9", verified_at=30.0))
    assert relay(c, b) == 2  # the artifact and gpu-2's own replica
    assert [r.node for r in c.replicas(art())] == ["gpu-2"]  # not gpu-9 (second-hand)
    assert c.deletions() == []


def test_rows_about_this_node_are_never_taken_from_a_relay(node) -> None:
    a, b = node("gpu-1"), node("gpu-2")
    a.upsert_artifact(art())
    relay(b, a)
    b.register_sync(receipt("k/other.npz", "gpu-7", "gpu-2", sha=SHA_B, verified_at=5.0),
                    art("k/other.npz", origin="gpu-1", sha=SHA_B, mtime=MTIME + 50))
    assert relay(a, b) == 1  # gpu-2's own replica of k/other.npz; neither artifact row
    assert a.get_artifact("npz", "k/other.npz") is None
    assert a.get_artifact("npz", "k/g1.npz") == art()


def test_a_new_version_travels_beside_the_old_one_and_supersedes_it_never_the_reverse(
        node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    old, new = art(), art(sha=SHA_B, mtime=MTIME + 10, size=7)
    a.upsert_artifact(old)
    relay(b, a)            # gpu-2 knows the old version, current
    stale = node("gpu-10")
    relay(stale, a)        # so does gpu-10
    a.upsert_artifact(new)  # the origin's file got new bytes: a new version
    relay(c, a)            # gpu-3 knows both, the old one superseded
    assert c.get_artifact("npz", old.path, "gpu-1", SHA_A).superseded  # type: ignore[union-attr]
    assert relay(b, c) == 2  # second-hand: the new version, and the old one's superseded mark
    assert b.get_artifact("npz", old.path, "gpu-1") == new
    assert b.get_artifact("npz", old.path, "gpu-1", SHA_A) == \
        Artifact(**{**old.__dict__, "superseded": True})
    assert [x.sha256 for x in b.artifacts(versions=True)] == [SHA_A, SHA_B]
    # a relayed row that still calls the old version current never un-supersedes it
    assert relay(c, stale) == 0
    assert c.get_artifact("npz", old.path, "gpu-1", SHA_A).superseded  # type: ignore[union-attr]
    assert c.get_artifact("npz", old.path, "gpu-1") == new


def test_the_origins_own_row_wins_over_a_relayed_one(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    forged = art(mtime=MTIME + 99, size=7)  # the same version, described wrongly second-hand
    b.upsert_artifact(forged)
    relay(c, b)
    assert c.get_artifact("npz", "k/g1.npz", "gpu-1") == forged  # unknown here: filled in
    a.upsert_artifact(art())  # the origin's real row
    assert relay(c, a) == 1
    assert c.get_artifact("npz", "k/g1.npz", "gpu-1") == art()
    again = node("gpu-4")
    again.upsert_artifact(forged)
    assert relay(c, again) == 0  # a relayed row never overwrites a known version
    assert c.get_artifact("npz", "k/g1.npz", "gpu-1") == art()


def test_another_origins_file_with_the_same_path_is_another_artifact(node) -> None:
    b, c = node("gpu-2"), node("gpu-3")
    own = art(origin="gpu-3")
    c.upsert_artifact(own)  # c's own artifact under the same name
    theirs = art(origin="gpu-1", sha=SHA_B, mtime=MTIME + 5)
    b.upsert_artifact(theirs)
    assert relay(c, b) == 1  # gpu-1's file arrives beside c's own; neither replaces the other
    assert c.get_artifact("npz", "k/g1.npz") == own  # this node's own first
    assert c.get_artifact("npz", "k/g1.npz", "gpu-3") == own
    assert c.get_artifact("npz", "k/g1.npz", "gpu-1") == theirs
    d = node("gpu-4")
    d.register_sync(receipt("k/g1.npz", "gpu-5", "gpu-4", origin="gpu-5"), art(origin="gpu-5"))
    before = d.get_artifact("npz", "k/g1.npz", "gpu-5")
    assert relay(d, b) == 1
    assert d.get_artifact("npz", "k/g1.npz", "gpu-5") == before
    assert d.get_artifact("npz", "k/g1.npz", "gpu-1") == theirs
    assert d.verified_holders(before) == {"gpu-4"}  # type: ignore[arg-type]
    assert d.verified_holders(theirs) == set()


def test_a_relayed_tombstone_removes_exactly_one_version(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    a.upsert_artifact(art("k/g2.npz"))
    relay(b, a)
    relay(c, b)
    c_changed = node("gpu-4")
    relay(c_changed, b)
    a.remove_artifact(art())
    relay(b, a)
    assert b.get_artifact("npz", "k/g1.npz") is None
    assert relay(c, b) == 1
    assert c.get_artifact("npz", "k/g1.npz") is None
    assert c.get_artifact("npz", "k/g2.npz") == art("k/g2.npz")
    # gpu-4 meanwhile knows another version of k/g1.npz too: the tombstone of SHA_A is not
    # for it
    c_changed.merge_peer("gpu-1", {"node": "gpu-1", "since": 0, "seq": 99, "artifacts": [
        {**c_changed.changes_since(0)["artifacts"][0], "sha256": SHA_B, "mtime": MTIME + 1}]})
    assert {x.sha256 for x in c_changed.artifacts()
            if x.path == "k/g1.npz"} == {SHA_A, SHA_B}
    assert relay(c_changed, b) == 1  # removes SHA_A only
    assert [x.sha256 for x in c_changed.artifacts() if x.path == "k/g1.npz"] == [SHA_B]
    assert c_changed.get_artifact("npz", "k/g1.npz", "gpu-1", SHA_A) is None
    # a tombstone of another origin's version of the same path removes nothing of gpu-1's
    other = node("gpu-5")
    other.upsert_artifact(art(origin="gpu-5", sha=SHA_B))
    other.remove_artifact(art(origin="gpu-5", sha=SHA_B))
    assert relay(c_changed, other) == 0
    assert c_changed.get_artifact("npz", "k/g1.npz", "gpu-1", SHA_B) is not None


def test_a_removed_row_is_not_revived_second_hand(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    relay(b, a)
    relay(c, a)
    a.remove_artifact(art())
    relay(c, a)
    assert relay(c, b) == 0  # b still has the live row; c saw the origin remove it
    assert c.get_artifact("npz", "k/g1.npz") is None


def test_relay_and_first_hand_merges_keep_separate_cursors(node) -> None:
    coord, b = node("coord"), node("gpu-2")
    for i in range(3):
        b.register_sync(receipt(f"k/{i}.npz", "gpu-1", "gpu-2", size=1), art(f"k/{i}.npz"))
    coord.merge_peer("gpu-2", b.changes_since(0))  # the puller: replicas only
    assert coord.peer_cursor("gpu-2") == b.seq and coord.peer_cursor("gpu-2", relay=True) == 0
    assert coord.artifacts() == []
    assert relay(coord, b) == 3  # a gossip merge still reads gpu-2 from its own cursor
    assert coord.peer_cursor("gpu-2", relay=True) == b.seq
    assert coord.peer_manifest_id("gpu-2", relay=True) == b.manifest_id
    assert coord.peer_manifest_id("gpu-1", relay=True) is None
