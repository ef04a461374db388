"""Issue 12: a receiver's failing disk and a sender that stalls mid-body, on real nodes.

A fsync of the part that fails (strace injects EIO or ENOSPC into the receiver's first
fsync) is a retryable 503/507 naming the errno, the part is discarded, nothing is
published, and a sender node's retry then delivers a verified copy. The same for a file
rsync staged: the receiver fsyncs it when it hashes it, before publishing. A sender that stops
sending without closing its connection frees the upload after the idle time
(``RINGSYNC_UPLOAD_IDLE_SECONDS``), keeping what arrived for a resume.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.paths import staged_name
from tests.support.cluster import TOKEN, Cluster, wait_for
from tests.support.files import write
from tests.support.objects import put, sha
from tests.support.strace import attach, injected, stop_strace, strace_fsync, strace_path

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def incoming(cluster: Cluster, node: str) -> list[Path]:
    return list((cluster.data_root(node) / ".ringsync" / "incoming").glob("*"))


def visible_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".ringsync" not in p.parts]


@pytest.mark.parametrize(("error", "status"), [("EIO", 503), ("ENOSPC", 507)])
def test_a_failing_fsync_is_a_retryable_5xx_and_the_part_is_discarded(
        make_cluster, tmp_path: Path, error: str, status: int) -> None:
    cluster = make_cluster(gpus=1)
    body = os.urandom(300_000)
    trace = strace_fsync(cluster.nodes["coord"].proc.pid, tmp_path / "strace.out", error)
    try:
        resp = put(cluster, "coord", "npz", "k/a.npz", body)
    finally:
        stop_strace(trace)
    hits = injected(tmp_path / "strace.out")
    # the part's fsync (strace counts ``when=1`` per thread: another worker thread's first
    # fsync, of a directory, may be injected too under load)
    assert any(".part>" in hit for hit in hits), hits
    assert resp.status == status, resp.body
    answer = resp.json()
    assert answer["errno"] == error and error in answer["error"]
    assert incoming(cluster, "coord") == []  # discarded, not kept for a resume
    assert visible_files(cluster.data_root("coord")) == []  # never published
    assert cluster.request("coord", "HEAD", "/v1/objects/npz/k/a.npz", headers={
        "X-Ringsync-Sha256": sha(body), "X-Ringsync-Origin": "gpu-1"}).headers[
            "x-ringsync-offset"] == "0"
    failed = cluster.events("coord", "DATA_SYNC_FAILED")
    assert failed and error in failed[-1]["payload"]["error"]
    assert "discarded" in failed[-1]["payload"]["error"]
    assert error in cluster.log("coord")  # the warning
    # the disk works again: the same upload now arrives whole
    assert put(cluster, "coord", "npz", "k/a.npz", body).status == 201
    assert cluster.version("coord", "gpu-1", "npz/k/a.npz", sha(body)).read_bytes() == body


def test_a_sender_retries_after_an_fsync_error_and_the_copy_arrives_verified(
        make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster(gpus=1)
    data = os.urandom(200_000)
    trace = strace_fsync(cluster.nodes["coord"].proc.pid, tmp_path / "strace.out", "EIO")
    try:
        write(cluster, "gpu-1", "npz/k/b.npz", data)
        copy = wait_for(lambda: cluster.version("coord", "gpu-1", "npz/k/b.npz", sha(data)),
                        30, what="the retried push")
    finally:
        stop_strace(trace)
    hits = injected(tmp_path / "strace.out")
    assert any(".part>" in hit for hit in hits), hits
    assert copy.read_bytes() == data
    failures = cluster.events("gpu-1", "DATA_SYNC_FAILED")
    assert failures, "the first attempt failed"
    first = failures[0]["payload"]
    assert "answered 503" in first["error"] and "EIO" in first["error"]
    assert first["retry_in_seconds"] is not None and first["retry_in_seconds"] > 0
    replicas = wait_for(lambda: [r for r in cluster.get_json("coord", "/v1/manifest?since=0")[
        "replicas"] if r["node"] == "coord" and r["sha256"] == sha(data) and r["verified_at"]],
        10, what="the verified replica")
    assert replicas
    assert incoming(cluster, "coord") == []


def test_a_staged_file_whose_fsync_fails_is_discarded_and_never_published(
        make_cluster, tmp_path: Path) -> None:
    """rsync wrote the bytes, not this node: they are fsynced when hashed, before they are
    published, and a failing fsync is a 503 that discards them like a part's."""
    cluster = make_cluster(gpus=1)
    body = os.urandom(300_000)
    rel = "k/staged.npz"
    staged = (cluster.data_root("coord") / ".ringsync" / "incoming"
              / staged_name("npz", rel, sha(body), "gpu-1"))
    headers = {"X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha(body),
               "X-Ringsync-Origin": "gpu-1", "X-Ringsync-Source": "gpu-1"}
    staged.write_bytes(body)  # as rsync leaves it: whole, renamed into place, not fsynced
    trace = strace_fsync(cluster.nodes["coord"].proc.pid, tmp_path / "strace.out", "EIO")
    try:
        resp = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
    finally:
        stop_strace(trace)
    hits = injected(tmp_path / "strace.out")
    assert any(".claimed>" in hit for hit in hits), hits  # the claimed staged file's fsync
    assert resp.status == 503, resp.body
    assert resp.json()["errno"] == "EIO"
    assert not staged.exists()  # discarded: those bytes cannot be trusted
    assert visible_files(cluster.data_root("coord")) == []  # never published
    failed = cluster.events("coord", "DATA_SYNC_FAILED")
    assert failed and "EIO" in failed[-1]["payload"]["error"]
    staged.write_bytes(body)  # rsync sends it again
    again = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
    assert again.status == 201, again.body
    assert cluster.version("coord", "gpu-1", f"npz/{rel}", sha(body)).read_bytes() == body


def test_a_batch_file_the_disk_fails_on_fails_alone(make_cluster, tmp_path: Path) -> None:
    """A staged file of a batch this node's disk fails on (EIO as its claim renames it) is a
    503 for that file alone, discarded; the batch's other files are published."""
    cluster = make_cluster(gpus=1)
    incoming_dir = cluster.data_root("coord") / ".ringsync" / "incoming"
    files, bodies = [], {}
    for n in range(3):
        body, rel = os.urandom(200_000), f"k/batch{n}.npz"
        bodies[rel] = body
        (incoming_dir / staged_name("npz", rel, sha(body), "gpu-1")).write_bytes(body)
        files.append({"data_type": "npz", "path": rel, "headers": {
            "X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha(body),
            "X-Ringsync-Origin": "gpu-1", "X-Ringsync-Source": "gpu-1"}})
    broken = incoming_dir / staged_name("npz", "k/batch1.npz", sha(bodies["k/batch1.npz"]),
                                        "gpu-1")
    out = tmp_path / "strace.out"  # the disk fails as the claim moves it
    trace = strace_path(cluster.nodes["coord"].proc.pid, out, broken,
                        "rename,renameat,renameat2")
    try:
        resp = cluster.request("coord", "POST", "/v1/staged",
                               body=json.dumps({"files": files}).encode(),
                               headers={"Content-Type": "application/json"})
    finally:
        stop_strace(trace)
    assert injected(out), out.read_text()
    assert resp.status == 200, resp.body
    results = resp.json()["results"]
    assert [r["status"] for r in results] == [201, 503, 201], results
    assert results[1]["errno"] == "EIO" and results[1]["op"] == "rename"
    assert not broken.exists() and not list(incoming_dir.glob("*.claimed"))
    for rel in ("k/batch0.npz", "k/batch2.npz"):
        assert cluster.version("coord", "gpu-1", f"npz/{rel}",
                               sha(bodies[rel])).read_bytes() == bodies[rel]
    assert cluster.stored("coord", "gpu-1", "npz/k/batch1.npz") is None
    failed = cluster.events("coord", "DATA_SYNC_FAILED")
    assert [f["payload"]["artifact"] for f in failed] == ["npz/k/batch1.npz"]


def test_a_batch_with_nothing_to_claim_and_a_failing_unlink_answer_per_file(
        make_cluster, tmp_path: Path) -> None:
    """A batch whose files are all held already is answered per file (it was a 500), and a
    disk error while claiming one file (EIO unlinking a held version's staged copy) is a
    503 for that file alone: the batch's other file is published, never left claimed."""
    cluster = make_cluster(gpus=1)
    incoming_dir = cluster.data_root("coord") / ".ringsync" / "incoming"

    def declared(rel: str, body: bytes) -> dict:
        return {"data_type": "npz", "path": rel, "headers": {
            "X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha(body),
            "X-Ringsync-Origin": "gpu-1", "X-Ringsync-Source": "gpu-1"}}

    def batch(*files: dict) -> list[dict]:
        resp = cluster.request("coord", "POST", "/v1/staged",
                               body=json.dumps({"files": list(files)}).encode(),
                               headers={"Content-Type": "application/json"})
        assert resp.status == 200, resp.body
        return resp.json()["results"]

    held, new = os.urandom(100_000), os.urandom(100_000)
    assert put(cluster, "coord", "npz", "k/held.npz", held).status == 201
    assert [r["status"] for r in batch()] == []
    assert [(r["status"], r["already_present"]) for r in batch(
        declared("k/held.npz", held))] == [(200, True)]
    staged_held = incoming_dir / staged_name("npz", "k/held.npz", sha(held), "gpu-1")
    staged_held.write_bytes(held)  # a second sender's rsync of a version held already
    (incoming_dir / staged_name("npz", "k/new.npz", sha(new), "gpu-1")).write_bytes(new)
    out = tmp_path / "strace.out"
    trace = strace_path(cluster.nodes["coord"].proc.pid, out, staged_held, "unlink,unlinkat")
    try:
        results = batch(declared("k/new.npz", new), declared("k/held.npz", held))
    finally:
        stop_strace(trace)
    assert injected(out), out.read_text()
    assert [r["status"] for r in results] == [201, 503], results
    assert results[1]["errno"] == "EIO"
    assert cluster.version("coord", "gpu-1", "npz/k/new.npz", sha(new)).read_bytes() == new
    assert cluster.get_json("coord", "/status")["transfers"]["in_flight"] == []


@pytest.fixture
def idle_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A coordinator that gives up a silent upload after 1 s, and gpu-1 as an origin."""
    cluster = Cluster(tmp_path / "idle", gpus=1)
    cluster.env["coord"] = {"RINGSYNC_UPLOAD_IDLE_SECONDS": "1"}
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()


def test_a_stalled_upload_frees_its_slot_and_the_next_sender_resumes(
        idle_cluster: Cluster) -> None:
    cluster = idle_cluster
    whole = os.urandom(400_000)
    half = len(whole) // 2
    sock = socket.create_connection(("127.0.0.1", cluster.nodes["coord"].port), timeout=10)
    try:
        head = (f"PUT /v1/objects/npz/k/stall.npz HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(whole)}\r\n"
                f"X-Ringsync-Size: {len(whole)}\r\nX-Ringsync-Sha256: {sha(whole)}\r\n"
                f"X-Ringsync-Offset: 0\r\nX-Ringsync-Source: test\r\n"
                f"X-Ringsync-Origin: gpu-1\r\n\r\n").encode()
        sock.sendall(head + whole[:half])  # then silence, the connection left open
        probe = {"X-Ringsync-Sha256": sha(whole), "X-Ringsync-Origin": "gpu-1"}
        wait_for(lambda: cluster.request("coord", "HEAD", "/v1/objects/npz/k/stall.npz",
                                         headers=probe).status == 409, 5,
                 what="the upload in progress")
        started = time.monotonic()
        resp = wait_for(lambda: (r := cluster.request(
            "coord", "HEAD", "/v1/objects/npz/k/stall.npz", headers=probe)).status == 404 and r,
            10, what="the stalled upload's slot freed")
        assert time.monotonic() - started < 5
        assert int(resp.headers["x-ringsync-offset"]) == half  # every byte that arrived kept
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    finally:
        sock.close()
    done = put(cluster, "coord", "npz", "k/stall.npz", whole[half:], offset=half,
               declared_size=len(whole), declared_sha=sha(whole))
    assert done.status == 201, done.body
    assert cluster.version("coord", "gpu-1", "npz/k/stall.npz", sha(whole)).read_bytes() == whole
    failed = cluster.events("coord", "DATA_SYNC_FAILED")
    assert any("stalled" in e["payload"]["error"] for e in failed)


def test_a_staged_file_replaced_while_it_is_read_back_publishes_what_was_hashed(
        make_cluster, tmp_path: Path) -> None:
    """Another sender's rsync renames other bytes over the staged name while this node reads
    the first file back (strace holds that fsync for 1.5 s). What is published must be the
    bytes that were hashed: it used to be linked by the staged name, i.e. the newcomer's
    bytes under the first version's name (a torn copy)."""
    cluster = make_cluster(gpus=1)
    body, other = os.urandom(300_000), os.urandom(300_000)
    rel = "k/raced.npz"
    staged = (cluster.data_root("coord") / ".ringsync" / "incoming"
              / staged_name("npz", rel, sha(body), "gpu-1"))
    headers = {"X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha(body),
               "X-Ringsync-Origin": "gpu-1", "X-Ringsync-Source": "gpu-1"}
    staged.write_bytes(body)
    out = tmp_path / "strace.out"
    trace = attach(cluster.nodes["coord"].proc.pid, out, "fsync",
                   "delay_enter=1500000:when=1")
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(cluster.request, "coord", "POST", f"/v1/staged/npz/{rel}",
                                 headers=headers)
            time.sleep(0.8)  # the first file is hashed; its fsync is held
            newcomer = staged.with_name(".newcomer")
            newcomer.write_bytes(other)
            os.replace(newcomer, staged)  # as rsync leaves a file: renamed into place
            resp = answer.result(30)
    finally:
        stop_strace(trace)
    assert resp.status == 201, resp.body
    held = [line for line in out.read_text().splitlines() if "DELAYED" in line]
    assert held and ".claimed>" in held[0], held  # the read-back's fsync was the one held
    copy = cluster.version("coord", "gpu-1", f"npz/{rel}", sha(body))
    assert copy is not None and copy.read_bytes() == body, "published bytes nobody hashed"
