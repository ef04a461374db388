"""engine.deletion_journal: a deletion interrupted at any step is finished or undone at start.

Each test stops a deletion where a crash could (the steps the Cleaner takes, done by hand)
and runs ``recover`` as a start would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import deletion_journal
from engine.deletion_journal import Intent
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.manifest.store import stat_identity
from engine.paths import DataRoot

pytestmark = pytest.mark.unit

SHA = "d" * 64
VOUCHED = ["cpu-1", "coord"]


@pytest.fixture
def data(tmp_path: Path) -> DataRoot:
    d = DataRoot(tmp_path / "root")
    d.create()
    return d


@pytest.fixture
def manifest(data: DataRoot) -> Iterator[ClusterManifest]:
    m = ClusterManifest(data.state / "manifest.db", "gpu-1")
    yield m
    m.close()


def source(data: DataRoot, manifest: ClusterManifest, rel: str = "k/a.npz",
           body: bytes = b"x" * 100) -> tuple[Path, Artifact]:
    """An own source, registered as the scanner would, with this node's replica row."""
    path = data.source_path("npz", rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    dev, ino, size, mtime_ns, ctime_ns = stat_identity(path.stat())
    art = Artifact("npz", rel, "k", size, SHA, mtime_ns / 1e9, "gpu-1", size, mtime_ns, dev, ino,
                   ctime_ns)
    manifest.upsert_artifact(art)
    manifest.set_replica(Replica("npz", rel, "gpu-1", SHA, 1.0, origin="gpu-1"))
    return path, art


def journal(data: DataRoot) -> list[str]:
    trash = data.state / "deleting"
    return sorted(p.name for p in trash.iterdir()) if trash.is_dir() else []


def quarantined(data: DataRoot) -> list[Path]:
    q = data.quarantine / "deleting"
    return sorted(q.iterdir()) if q.is_dir() else []


def test_begin_writes_a_durable_intent_naming_the_version(data: DataRoot,
                                                          manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    assert intent.source == path
    assert intent.trash.parent == intent.intent.parent == data.state / "deleting"
    assert journal(data) == [intent.intent.name]  # no temp file left beside it
    record = json.loads(intent.intent.read_text())
    assert {k: record[k] for k in ("origin", "data_type", "path", "sha256", "size", "source",
                                   "identity", "vouched_by")} == {
        "origin": "gpu-1", "data_type": "npz", "path": "k/a.npz", "sha256": SHA, "size": 100,
        "source": str(path), "identity": list(art.source_identity),
        "vouched_by": sorted(VOUCHED)}
    deletion_journal.finish(intent)
    assert journal(data) == []


def test_recover_with_nothing_to_do(data: DataRoot, manifest: ClusterManifest) -> None:
    assert deletion_journal.recover(data, manifest) == []
    (data.state / "deleting").mkdir()
    assert deletion_journal.recover(data, manifest) == []


def test_an_intent_whose_source_is_still_the_recorded_inode_is_dropped(
        data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    deletion_journal.begin(data, art, path, VOUCHED)  # crash before the rename
    seq = manifest.seq
    assert deletion_journal.recover(data, manifest) == []
    assert path.read_bytes() == b"x" * 100
    assert journal(data) == []
    assert manifest.deleted_sources("gpu-1") == set() and manifest.seq == seq
    assert [r.node for r in manifest.replicas(art)] == ["gpu-1"]


def test_a_trash_file_still_there_is_put_back(data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)  # crash after the rename: the vouches are stale now
    assert not path.exists()
    done = deletion_journal.recover(data, manifest)
    assert len(done) == 1 and done[0].startswith("put back npz/k/a.npz")
    assert path.read_bytes() == b"x" * 100
    st = path.stat()
    assert (st.st_dev, st.st_ino) == (art.source_dev, art.source_ino)  # the very same file
    assert journal(data) == [] and quarantined(data) == []
    assert manifest.deleted_sources("gpu-1") == set()


def test_a_trash_file_is_put_back_even_when_its_directory_went_away(
        data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest, "k/deep/a.npz")
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    path.parent.rmdir()
    deletion_journal.recover(data, manifest)
    assert path.read_bytes() == b"x" * 100
    assert journal(data) == []


def test_put_back_never_overwrites_a_new_file_under_the_name(
        data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    path.write_bytes(b"a new file the generator wrote meanwhile")
    done = deletion_journal.recover(data, manifest)
    assert path.read_bytes() == b"a new file the generator wrote meanwhile"
    (kept,) = quarantined(data)
    assert kept.read_bytes() == b"x" * 100 and kept.name == intent.trash.name
    assert str(kept) in done[0]
    assert journal(data) == []
    assert manifest.deleted_sources("gpu-1") == set()  # nothing was deleted


def test_put_back_directly(data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    assert deletion_journal.put_back(intent.trash, path, data) == str(path)
    assert path.exists() and not intent.trash.exists()
    os.rename(path, intent.trash)
    path.write_bytes(b"new")
    where = deletion_journal.put_back(intent.trash, path, data)
    assert where != str(path) and Path(where).read_bytes() == b"x" * 100
    assert path.read_bytes() == b"new" and not intent.trash.exists()


def test_trash_and_source_gone_records_the_deletion(data: DataRoot,
                                                    manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    os.unlink(intent.trash)  # crash after the unlink, before the manifest had it
    assert manifest.deleted_sources("gpu-1") == set()
    done = deletion_journal.recover(data, manifest)
    assert done == ["recorded the deletion of npz/k/a.npz"]
    assert manifest.deleted_sources("gpu-1") == {art.ident}
    (row,) = manifest.deletions()
    assert (row["sha256"], row["size"], row["vouched_by"]) == (SHA, 100, sorted(VOUCHED))
    assert manifest.replicas(art) == []  # its own copy is gone
    assert journal(data) == []
    seq = manifest.seq
    assert deletion_journal.recover(data, manifest) == []  # nothing left to do
    assert manifest.seq == seq


def test_a_deletion_already_recorded_is_recorded_once(data: DataRoot,
                                                      manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    os.unlink(intent.trash)
    manifest.record_deletion(art, VOUCHED)  # crash after the manifest had it, intent not gone
    seq, rows = manifest.seq, manifest.deletions()
    done = deletion_journal.recover(data, manifest)
    assert done == ["recorded the deletion of npz/k/a.npz"]
    assert manifest.seq == seq and manifest.deletions() == rows  # not recorded a second time
    assert journal(data) == []


def test_source_gone_and_another_inode_under_the_name_records_the_deletion(
        data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    keep = data.root / "keep"  # hold the old inode so the new file cannot reuse its number
    os.link(intent.trash, keep)
    os.unlink(intent.trash)
    path.write_bytes(b"new")
    assert path.stat().st_ino != art.source_ino
    deletion_journal.recover(data, manifest)
    assert manifest.deleted_sources("gpu-1") == {art.ident}
    assert path.read_bytes() == b"new"  # the new file is left alone
    assert journal(data) == []


def test_a_new_file_that_reuses_the_inode_number_is_not_the_recorded_source(
        data: DataRoot, manifest: ClusterManifest) -> None:
    path, art = source(data, manifest)
    intent = deletion_journal.begin(data, art, path, VOUCHED)
    os.rename(path, intent.trash)
    os.unlink(intent.trash)  # crash after the unlink; then the generator writes the name again
    path.write_bytes(b"a new file with other bytes")
    # ext4 usually hands the freed inode number straight to the next new file; make that
    # certain here, so the test does not depend on the allocator
    record = json.loads(intent.intent.read_text())
    record["ino"] = path.stat().st_ino
    intent.intent.write_text(json.dumps(record))
    deletion_journal.recover(data, manifest)
    assert manifest.deleted_sources("gpu-1") == {art.ident}


def test_strays_go_to_the_quarantine_and_temp_files_go(data: DataRoot,
                                                       manifest: ClusterManifest) -> None:
    trash = data.state / "deleting"
    trash.mkdir()
    (trash / "orphan.trash").write_bytes(b"bytes without an intent")
    (trash / ".half.tmp").write_bytes(b"{")  # an intent that was never renamed into place
    done = deletion_journal.recover(data, manifest)
    kept = data.quarantine / "deleting" / "orphan.trash"
    assert done == [f"moved stray orphan.trash to the quarantine as {kept}"]
    assert [p.name for p in quarantined(data)] == ["orphan.trash"]
    assert journal(data) == []


def test_an_unreadable_intent_is_left_for_an_operator(data: DataRoot,
                                                      manifest: ClusterManifest) -> None:
    trash = data.state / "deleting"
    trash.mkdir()
    (trash / "bad.json").write_text("{not json")
    assert deletion_journal.recover(data, manifest) == []
    assert journal(data) == ["bad.json"]
    assert manifest.deleted_sources("gpu-1") == set()


def test_several_intents_are_each_resolved(data: DataRoot, manifest: ClusterManifest) -> None:
    kept, a = source(data, manifest, "k/kept.npz")
    back, b = source(data, manifest, "k/back.npz")
    gone, c = source(data, manifest, "k/gone.npz")
    deletion_journal.begin(data, a, kept, VOUCHED)
    ib: Intent = deletion_journal.begin(data, b, back, VOUCHED)
    os.rename(back, ib.trash)
    ic = deletion_journal.begin(data, c, gone, VOUCHED)
    os.rename(gone, ic.trash)
    os.unlink(ic.trash)
    assert len(deletion_journal.recover(data, manifest)) == 2
    assert kept.exists() and back.exists() and not gone.exists()
    assert manifest.deleted_sources("gpu-1") == {c.ident}
    assert journal(data) == []
