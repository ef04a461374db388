"""Artifact identity (origin, data_type, path, sha256): the pure logic around it.

* ``engine.vouches.counting``: which live vouches count as distinct copies;
* ``DataRoot.copy_path`` and ``engine.copies._unversioned``: where a received copy of one
  version lives, and back;
* ``ClusterManifest.upsert_artifact``: a new version supersedes the origin's older ones;
* ``merge_peer``: a peer's new incarnation (manifest id changed, or its manifest went
  backwards under the same id) drops its replica rows and is re-read from 0;
* ``Scanner``: received copies (``@<origin>/``) are never own sources, and a database some
  process holds open is not finished however idle it is.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.copies import _unversioned
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.paths import COPY_PREFIX, VERSION_DIGITS, DataRoot, UnsafePath, copy_origin
from engine.scanner import Scanner
from engine.vouches import Vouch, counting

pytestmark = pytest.mark.unit

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "0123456789abcdef" + "c" * 48
LATER = time.time() + 3600


# -- counting ---------------------------------------------------------------------------------

def v(node: str, root: str | None = None, provider: str = "p", ephemeral: bool = False) -> Vouch:
    return Vouch(node, root or f"root-{node}", provider, ephemeral)


def nodes(vouches: list[Vouch]) -> list[str]:
    return [x.node for x in vouches]


def test_counting_takes_one_vouch_per_distinct_root_sorted_by_node() -> None:
    got = counting([v("gpu-2"), v("cpu-1"), v("coord")], "root-me")
    assert nodes(got) == ["coord", "cpu-1", "gpu-2"]
    # two hosts on one data root (an NFS export mounted twice, a config typo) count once
    shared = counting([v("gpu-2", "nfs"), v("cpu-1", "nfs"), v("coord")], "root-me")
    assert nodes(shared) == ["coord", "cpu-1"]
    assert counting([], "root-me") == []


def test_counting_never_counts_this_nodes_own_root() -> None:
    # a host whose data root is this node's (the same disk under another name) is no copy
    got = counting([v("gpu-2", "root-me"), v("cpu-1")], "root-me")
    assert nodes(got) == ["cpu-1"]
    assert counting([v("gpu-2", "root-me")], "root-me") == []


def test_counting_leaves_out_ephemeral_hosts_unless_the_policy_counts_them() -> None:
    vouches = [v("gpu-3", ephemeral=True), v("cpu-1")]
    assert nodes(counting(vouches, "root-me")) == ["cpu-1"]
    assert nodes(counting(vouches, "root-me", ephemeral_count=True)) == ["cpu-1", "gpu-3"]
    # an ephemeral host left out does not use up its root: a durable one on it still counts
    same_root = [v("a-eph", "shared", ephemeral=True), v("b-durable", "shared")]
    assert nodes(counting(same_root, "root-me")) == ["b-durable"]


def test_counting_with_distinct_providers_takes_one_per_provider() -> None:
    vouches = [v("a", provider="aws"), v("b", provider="aws"), v("c", provider="gcp"),
               v("d", provider="gcp"), v("e", provider="hetzner")]
    assert nodes(counting(vouches, "root-me")) == ["a", "b", "c", "d", "e"]
    assert nodes(counting(vouches, "root-me", distinct_providers=True)) == ["a", "c", "e"]
    # a vouch left out for its root does not use up its provider
    dup = [v("a", "root-me", provider="aws"), v("b", provider="aws")]
    assert nodes(counting(dup, "root-me", distinct_providers=True)) == ["b"]
    eph = [v("a", provider="aws", ephemeral=True), v("b", provider="aws")]
    assert nodes(counting(eph, "root-me", distinct_providers=True)) == ["b"]


def test_counting_is_pure_and_independent_of_the_order_of_answers() -> None:
    vouches = [v("c", "r1"), v("a", "r1"), v("b", "r2", ephemeral=True), v("d", "r3")]
    before = list(vouches)
    first = counting(vouches, "me", ephemeral_count=True)
    assert vouches == before
    assert counting(list(reversed(vouches)), "me", ephemeral_count=True) == first
    assert nodes(first) == ["a", "b", "d"]


# -- copy_path and _unversioned ---------------------------------------------------------------

@pytest.fixture
def data(tmp_path: Path) -> DataRoot:
    d = DataRoot(tmp_path / "root")
    d.create()
    return d


def stored_rel(data: DataRoot, origin: str, data_type: str, rel: str, sha: str) -> str:
    """The copy's path below ``<data_type>/@<origin>/``."""
    path = data.copy_path(origin, data_type, rel, sha)
    return path.relative_to(data.root / data_type / f"{COPY_PREFIX}{origin}").as_posix()


def test_copy_path_layout(data: DataRoot) -> None:
    path = data.copy_path("gpu-1", "npz", "hex8_2p/batch_1.npz", SHA_C)
    assert path == data.root / "npz" / "@gpu-1" / "hex8_2p" / "batch_1.v0123456789abcdef.npz"
    assert len("0123456789abcdef") == VERSION_DIGITS
    assert copy_origin("@gpu-1/hex8_2p/batch_1.v0123456789abcdef.npz") == "gpu-1"
    assert copy_origin("hex8_2p/batch_1.npz") is None
    assert copy_origin("@gpu-1") is None  # a file named like that is no tree of copies


def test_two_origins_and_two_versions_never_share_a_name(data: DataRoot) -> None:
    paths = {data.copy_path(o, "games", "k/g.db", s)
             for o in ("gpu-1", "gpu-2") for s in (SHA_A, SHA_B)}
    assert len(paths) == 4
    assert data.source_path("games", "k/g.db") not in paths


@pytest.mark.parametrize("rel", [
    "k/a.npz",
    "README",                                 # no suffix
    "k/deep/er/model",                        # no suffix, nested
    "k/a.tar.gz",                             # several dots
    "k/a..b",                                 # an empty part between dots
    "k/a.",                                   # a trailing dot
    "k/v0123456789abcdef",                    # a whole name that looks like a version
    "k/x.v0123456789abcdef.npz",              # a stem that looks like a version
    "k/x.vffffffffffffffff.vffffffffffffffff.db",  # and twice, even the copy's own version
    "k/x.V0123456789ABCDEF",                  # upper case is no version
    "k/x.v0123456789abcde",                   # 15 hex digits is no version
    "k/ünï cödé.npz",                         # non-ASCII, a space
])
@pytest.mark.parametrize("sha", [SHA_C, "f" * 64])
def test_copy_path_and_unversioned_round_trip(data: DataRoot, rel: str, sha: str) -> None:
    stored = stored_rel(data, "gpu-1", "npz", rel, sha)
    assert stored != rel
    assert _unversioned(stored) == (rel, sha[:VERSION_DIGITS])


@pytest.mark.parametrize("rel", ["k/x.v0123456789abcdef", "k/x.tar.vaaaaaaaaaaaaaaaa"])
def test_a_suffix_that_looks_like_a_version_round_trips(data: DataRoot, rel: str) -> None:
    stored = stored_rel(data, "gpu-1", "npz", rel, "f" * 64)
    assert _unversioned(stored) == (rel, "f" * VERSION_DIGITS)


def test_unversioned_of_a_name_without_a_version(data: DataRoot) -> None:
    assert _unversioned("k/a.npz") == ("k/a.npz", None)
    assert _unversioned("README") == ("README", None)
    assert _unversioned("k/a.v0123.npz") == ("k/a.v0123.npz", None)


@pytest.mark.parametrize("origin, rel, sha", [
    ("gpu/1", "k/a.npz", SHA_A),        # an origin is one segment
    (".gpu-1", "k/a.npz", SHA_A),       # never hidden
    ("..", "k/a.npz", SHA_A),
    ("", "k/a.npz", SHA_A),
    ("gpu-1", "@gpu-2/k/a.npz", SHA_A),  # a path may not start in a tree of copies
    ("gpu-1", "../k/a.npz", SHA_A),
    ("gpu-1", "k/.a.npz", SHA_A),
    ("gpu-1", "k/a.npz", SHA_A.upper()),  # a sha256 is 64 lower-case hex digits
    ("gpu-1", "k/a.npz", SHA_A[:63]),
    ("gpu-1", "k/a.npz", "g" * 64),
])
def test_copy_path_refuses_what_is_not_plain(data: DataRoot, origin: str, rel: str,
                                             sha: str) -> None:
    with pytest.raises(UnsafePath):
        data.copy_path(origin, "npz", rel, sha)


def test_an_own_source_may_not_start_in_a_tree_of_copies(data: DataRoot) -> None:
    with pytest.raises(UnsafePath):
        data.source_path("npz", "@gpu-2/k/a.npz")
    assert data.source_path("npz", "k/@a.npz") == data.root / "npz" / "k" / "@a.npz"


# -- upsert_artifact superseding --------------------------------------------------------------

def art(path: str = "k/g.db", sha: str = SHA_A, origin: str = "gpu-1", mtime: float = 1.0,
        size: int = 10) -> Artifact:
    return Artifact("games", path, "k", size, sha, mtime, origin, size, int(mtime * 1e9))


@pytest.fixture
def gpu(open_manifest: Callable[[str], ClusterManifest]) -> ClusterManifest:
    return open_manifest("gpu-1")


@pytest.fixture
def coord(open_manifest: Callable[[str], ClusterManifest]) -> ClusterManifest:
    return open_manifest("coord")


def versions(m: ClusterManifest, path: str = "k/g.db", origin: str = "gpu-1") -> dict[str, bool]:
    """sha256 -> superseded of every live version of ``origin``'s ``path``."""
    return {a.sha256: a.superseded for a in m.artifacts(versions=True, origin=origin)
            if a.path == path}


def test_a_new_version_supersedes_the_older_ones_of_the_same_file(gpu: ClusterManifest) -> None:
    assert gpu.upsert_artifact(art(sha=SHA_A))
    assert gpu.upsert_artifact(art(sha=SHA_B, mtime=2.0))
    assert versions(gpu) == {SHA_A: True, SHA_B: False}
    assert gpu.seq == 2  # the new row and the superseded mark are one change
    assert {(r["sha256"], r["superseded"], r["seq"]) for r in gpu.changes_since(1)["artifacts"]} \
        == {(SHA_A, 1, 2), (SHA_B, 0, 2)}
    assert gpu.upsert_artifact(art(sha=SHA_C, mtime=3.0))
    assert versions(gpu) == {SHA_A: True, SHA_B: True, SHA_C: False}
    assert [a.sha256 for a in gpu.artifacts()] == [SHA_C]  # current versions only
    assert gpu.counts_by_type() == {"games": 1}
    assert gpu.get_artifact("games", "k/g.db").sha256 == SHA_C  # type: ignore[union-attr]
    old = gpu.get_artifact("games", "k/g.db", "gpu-1", SHA_A)
    assert old is not None and old.superseded


def test_the_bytes_coming_back_make_the_old_version_current_again(gpu: ClusterManifest) -> None:
    gpu.upsert_artifact(art(sha=SHA_A))
    gpu.upsert_artifact(art(sha=SHA_B, mtime=2.0))
    assert gpu.upsert_artifact(art(sha=SHA_A, mtime=3.0))  # the file was restored
    assert versions(gpu) == {SHA_A: False, SHA_B: True}
    assert gpu.upsert_artifact(art(sha=SHA_A, mtime=3.0)) is False  # nothing changed


def test_superseding_stays_within_one_origins_file(gpu: ClusterManifest) -> None:
    gpu.upsert_artifact(art(sha=SHA_A))
    gpu.upsert_artifact(art("k/other.db", sha=SHA_A))
    gpu.upsert_artifact(art(sha=SHA_A, origin="gpu-2"))  # another node's file of that name
    gpu.upsert_artifact(art(sha=SHA_B, mtime=2.0))
    assert versions(gpu) == {SHA_A: True, SHA_B: False}  # only gpu-1's k/g.db moved on
    other, theirs = (gpu.get_artifact("games", "k/other.db", "gpu-1"),
                     gpu.get_artifact("games", "k/g.db", "gpu-2"))
    assert other is not None and not other.superseded
    assert theirs is not None and not theirs.superseded


def test_a_superseded_version_keeps_its_copies_and_its_deletion_is_its_own(
        gpu: ClusterManifest) -> None:
    gpu.upsert_artifact(art(sha=SHA_A))
    gpu.set_replica(Replica("games", "k/g.db", "coord", SHA_A, 5.0, origin="gpu-1"))
    gpu.upsert_artifact(art(sha=SHA_B, mtime=2.0))
    old = gpu.get_artifact("games", "k/g.db", "gpu-1", SHA_A)
    assert old is not None
    assert gpu.verified_holders(old) == {"coord"}
    assert gpu.verified_holders_by_artifact("gpu-1") == {}
    assert gpu.verified_holders_by_artifact("gpu-1", versions=True) == {old.ident: {"coord"}}
    gpu.record_deletion(old, ["coord"])
    assert gpu.deleted_sources("gpu-1") == {old.ident}
    assert versions(gpu) == {SHA_A: True, SHA_B: False}


# -- merge_peer: a peer's incarnation ---------------------------------------------------------

def own(m: ClusterManifest, path: str, sha: str = SHA_A) -> Artifact:
    a = art(path, sha=sha, origin=m.node)
    m.upsert_artifact(a)
    m.set_replica(Replica("games", path, m.node, sha, 1.0, origin=m.node))
    return a


def pull(into: ClusterManifest, peer: ClusterManifest, limit: int = 5000) -> int:
    """Page through ``peer``'s deltas as ``ManifestPuller.pull`` does (it goes on after a
    merge that moved the cursor back to 0)."""
    changed = 0
    for _ in range(50):
        since = into.peer_cursor(peer.node)
        answer = peer.changes_since(since, limit)
        changed += into.merge_peer(peer.node, answer)
        cursor = into.peer_cursor(peer.node)
        if cursor == since or (answer["complete"] and cursor == answer["seq"]):
            return changed
    raise AssertionError("the pull does not converge")


def holders(m: ClusterManifest, node: str) -> set[str]:
    """Paths of the live replica rows ``m`` has of ``node`` (known artifacts or not)."""
    rows = m._db.execute("SELECT path FROM replicas WHERE node=? AND removed=0", (node,))
    return {r["path"] for r in rows}


def test_a_changed_manifest_id_drops_the_peers_replica_rows_and_rereads_it(
        coord: ClusterManifest, gpu: ClusterManifest) -> None:
    for i in range(3):
        own(gpu, f"k/{i}.db")
    pull(coord, gpu)
    # rows about gpu-1's copies coord learned otherwise (its own push's receipt) go too
    coord.set_replica(Replica("games", "k/c.db", "gpu-1", SHA_A, 9.0, origin="coord"))
    assert holders(coord, "gpu-1") == {"k/0.db", "k/1.db", "k/2.db", "k/c.db"}
    cursor = coord.peer_cursor("gpu-1")
    gpu.remove_replica(art("k/2.db").ident, "gpu-1")  # lost while its state went away...
    old_id = gpu.manifest_id
    assert gpu.new_incarnation() != old_id  # ...and it restarted: a new incarnation
    answer = gpu.changes_since(cursor)  # asked from the old cursor
    before = coord.seq
    assert coord.merge_peer("gpu-1", answer) == 4  # the four rows forgotten
    assert holders(coord, "gpu-1") == set()  # nothing it said before is believed
    assert coord.peer_cursor("gpu-1") == 0
    assert coord.peer_manifest_id("gpu-1") == gpu.manifest_id
    assert coord.seq == before + 1  # one change
    assert {a.path for a in coord.artifacts(origin="gpu-1")} == {"k/0.db", "k/1.db", "k/2.db"}
    pull(coord, gpu)  # the rows it still has come back with the re-read
    assert holders(coord, "gpu-1") == {"k/0.db", "k/1.db"}
    assert coord.peer_cursor("gpu-1") == gpu.seq
    assert pull(coord, gpu) == 0


def test_the_same_id_answer_asked_from_the_cursor_that_ends_before_it_is_a_rollback(
        tmp_path: Path, coord: ClusterManifest) -> None:
    path = tmp_path / "gpu-1.db"
    gpu = ClusterManifest(path, "gpu-1")
    own(gpu, "k/early.db")
    backup = sqlite3.connect(tmp_path / "backup.db")
    gpu._db.backup(backup)  # a backup taken here, restored later
    backup.close()
    own(gpu, "k/late1.db")
    own(gpu, "k/late2.db")
    pull(coord, gpu)
    cursor = coord.peer_cursor("gpu-1")
    assert cursor == gpu.seq == 6
    assert holders(coord, "gpu-1") == {"k/early.db", "k/late1.db", "k/late2.db"}
    gpu.close()
    restored = ClusterManifest(tmp_path / "backup.db", "gpu-1")
    try:
        assert restored.manifest_id == coord.peer_manifest_id("gpu-1")  # the same id
        answer = restored.changes_since(cursor)  # asked from the cursor: ends before it
        assert (answer["since"], answer["seq"]) == (cursor, 2)
        assert coord.merge_peer("gpu-1", answer) == 3  # its three replica rows dropped
        assert holders(coord, "gpu-1") == set()
        assert coord.peer_cursor("gpu-1") == 0
        pull(coord, restored)
        # what the restored manifest has comes back; the copies it lost are not counted
        assert holders(coord, "gpu-1") == {"k/early.db"}
        assert coord.peer_cursor("gpu-1") == restored.seq == 2
    finally:
        restored.close()


def test_a_stale_answer_to_an_old_request_is_ignored_not_taken_for_a_rollback(
        coord: ClusterManifest, gpu: ClusterManifest) -> None:
    own(gpu, "k/a.db")
    stale = gpu.changes_since(0)  # an answer asked from 0, delayed
    own(gpu, "k/b.db")
    gpu.remove_replica(art("k/a.db").ident, "gpu-1")
    pull(coord, gpu)
    state, seq, cursor = holders(coord, "gpu-1"), coord.seq, coord.peer_cursor("gpu-1")
    assert state == {"k/b.db"} and cursor == gpu.seq
    assert stale["since"] < cursor and stale["seq"] < cursor
    assert coord.merge_peer("gpu-1", stale) == 0
    assert holders(coord, "gpu-1") == {"k/b.db"}  # nothing dropped, nothing revived
    assert (coord.seq, coord.peer_cursor("gpu-1")) == (seq, cursor)


def test_an_answer_of_an_unchanged_peer_from_the_cursor_is_no_rollback(
        coord: ClusterManifest, gpu: ClusterManifest) -> None:
    own(gpu, "k/a.db")
    pull(coord, gpu)
    cursor = coord.peer_cursor("gpu-1")
    assert coord.merge_peer("gpu-1", gpu.changes_since(cursor)) == 0  # seq == cursor
    assert holders(coord, "gpu-1") == {"k/a.db"} and coord.peer_cursor("gpu-1") == cursor


# -- scanner: copies and open databases -------------------------------------------------------

def names(cands: list[Any]) -> set[str]:
    return {f"{c.data_type}/{c.path}" for c in cands}


def test_received_copies_are_never_own_sources(data: DataRoot) -> None:
    copy = data.copy_path("gpu-2", "npz", "k/a.npz", SHA_A)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"theirs")
    own_file = data.source_path("npz", "k/a.npz")
    own_file.parent.mkdir(parents=True)
    own_file.write_bytes(b"mine")
    nested = data.root / "npz" / "k" / "@not-top" / "b.npz"  # only the top level is reserved
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"mine too")
    s = Scanner(data, "gpu-1", [], 0.0)
    assert names(s.candidates({}, now=LATER)) == {"npz/k/a.npz", "npz/k/@not-top/b.npz"}


def make_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE games (id INTEGER PRIMARY KEY, moves TEXT)")
        with conn:
            conn.executemany("INSERT INTO games (moves) VALUES (?)", [("e2e4",)] * 20)
    finally:
        conn.close()


def test_a_database_held_open_idle_in_rollback_journal_mode_is_not_finished(
        data: DataRoot) -> None:
    db = data.source_path("games", "k/live.db")
    make_db(db)
    writer = sqlite3.connect(db)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        with writer:
            writer.execute("INSERT INTO games (moves) VALUES ('d2d4')")
        assert writer.execute("SELECT COUNT(*) FROM games").fetchone()[0] == 21
        # idle: no transaction, no sidecar of any kind, old enough
        assert not writer.in_transaction
        assert sorted(p.name for p in db.parent.iterdir()) == ["live.db"]
        assert Scanner(data, "gpu-1", [], 0.0).candidates({}, now=LATER) == []
    finally:
        writer.close()
    assert names(Scanner(data, "gpu-1", [], 0.0).candidates({}, now=LATER)) == {"games/k/live.db"}


def test_a_database_another_process_holds_open_is_not_finished(data: DataRoot) -> None:
    db = data.source_path("games", "k/other.sqlite")
    make_db(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            conn = sqlite3.connect({str(db)!r})
            conn.execute("SELECT COUNT(*) FROM games").fetchone()
            print("open", flush=True)
            sys.stdin.read()
            conn.close()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert sorted(p.name for p in db.parent.iterdir()) == ["other.sqlite"]
        assert Scanner(data, "gpu-1", [], 0.0).candidates({}, now=LATER) == []
    finally:
        holder.communicate("", timeout=10)
    assert holder.returncode == 0
    assert names(Scanner(data, "gpu-1", [], 0.0).candidates({}, now=LATER)) == {
        "games/k/other.sqlite"}


def test_an_open_file_that_is_no_database_is_finished_by_age(data: DataRoot) -> None:
    f = data.source_path("npz", "k/a.npz")
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    with open(f, "rb"):  # a reader: npz files are not checked for openers by the scanner
        assert names(Scanner(data, "gpu-1", [], 0.0).candidates({}, now=LATER)) == {"npz/k/a.npz"}
