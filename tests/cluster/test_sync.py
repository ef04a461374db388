"""Push from generator, retries, membership, pause and priority sync on a real cluster."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.files import sha_of, write

pytestmark = pytest.mark.cluster


def test_generator_output_reaches_the_coordinator_verified(cluster: Cluster) -> None:
    data = {f"npz/hex8_2p/gpu-1_{i}.npz": os.urandom(200_000 + i) for i in range(3)}
    for rel, body in data.items():
        write(cluster, "gpu-1", rel, body)
    for rel, body in data.items():
        target = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 15,
                          what=f"{rel} on the coordinator")
        assert target.read_bytes() == body
        assert f".v{hashlib.sha256(body).hexdigest()[:16]}." in target.name
        assert not (cluster.data_root("coord") / rel).exists(), "a copy took a source's name"
    # The sender records the receiver's verification as a receipt and a verified replica
    # (when the receiver's answer reaches it, a moment after the file is visible there).
    def verified() -> set[tuple[str, str]]:
        manifest = cluster.get_json("gpu-1", "/v1/manifest?since=0")
        return {(r["path"], r["node"]) for r in manifest["replicas"] if r["verified_at"]}

    wait_for(lambda: {(rel.split("/", 1)[1], "coord") for rel in data} <= verified(), 10,
             what="the sender's receipts")
    # The coordinator registered each arrival.
    coord = cluster.get_json("coord", "/v1/manifest?since=0")
    assert {a["path"] for a in coord["artifacts"]} >= {r.split("/", 1)[1] for r in data}
    assert {a["origin"] for a in coord["artifacts"]} == {"gpu-1"}
    for rel, body in data.items():  # pushing never touches the source
        assert (cluster.data_root("gpu-1") / rel).read_bytes() == body
    started = cluster.events("gpu-1", "DATA_SYNC_STARTED")
    completed = cluster.events("gpu-1", "DATA_SYNC_COMPLETED")
    assert started and sum(e["payload"]["files"] for e in completed) == 3


def test_a_verified_artifact_is_not_sent_again(cluster: Cluster) -> None:
    write(cluster, "gpu-1", "npz/k/once.npz", os.urandom(100_000))
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/once.npz"), 15, what="arrival")

    def receipts() -> list[dict]:
        return [r for r in cluster.get_json("coord", "/v1/manifest?since=0")["receipts"]
                if r["path"] == "k/once.npz"]

    wait_for(lambda: len(receipts()) == 1, 10, what="the receipt")
    cluster.request("gpu-1", "POST", "/v1/control/priority-sync",
                    body=b'{"reason": "operator_priority"}')
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= 5, 10, what="more cycles")
    assert len(receipts()) == 1
    assert cluster.status("gpu-1")["sync"]["pushed_files"] == 1


def test_unfinished_database_waits_and_is_sent_as_a_consistent_snapshot(cluster: Cluster) -> None:
    db_path = cluster.data_root("gpu-2") / "games" / "hex8_2p" / "gpu-2_000001.db"
    db_path.parent.mkdir(parents=True)
    writer = sqlite3.connect(db_path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE games(game_id TEXT PRIMARY KEY, winner INTEGER)")
    for i in range(50):
        writer.execute("INSERT INTO games VALUES (?, ?)", (f"g{i}", i % 2))
        writer.commit()
    rel = "games/hex8_2p/gpu-2_000001.db"
    wait_for(lambda: cluster.status("gpu-2")["sync"]["cycles"] >= 4, 10, what="sync cycles")
    assert not cluster.copies("coord", "gpu-2", rel), "a database with an open writer was pushed"
    writer.close()  # finished: no -wal left
    source_sha = sha_of(db_path)
    coord_copy = wait_for(lambda: cluster.stored("coord", "gpu-2", rel), 15,
                          what="the finished database on the coordinator")
    check = sqlite3.connect(f"file:{coord_copy}?mode=ro", uri=True)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check.execute("SELECT COUNT(*) FROM games").fetchone()[0] == 50
    check.close()
    assert sha_of(db_path) == source_sha, "ringsync modified the live source"
    assert not db_path.with_name(db_path.name + "-wal").exists()


def test_failures_back_off_and_recover_when_the_coordinator_returns(make_cluster) -> None:
    # a loaded machine (two test workers) restarts the coordinator slowly enough for the
    # failures to open gpu-1's breaker: its probe must come within the test's wait
    cluster = make_cluster(gpus=1, config={"transfer": {"breaker_reset_seconds": 2}})
    assert cluster.stop_node("coord") == 0
    write(cluster, "gpu-1", "npz/k/late.npz", os.urandom(50_000))
    failures = wait_for(lambda: len(cluster.events("gpu-1", "DATA_SYNC_FAILED")) >= 3 and
                        cluster.events("gpu-1", "DATA_SYNC_FAILED"), 20, what="retries")
    attempts = [e["payload"]["attempt"] for e in failures]
    assert attempts[:3] == [1, 2, 3]
    delays = [e["payload"]["retry_in_seconds"] for e in failures]
    assert all(d is not None and d > 0 for d in delays)
    assert "unreachable" in failures[0]["payload"]["error"]
    cluster.start_node("coord")
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/late.npz"), 20, what="the retry")


def test_membership_down_then_recovered(make_cluster) -> None:
    cluster = make_cluster(gpus=1)
    wait_for(lambda: cluster.get_json("coord", "/v1/cluster")["members"]["gpu-1"]["state"] == "up",
             10, what="gpu-1 up")
    # only what follows the stop counts: a start-up slowed by a loaded machine can make
    # gpu-1 suspect and recovered before it
    before = len(cluster.events("coord"))
    cluster.stop_node("gpu-1")
    wait_for(lambda: cluster.get_json("coord", "/v1/cluster")["members"]["gpu-1"]["state"]
             == "down", 10, what="gpu-1 down")
    cluster.start_node("gpu-1")
    wait_for(lambda: [e for e in cluster.events("coord")[before:]
                      if e["type"] == "NODE_RECOVERED"], 10, what="NODE_RECOVERED")
    types = [e["type"] for e in cluster.events("coord")[before:]
             if e["payload"].get("node") == "gpu-1"]
    assert types.index("NODE_SUSPECT") < types.index("NODE_DOWN") < types.index("NODE_RECOVERED")
    assert cluster.get_json("coord", "/v1/cluster")["members"]["gpu-1"]["state"] == "up"


def test_pause_stops_new_transfers_and_resume_restarts_them(cluster: Cluster) -> None:
    assert cluster.request("gpu-1", "POST", "/v1/control/pause",
                           body=b'{"by": "test"}').json()["paused"] is True
    write(cluster, "gpu-1", "npz/k/held.npz", os.urandom(10_000))
    wait_for(lambda: cluster.status("gpu-1")["sync"]["pending"] == 1, 10, what="pending work")
    cycles = cluster.status("gpu-1")["sync"]["cycles"]
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= cycles + 3, 10, what="cycles")
    assert not cluster.copies("coord", "gpu-1", "npz/k/held.npz")
    cluster.request("gpu-1", "POST", "/v1/control/resume", body=b"{}")
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/held.npz"), 10, what="the push")
    types = [e["type"] for e in cluster.events("gpu-1")]
    assert types.index("SYNC_PAUSED") < types.index("SYNC_RESUMED")


def test_sigterm_stops_a_node_within_5s_leaving_no_partial_file(make_cluster) -> None:
    import socket
    import time

    from tests.support.cluster import TOKEN

    cluster = make_cluster(gpus=1)
    size = 50_000_000
    sock = socket.create_connection(("127.0.0.1", cluster.nodes["coord"].port))
    sock.sendall((f"PUT /v1/objects/npz/inflight.npz HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n"
                  f"X-Ringsync-Size: {size}\r\nX-Ringsync-Sha256: {'a' * 64}\r\n"
                  f"X-Ringsync-Origin: gpu-1\r\n\r\n").encode()
                 + os.urandom(3_000_000))
    wait_for(lambda: cluster.status("coord")["transfers"]["in_flight"], 10, what="the upload")
    began = time.monotonic()
    code = cluster.stop_node("coord", signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - began
    sock.close()
    assert code == 0 and elapsed < 5, (code, elapsed)
    root = cluster.data_root("coord")
    assert [p for p in root.rglob("*") if p.is_file() and ".ringsync" not in p.parts] == []
    assert "Traceback" not in cluster.log("coord")


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_large_push_streams_in_bounded_memory(make_cluster) -> None:
    """Invariant 4: neither side holds a file whole; 256 MiB moves with small RSS growth."""
    cluster = make_cluster(gpus=1)
    coord_pid, gpu_pid = cluster.nodes["coord"].proc.pid, cluster.nodes["gpu-1"].proc.pid
    before = {pid: vm_kib(pid, "VmRSS") for pid in (coord_pid, gpu_pid)}
    size = 256 * 1024 * 1024
    path = cluster.data_root("gpu-1") / "models" / "big" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        for _ in range(size // (8 << 20)):
            fh.write(os.urandom(8 << 20))
    target = wait_for(lambda: cluster.stored("coord", "gpu-1", "models/big/checkpoint.pt"), 60,
                      what="the 256 MiB push")
    assert target.stat().st_size == size
    for pid in (coord_pid, gpu_pid):
        growth_mib = (vm_kib(pid, "VmHWM") - before[pid]) / 1024
        assert growth_mib < 64, f"process {pid} grew {growth_mib:.0f} MiB moving 256 MiB"


def test_a_corrupt_database_is_reported_once_and_does_not_block_others(cluster: Cluster) -> None:
    bad = write(cluster, "gpu-1", "games/k/broken.db", b"SQLite format 3\x00" + os.urandom(8000))
    write(cluster, "gpu-1", "npz/k/fine.npz", os.urandom(5000))
    wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/fine.npz"), 15, what="the good file")
    failed = wait_for(lambda: [e for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
                               if e["payload"]["artifact"] == "games/k/broken.db"], 10,
                      what="the corrupt database to be reported")
    assert failed[0]["payload"]["reason"] == "scan"
    cycles = cluster.status("gpu-1")["sync"]["cycles"]
    wait_for(lambda: cluster.status("gpu-1")["sync"]["cycles"] >= cycles + 3, 10, what="cycles")
    assert len([e for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
                if e["payload"]["artifact"] == "games/k/broken.db"]) == 1
    assert not cluster.copies("coord", "gpu-1", "games/k/broken.db")
    assert bad.exists()


def test_a_push_cut_off_by_a_crash_resumes_sending_only_the_rest(make_cluster) -> None:
    """Invariant 5 end to end: the coordinator dies mid-push (SIGKILL); after it restarts the
    sender asks for the offset and sends only the remainder."""
    # the breaker may open while coord restarts (slowly on a loaded machine): it probes
    # again within 2 s rather than 30, inside the wait below
    cluster = make_cluster(gpus=1, config={"bandwidth_limits": {"default_mbps": 4},
                                           "transfer": {"breaker_reset_seconds": 2}})
    size = 16 * 1024 * 1024
    body = os.urandom(size)
    write(cluster, "gpu-1", "models/m/ckpt.pt", body)
    wait_for(lambda: any(t["done"] > 3_000_000 for t in
                         cluster.status("coord")["transfers"]["in_flight"]), 15,
             what="the push to be under way")
    cluster.stop_node("coord", signal.SIGKILL)
    cluster.start_node("coord")
    target = wait_for(lambda: cluster.stored("coord", "gpu-1", "models/m/ckpt.pt"), 30,
                      what="the resumed push")
    assert sha_of(target) == hashlib.sha256(body).hexdigest()
    finished = [t for t in cluster.status("coord")["transfers"]["recent"]
                if t["artifact"] == "models/m/ckpt.pt" and t["error"] is None]
    assert finished and finished[-1]["offset"] > 3_000_000
    assert finished[-1]["done"] == size - finished[-1]["offset"]
