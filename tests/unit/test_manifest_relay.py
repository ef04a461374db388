"""merge_peer(..., relay=True): artifact rows of other origins travel second-hand; replica and
deletion rows, and rows about the merging node itself, never do."""

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
    a.set_replica(Replica("npz", "k/g1.npz", "gpu-1", SHA_A, 10.0))
    a.record_deletion(art(), "gpu-1", ["gpu-4", "gpu-5"])
    assert relay(b, a) == 2  # the artifact and gpu-1's deletion (its removed replica: unknown)
    b.register_sync(SyncReceipt("npz", "k/g1.npz", "gpu-1", "gpu-2", SHA_A, 100, 20.0, "http"))
    b.register_sync(SyncReceipt("npz", "k/g1.npz", "gpu-2", "gpu-9", SHA_A, 100, 30.0, "http"))
    assert relay(c, b) == 2  # the artifact and gpu-2's own replica
    assert [r.node for r in c.replicas("npz", "k/g1.npz")] == ["gpu-2"]  # not gpu-9 (second-hand)
    assert c.deletions() == []


def test_rows_about_this_node_are_never_taken_from_a_relay(node) -> None:
    a, b = node("gpu-1"), node("gpu-2")
    a.upsert_artifact(art())
    relay(b, a)
    b.register_sync(SyncReceipt("npz", "k/other.npz", "gpu-7", "gpu-2", SHA_A, 100, 5.0, "http"),
                    art("k/other.npz", origin="gpu-1", sha=SHA_B, mtime=MTIME + 50))
    assert relay(a, b) == 1  # gpu-2's own replica of k/other.npz; neither artifact row
    assert a.get_artifact("npz", "k/other.npz") is None
    assert a.get_artifact("npz", "k/g1.npz") == art()


def test_a_newer_relayed_version_updates_an_older_one_never_the_reverse(node) -> None:
    b, c = node("gpu-2"), node("gpu-3")
    old, new = art(), art(sha=SHA_B, mtime=MTIME + 10, size=7)
    b.upsert_artifact(old)  # b and c learned gpu-1's rows at different times (forged here)
    c.upsert_artifact(new)
    b_only, c_only = (node("gpu-8"), node("gpu-9"))
    relay(b_only, b)   # gpu-8 knows the old version, through gpu-2
    relay(c_only, c)   # gpu-9 knows the new version, through gpu-3
    assert relay(b_only, c_only) == 1
    assert b_only.get_artifact("npz", old.path) == new  # newer mtime: taken
    assert relay(c_only, b_only) == 0  # already newest; an older one would change nothing
    assert c_only.get_artifact("npz", old.path) == new
    stale = node("gpu-10")
    relay(stale, b)  # the old version, arriving after the new one
    assert relay(c_only, stale) == 0
    assert c_only.get_artifact("npz", old.path) == new


def test_the_origins_own_row_wins_over_a_relayed_one(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    b.upsert_artifact(art(sha=SHA_B, mtime=MTIME + 99))  # a forged, newer second-hand row
    relay(c, b)
    a.upsert_artifact(art())  # the origin's real row, older mtime
    assert relay(c, a) == 1
    assert c.get_artifact("npz", "k/g1.npz") == art()


def test_a_relay_never_overwrites_another_origins_row(node) -> None:
    b, c = node("gpu-2"), node("gpu-3")
    c.upsert_artifact(art(origin="gpu-3"))  # c's own artifact under the same name
    b.upsert_artifact(art(origin="gpu-1", sha=SHA_B, mtime=MTIME + 5))
    assert relay(c, b) == 0
    d = node("gpu-4")
    d.register_sync(SyncReceipt("npz", "k/g1.npz", "gpu-5", "gpu-4", SHA_A, 100, 1.0, "http"),
                    art(origin="gpu-5"))
    before = d.get_artifact("npz", "k/g1.npz")
    relay(d, b)
    assert d.get_artifact("npz", "k/g1.npz") == before


def test_a_relayed_tombstone_removes_only_the_same_origin_and_content(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    a.upsert_artifact(art("k/g2.npz"))
    relay(b, a)
    relay(c, b)
    c_changed = node("gpu-4")
    relay(c_changed, b)
    a.remove_artifact("npz", "k/g1.npz")
    relay(b, a)
    assert b.get_artifact("npz", "k/g1.npz") is None
    assert relay(c, b) == 1
    assert c.get_artifact("npz", "k/g1.npz") is None
    # gpu-4 meanwhile knows another version of k/g1.npz: the tombstone of SHA_A is not for it
    c_changed.merge_peer("gpu-1", {"node": "gpu-1", "since": 0, "seq": 99, "artifacts": [
        {**c_changed.changes_since(0)["artifacts"][0], "sha256": SHA_B, "mtime": MTIME + 1}]})
    assert c_changed.get_artifact("npz", "k/g1.npz").sha256 == SHA_B  # type: ignore[union-attr]
    assert relay(c_changed, b) == 0
    assert c_changed.get_artifact("npz", "k/g1.npz").sha256 == SHA_B  # type: ignore[union-attr]


def test_a_removed_row_is_not_revived_second_hand(node) -> None:
    a, b, c = node("gpu-1"), node("gpu-2"), node("gpu-3")
    a.upsert_artifact(art())
    relay(b, a)
    relay(c, a)
    a.remove_artifact("npz", "k/g1.npz")
    relay(c, a)
    assert relay(c, b) == 0  # b still has the live row; c saw the origin remove it
    assert c.get_artifact("npz", "k/g1.npz") is None


def test_relay_and_first_hand_merges_keep_separate_cursors(node) -> None:
    coord, b = node("coord"), node("gpu-2")
    for i in range(3):
        b.register_sync(SyncReceipt("npz", f"k/{i}.npz", "gpu-1", "gpu-2", SHA_A, 1, 1.0, "http"),
                        art(f"k/{i}.npz"))
    coord.merge_peer("gpu-2", b.changes_since(0))  # the puller: replicas only
    assert coord.peer_cursor("gpu-2") == b.seq and coord.peer_cursor("gpu-2", relay=True) == 0
    assert coord.artifacts() == []
    assert relay(coord, b) == 3  # a gossip merge still reads gpu-2 from its own cursor
    assert coord.peer_cursor("gpu-2", relay=True) == b.seq
    assert coord.peer_manifest_id("gpu-2", relay=True) == b.manifest_id
    assert coord.peer_manifest_id("gpu-1", relay=True) is None
