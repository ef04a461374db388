"""Verified receive (invariant 1) and resume (invariant 5), through the real HTTP API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.objects import put, put_and_hang_up, raw_request, sha

pytestmark = pytest.mark.cluster


def visible_files(root: Path) -> list[Path]:
    """Everything in the visible tree (not engine state)."""
    return [p for p in root.rglob("*") if p.is_file() and ".ringsync" not in p.parts]


@pytest.fixture
def one(make_cluster) -> Cluster:
    """The coordinator receives; gpu-1 and gpu-2 exist so they can be uploads' origins (they
    push nothing)."""
    return make_cluster(gpus=2)


def copy_of(cluster: Cluster, rel: str, body: bytes, origin: str = "gpu-1") -> Path:
    """Where the coordinator stores ``origin``'s version ``body`` of ``rel``."""
    data_type, _, path = rel.partition("/")
    head, _, name = path.rpartition("/")
    stem, _, suffix = name.rpartition(".")
    base = cluster.data_root("coord") / data_type / f"@{origin}"
    return (base / head if head else base) / f"{stem}.v{sha(body)[:16]}.{suffix}"


def test_verified_upload_appears_with_receipt_and_event(one: Cluster) -> None:
    body = os.urandom(300_000)
    resp = put(one, "coord", "npz", "hex8_2p/a.npz", body, source="gpu-9")
    assert resp.status == 201, resp.body
    answer = resp.json()
    assert answer["sha256"] == sha(body) and answer["size"] == len(body)
    assert answer["origin"] == "gpu-1"
    assert answer["root_id"] == one.status("coord")["root_id"]
    final = copy_of(one, "npz/hex8_2p/a.npz", body)
    assert final.read_bytes() == body
    assert one.stored("coord", "gpu-1", "npz/hex8_2p/a.npz") == final
    assert not (one.data_root("coord") / "npz" / "hex8_2p" / "a.npz").exists()
    manifest = one.get_json("coord", "/v1/manifest?since=0")
    assert [(r["source_node"], r["origin"]) for r in manifest["receipts"]] == [("gpu-9", "gpu-1")]
    assert [(r["node"], r["sha256"], r["origin"], r["root_id"]) for r in manifest["replicas"]] \
        == [("coord", sha(body), "gpu-1", answer["root_id"])]
    assert [a["origin"] for a in manifest["artifacts"]] == ["gpu-1"]
    completed = one.events("coord", "DATA_SYNC_COMPLETED")
    assert completed[-1]["payload"]["artifacts"] == ["npz/hex8_2p/a.npz"]


def test_corrupted_upload_never_becomes_visible(one: Cluster) -> None:
    body = os.urandom(200_000)
    resp = put(one, "coord", "npz", "bad.npz", body, declared_sha=sha(b"something else"))
    assert resp.status == 422
    assert "sha256 mismatch" in resp.json()["error"]
    assert visible_files(one.data_root("coord")) == []
    assert put(one, "coord", "npz", "bad.npz", body, origin=None).status == 400
    assert put(one, "coord", "npz", "bad.npz", body, origin="gpu-9").status == 400
    assert visible_files(one.data_root("coord")) == []
    assert not list((one.data_root("coord") / ".ringsync" / "incoming").iterdir())
    failed = one.events("coord", "DATA_SYNC_FAILED")
    assert failed and "sha256 mismatch" in failed[-1]["payload"]["error"]


def test_short_body_is_refused(one: Cluster) -> None:
    body = os.urandom(1000)
    resp = put(one, "coord", "npz", "short.npz", body, declared_size=2000,
               declared_sha=sha(body + bytes(1000)))
    assert resp.status == 400  # Content-Length disagrees with the declared size
    assert visible_files(one.data_root("coord")) == []


def test_truncated_upload_is_invisible_and_resumes_with_only_the_rest(one: Cluster) -> None:
    whole = os.urandom(3_000_000)
    put_and_hang_up(one, "coord", "npz", "big.npz", whole, send=1_200_000)
    offset = wait_for(lambda: held_offset(one, "npz/big.npz", whole), 10,
                      what="the partial upload to be kept")
    assert 0 < offset <= 1_200_000
    assert visible_files(one.data_root("coord")) == []
    # The resume sends only the remainder; the receiver hashes the whole object.
    resp = put(one, "coord", "npz", "big.npz", whole[offset:], declared_sha=sha(whole),
               declared_size=len(whole), offset=offset)
    assert resp.status == 201, resp.body
    assert copy_of(one, "npz/big.npz", whole).read_bytes() == whole
    assert not list((one.data_root("coord") / ".ringsync" / "incoming").iterdir())


def held_offset(cluster: Cluster, path: str, whole: bytes) -> int:
    """Bytes of an interrupted upload the receiver kept (0 while it is still running)."""
    resp = cluster.request("coord", "HEAD", f"/v1/objects/{path}",
                           headers={"X-Ringsync-Sha256": sha(whole),
                                    "X-Ringsync-Origin": "gpu-1"})
    return int(resp.headers["x-ringsync-offset"]) if resp.status == 404 else 0


def test_resume_at_wrong_offset_is_told_the_right_one(one: Cluster) -> None:
    whole = os.urandom(3_000_000)
    put_and_hang_up(one, "coord", "npz", "r.npz", whole, send=1_500_000)
    held = wait_for(lambda: held_offset(one, "npz/r.npz", whole), 10, what="kept bytes")
    resp = put(one, "coord", "npz", "r.npz", whole[50:], declared_sha=sha(whole),
               declared_size=len(whole), offset=50)
    assert resp.status == 409 and resp.json()["offset"] == held


def test_a_stored_version_is_never_overwritten(one: Cluster) -> None:
    """A version is (origin, path, sha256): the same bytes again are already present; other
    bytes under the same name, or the same name from another origin, are other versions and
    stored beside it, never over it."""
    first, second = os.urandom(1000), os.urandom(1000)
    assert put(one, "coord", "games", "k/x.npz", first).status == 201
    again = put(one, "coord", "games", "k/x.npz", first)
    assert again.status == 200 and again.json()["already_present"]
    newer = put(one, "coord", "games", "k/x.npz", second)
    assert newer.status == 201 and not newer.json()["already_present"], newer.body
    other = put(one, "coord", "games", "k/x.npz", second, origin="gpu-2")
    assert other.status == 201 and other.json()["origin"] == "gpu-2", other.body
    assert copy_of(one, "games/k/x.npz", first).read_bytes() == first
    assert copy_of(one, "games/k/x.npz", second).read_bytes() == second
    assert copy_of(one, "games/k/x.npz", second, origin="gpu-2").read_bytes() == second
    assert len(one.copies("coord", "gpu-1", "games/k/x.npz")) == 2
    assert not (one.data_root("coord") / "games" / "k" / "x.npz").exists()
    replicas = one.get_json("coord", "/v1/manifest?since=0")["replicas"]
    assert sorted((r["origin"], r["sha256"]) for r in replicas if r["path"] == "k/x.npz") \
        == sorted([("gpu-1", sha(first)), ("gpu-1", sha(second)), ("gpu-2", sha(second))])


def test_a_rotted_copy_is_quarantined_and_repaired_by_the_upload(one: Cluster) -> None:
    body = os.urandom(5000)
    assert put(one, "coord", "npz", "k/rot.npz", body).status == 201
    stored = copy_of(one, "npz/k/rot.npz", body)
    rotted = bytearray(body)
    rotted[100] ^= 0xFF
    stored.write_bytes(bytes(rotted))  # same name and size, other bytes
    repaired = put(one, "coord", "npz", "k/rot.npz", body)
    assert repaired.status == 201 and not repaired.json()["already_present"], repaired.body
    assert stored.read_bytes() == body
    quarantined = [p for p in (one.data_root("coord") / ".ringsync" / "quarantine").rglob("*")
                   if p.is_file()]
    assert [p.read_bytes() for p in quarantined] == [bytes(rotted)]
    (event,) = one.events("coord", "REPLICA_QUARANTINED")
    assert event["payload"]["artifact"] == "npz/k/rot.npz"
    assert event["payload"]["expected_sha256"] == sha(body)
    assert event["payload"]["actual_sha256"] == sha(bytes(rotted))


def test_head_and_range_get(one: Cluster) -> None:
    body = os.urandom(10_000)
    assert put(one, "coord", "models", "m/best.pt", body).status == 201
    version = {"X-Ringsync-Sha256": sha(body), "X-Ringsync-Origin": "gpu-1"}
    head = one.request("coord", "HEAD", "/v1/objects/models/m/best.pt", headers=version)
    assert head.status == 200 and head.headers["x-ringsync-sha256"] == sha(body)
    assert head.headers["x-ringsync-root-id"] == one.status("coord")["root_id"]
    assert one.request("coord", "HEAD", "/v1/objects/models/m/best.pt",
                       headers={"X-Ringsync-Origin": "gpu-1"}).status == 400  # which version?
    assert one.request("coord", "HEAD", "/v1/objects/models/m/best.pt",
                       headers={"X-Ringsync-Sha256": sha(body)}).status == 400  # whose?
    other = {"X-Ringsync-Sha256": sha(b"other"), "X-Ringsync-Origin": "gpu-1"}
    assert one.request("coord", "HEAD", "/v1/objects/models/m/best.pt",
                       headers=other).status == 404
    part = one.request("coord", "GET",
                       f"/v1/objects/models/m/best.pt?origin=gpu-1&sha256={sha(body)}",
                       headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == body[100:200]
    # without a version, GET serves the node's own source: the coordinator has none
    assert one.request("coord", "GET", "/v1/objects/models/m/best.pt").status == 404


@pytest.mark.parametrize("path", [
    "/v1/objects/npz/../../escape.npz",
    "/v1/objects/npz/%2e%2e/%2e%2e/escape.npz",
    "/v1/objects/npz/..%2f..%2fescape.npz",
    "/v1/objects/npz/sub/%2E%2E/%2E%2E/%2E%2E/escape.npz",
    "/v1/objects/npz//etc/escape.npz",
    "/v1/objects/npz/a%00b.npz",
    "/v1/objects/npz/a%5c..%5c..%5cescape.npz",
    "/v1/objects/npz/.ringsync/manifest.db",
    "/v1/objects/etc/passwd",
    "/v1/objects/npz/%2fetc%2fescape.npz",
    "/v1/objects/npz/@gpu-1/escape.npz",  # the tree of copies is not a path a sender names
    "/v1/objects/npz/%40gpu-1/escape.npz",
])
def test_traversal_is_refused_and_writes_nothing(one: Cluster, path: str) -> None:
    root = one.data_root("coord")
    before = sorted(p for p in root.parent.rglob("*") if p.is_file() and "logs" not in p.parts)
    status = raw_request(one, "coord", path)
    assert status in (400, 404), status
    after = sorted(p for p in root.parent.rglob("*") if p.is_file() and "logs" not in p.parts)
    new = [p for p in after if p not in before and p.suffix not in (".db-wal", ".db-shm")]
    assert [p for p in new if ".ringsync" not in p.parts] == []
    assert not (root.parent / "escape.npz").exists()
    assert not list((root / ".ringsync" / "incoming").iterdir())


def test_symlink_inside_data_root_cannot_lead_out(one: Cluster, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    copies = one.data_root("coord") / "npz" / "@gpu-1"
    copies.mkdir(parents=True)
    (copies / "link").symlink_to(outside)
    assert put(one, "coord", "npz", "link/x.npz", b"payload").status == 400
    (one.data_root("coord") / "npz" / "@gpu-2").symlink_to(outside)  # a whole origin tree
    assert put(one, "coord", "npz", "y.npz", b"payload", origin="gpu-2").status == 400
    assert list(outside.iterdir()) == []
