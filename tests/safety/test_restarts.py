"""Memory is not a copy: restored holders, crashes mid-deletion, copies that rot unread.

Issue 11, defects 5, 8 and 10, with real faults: a data root restored from an older copy,
SIGKILL injected by strace into the deleting node's own unlink, silent bit rot that no
deletion ever asks about.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.safety.conftest import (KIB, deleted, fill, holders, intact_copies, pressure_config,
                                   rot, sha, start_strace, write)
from tests.support.cluster import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def test_a_holder_restored_from_an_older_copy_is_not_counted_from_memory(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    a, b = os.urandom(100 * KIB), os.urandom(100 * KIB)
    write(cluster, "gpu-1", "npz/k/a.npz", a)
    fill(cluster, "gpu-1", "push", 450 * KIB)  # ~55 %: two copies of everything
    wait_for(lambda: holders(cluster, "gpu-1", "npz/k/a.npz", sha(a)) >= {"coord", "cpu-1"}, 30,
             what="a on two holders")
    cluster.stop_node("cpu-1")
    backup = cluster.root / "cpu-1-backup"
    shutil.copytree(cluster.data_root("cpu-1"), backup, symlinks=True)  # taken while stopped
    cluster.start_node("cpu-1")
    write(cluster, "gpu-1", "npz/k/b.npz", b)
    wait_for(lambda: holders(cluster, "gpu-1", "npz/k/b.npz", sha(b)) >= {"coord", "cpu-1"}, 30,
             what="b on two holders")
    wait_for(lambda: "cpu-1" in holders(cluster, "coord", "npz/k/b.npz", sha(b))
             or _coord_knows(cluster, "cpu-1", "k/b.npz"), 15, what="the coordinator learns it")

    cluster.stop_node("cpu-1")  # its disk is restored from the backup: b is gone from it
    shutil.rmtree(cluster.data_root("cpu-1"))
    shutil.copytree(backup, cluster.data_root("cpu-1"), symlinks=True)
    cluster.start_node("cpu-1")
    wait_for(lambda: not _coord_knows(cluster, "cpu-1", "k/b.npz"), 15,
             what="the coordinator to forget cpu-1's copy of b (a new incarnation)")
    assert _coord_knows(cluster, "cpu-1", "k/a.npz")  # re-read: what it still has

    answer = cluster.request("gpu-1", "POST", "/v1/control/recover", body=b"{}").json()
    assert answer["under_replicated"] == 1, answer  # b, asked live; a is fine
    wait_for(lambda: "cpu-1" in intact_copies(cluster, "gpu-1", "npz/k/b.npz", sha(b)), 20,
             what="b back on cpu-1")


def _coord_knows(cluster, holder: str, path: str) -> bool:
    rows = cluster.get_json("coord", "/v1/manifest?since=0")["replicas"]
    return any(r["node"] == holder and r["path"] == path and not r["removed"] for r in rows)


def _deleting(cluster) -> list[str]:
    where = cluster.data_root("gpu-1") / ".ringsync" / "deleting"
    return sorted(p.suffix for p in where.iterdir()) if where.is_dir() else []


def _manifest_deletions(cluster) -> list[dict]:
    return cluster.get_json("gpu-1", "/v1/manifest?since=0")["deletions"]


def _a_on_two_holders(safety_cluster, **config):
    """gpu-1 at the push level with a (200 KiB) verified on coord and cpu-1."""
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB",
                             config={**pressure_config(), **config})
    body = os.urandom(200 * KIB)
    source = write(cluster, "gpu-1", "npz/k/a.npz", body)
    fill(cluster, "gpu-1", "push", 360 * KIB)
    wait_for(lambda: holders(cluster, "gpu-1", "npz/k/a.npz", sha(body)) >= {"coord", "cpu-1"},
             30, what="a on two holders")
    return cluster, body, source


@needs_strace
def test_a_crash_between_the_rename_and_the_unlink_puts_the_file_back(safety_cluster, tmp_path):
    cluster, body, source = _a_on_two_holders(safety_cluster)
    proc = cluster.nodes["gpu-1"].proc
    tracer = start_strace(proc.pid, tmp_path / "strace.out", "signal=KILL:when=1")
    try:
        fill(cluster, "gpu-1", "cleanup", 350 * KIB)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        tracer.wait(10)
    assert not source.exists() and _deleting(cluster) == [".json", ".trash"]  # mid-deletion
    cluster.start_node("gpu-1")
    # the restart put it back (its vouches are not fresh any more), then deleted it properly
    wait_for(lambda: "npz/k/a.npz" in deleted(cluster, "gpu-1"), 30, what="a deleted again")
    assert _deleting(cluster) == []
    assert [d["path"] for d in _manifest_deletions(cluster)] == ["k/a.npz"]
    assert sorted(intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body))) == ["coord", "cpu-1"]
    assert "put back" in cluster.log("gpu-1")


@needs_strace
def test_a_crash_after_the_unlink_is_recorded_at_restart(safety_cluster, tmp_path):
    cluster, body, source = _a_on_two_holders(safety_cluster)
    proc = cluster.nodes["gpu-1"].proc
    out = tmp_path / "strace.out"
    tracer = start_strace(proc.pid, out, "delay_exit=5000000:when=1")  # hold it after unlink
    try:
        fill(cluster, "gpu-1", "cleanup", 350 * KIB)
        wait_for(lambda: out.exists() and ".trash" in out.read_text(), 30,
                 what="the unlink of the renamed source")
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # unlinked, not yet recorded in the manifest
        proc.wait(10)
    finally:
        tracer.wait(10)
    assert not source.exists() and _deleting(cluster) == [".json"]
    cluster.start_node("gpu-1")
    assert _deleting(cluster) == []
    rows = _manifest_deletions(cluster)
    assert [(d["path"], d["sha256"]) for d in rows] == [("k/a.npz", sha(body))]
    assert sorted(json.loads(rows[0]["vouched_by"])) == ["coord", "cpu-1"]
    assert sorted(intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body))) == ["coord", "cpu-1"]


def test_the_scrub_finds_rot_nobody_asked_about_and_repairs_it(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config={
        **pressure_config(), "scrub": {"enabled": True, "bytes_per_second": "64MiB"}})
    body = os.urandom(200 * KIB)
    source = write(cluster, "gpu-1", "npz/k/a.npz", body)
    fill(cluster, "gpu-1", "push", 360 * KIB)
    wait_for(lambda: holders(cluster, "gpu-1", "npz/k/a.npz", sha(body)) >= {"coord", "cpu-1"},
             30, what="a on two holders")
    # pressure pushes recount live what the rows call copied (a first: the oldest is pushed
    # first), then not for RECOUNT_SECONDS: from here only the scrub can find the rot
    wait_for(lambda: cluster.status("gpu-1")["recovery"]["recount"]["known_sufficient"] >= 1, 20,
             what="gpu-1's recount of a")
    rot(cluster.stored("coord", "gpu-1", "npz/k/a.npz"))  # repaired from the source
    wait_for(lambda: cluster.status("coord")["scrub"]["findings"]["mismatched"] >= 1, 20,
             what="coord's scrub finding the rot")
    wait_for(lambda: "coord" in intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body)), 20,
             what="coord's copy repaired")
    fill(cluster, "gpu-1", "cleanup", 350 * KIB)  # the source goes
    wait_for(lambda: not source.exists(), 30, what="a deleted")
    # the coordinator's re-homing recounts each orphan live once, then not for a while
    wait_for(lambda: cluster.status("coord")["recovery"]["recount"]["known_sufficient"]
             >= len(deleted(cluster, "gpu-1")) >= 1, 20, what="coord's recount of the orphans")
    rot(cluster.stored("cpu-1", "gpu-1", "npz/k/a.npz"))  # repaired from the other holder
    wait_for(lambda: cluster.status("cpu-1")["scrub"]["findings"]["mismatched"] >= 1, 20,
             what="cpu-1's scrub finding the rot")
    wait_for(lambda: sorted(intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body)))
             == ["coord", "cpu-1"], 20, what="cpu-1's copy repaired from coord")
    quarantined = [e["payload"] for e in cluster.events("cpu-1", "REPLICA_QUARANTINED")]
    assert quarantined and quarantined[-1]["quarantined_to"].startswith(".ringsync/quarantine/")
    metrics = cluster.request("cpu-1", "GET", "/metrics").body.decode()
    assert "ringsync_scrub_findings_total" in metrics
    assert any(e["payload"]["requested_by"] == "scrub"
               for e in cluster.events("cpu-1", "REPLICAS_VERIFIED"))


def test_copies_a_restored_manifest_forgot_are_found_on_disk(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    write(cluster, "gpu-1", "npz/k/a.npz", os.urandom(100 * KIB))
    fill(cluster, "gpu-1", "push", 450 * KIB)
    wait_for(lambda: cluster.stored("cpu-1", "gpu-1", "npz/k/a.npz"), 30, what="a on cpu-1")
    state = cluster.data_root("cpu-1") / ".ringsync"
    cluster.stop_node("cpu-1")
    backup = cluster.root / "manifest-backup"
    backup.mkdir()
    for name in ("manifest.db", "manifest.db-wal", "manifest.db-shm"):
        if (state / name).exists():
            shutil.copy2(state / name, backup / name)
    cluster.start_node("cpu-1")
    b = os.urandom(100 * KIB)
    write(cluster, "gpu-1", "npz/k/b.npz", b)
    wait_for(lambda: cluster.stored("cpu-1", "gpu-1", "npz/k/b.npz"), 30, what="b on cpu-1")
    cluster.stop_node("cpu-1")  # only its manifest goes back in time; its disk keeps b
    for name in ("manifest.db", "manifest.db-wal", "manifest.db-shm"):
        (state / name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy2(backup / name, state / name)
    cluster.start_node("cpu-1")
    own = lambda: {(r["path"], r["sha256"]) for r in  # noqa: E731
                   cluster.get_json("cpu-1", "/v1/manifest?since=0")["replicas"]
                   if r["node"] == "cpu-1" and not r["removed"]}
    wait_for(lambda: ("k/b.npz", sha(b)) in own(), 20, what="b hashed and registered again")
    assert "not in the manifest: hashed and registered" in cluster.log("cpu-1")
    wait_for(lambda: _coord_knows(cluster, "cpu-1", "k/b.npz"), 20,
             what="the coordinator counting cpu-1's b again")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_holder_on_a_full_disk_still_starts_and_vouches(safety_cluster):
    cluster = safety_cluster(start=False, gpus=1, cpus=1, quota="64MiB",
                             config=pressure_config())
    root = cluster.data_root("cpu-1")
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        cluster.start()
        body = os.urandom(100 * KIB)
        write(cluster, "gpu-1", "npz/k/a.npz", body)
        fill(cluster, "gpu-1", "push", 500 * KIB)
        wait_for(lambda: cluster.stored("cpu-1", "gpu-1", "npz/k/a.npz"), 30, what="a on cpu-1")
        cluster.stop_node("cpu-1")
        ballast = root / "npz" / "ballast.tmp"
        subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"],
                       capture_output=True)  # until the filesystem is full
        cluster.start_node("cpu-1")  # the space kept aside lets it open its manifest
        assert "using the space kept aside" in cluster.log("cpu-1")
        health = cluster.request("cpu-1", "GET", "/health", token=None).json()
        assert health["details"]["startup"]["is_healthy"], health["details"]["startup"]
        answer = cluster.request(
            "cpu-1", "GET", f"/v1/vouch/npz/k/a.npz?origin=gpu-1&sha256={sha(body)}").json()
        assert answer["sha256"] == sha(body) and answer["rehashed"] is True
        ballast.unlink()  # room again: the reserve is made again
        wait_for(lambda: (root / ".ringsync" / "reserve").exists(), 15, what="the reserve again")
    finally:
        cluster.stop_all()
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_repair_nobody_can_send_yet_is_asked_again_when_a_holder_returns(safety_cluster):
    """coord's copy of a deleted source rots while the only other holder is down: the scrub
    quarantines it, says (event, /health) that nobody can send it, and asks again until the
    holder is back. Found by adversarial review: it was asked once and left at one copy."""
    cluster, body, source = _a_on_two_holders(
        safety_cluster, scrub={"enabled": True, "bytes_per_second": "64MiB"})
    fill(cluster, "gpu-1", "cleanup", 350 * KIB)
    wait_for(lambda: not source.exists(), 30, what="a deleted")
    cluster.stop_node("cpu-1")
    wait_for(lambda: cluster.get_json("coord", "/v1/cluster")["members"]["cpu-1"]["state"]
             == "down", 15, what="cpu-1 down")
    rot(cluster.stored("coord", "gpu-1", "npz/k/a.npz"))
    wait_for(lambda: cluster.status("coord")["scrub"]["repairs_unsourced"] == 1, 30,
             what="the scrub finding nobody to repair from")
    health = cluster.request("coord", "GET", "/health", token=None).json()["details"]["scrub"]
    assert not health["is_healthy"] and "wait for a good copy" in health["message"]
    assert [e for e in cluster.events("coord", "DATA_SYNC_FAILED")
            if e["payload"]["reason"] == "scrub"]
    cluster.start_node("cpu-1")
    wait_for(lambda: sorted(intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body)))
             == ["coord", "cpu-1"], 40, what="coord's copy repaired from cpu-1")
    wait_for(lambda: cluster.status("coord")["scrub"]["repairs_pending"] == 0, 15,
             what="the repair done")


def test_an_orphan_the_coordinator_does_not_hold_is_re_homed_through_a_holder(safety_cluster):
    """Placed on CPU nodes while the coordinator was down, deleted at its origin, then one
    holder loses its copy: the coordinator asks the other holder to send it on. Found by
    the chaos campaign: such versions stayed at one copy for good."""
    cluster = safety_cluster(gpus=1, cpus=3, quota="64MiB", config=pressure_config())
    cluster.stop_node("cpu-3")  # the copies go to cpu-1 and cpu-2
    cluster.stop_node("coord")
    body = os.urandom(200 * KIB)
    source = write(cluster, "gpu-1", "npz/k/a.npz", body)
    fill(cluster, "gpu-1", "push", 360 * KIB)
    wait_for(lambda: holders(cluster, "gpu-1", "npz/k/a.npz", sha(body)) >= {"cpu-1", "cpu-2"},
             45, what="a on cpu-1 and cpu-2")
    fill(cluster, "gpu-1", "cleanup", 350 * KIB)
    wait_for(lambda: not source.exists(), 30, what="a deleted behind cpu-1 and cpu-2")
    cluster.start_node("coord")
    cluster.start_node("cpu-3")
    wait_for(lambda: _coord_knows(cluster, "cpu-2", "k/a.npz")
             and cluster.get_json("coord", "/v1/manifest?since=0")["deletions"], 20,
             what="the coordinator learning the copies and the deletion")
    cluster.stored("cpu-1", "gpu-1", "npz/k/a.npz").unlink()  # a disk loses the copy
    assert cluster.request("cpu-1", "POST", "/v1/control/verify", body=b"{}").status == 202
    wait_for(lambda: len(intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body))) >= 2, 30,
             what="a second copy again, sent by cpu-2")
    # the coordinator lacks a copy itself: it is the first target (CPU nodes come next)
    assert "coord" in intact_copies(cluster, "gpu-1", "npz/k/a.npz", sha(body))
    assert "cpu-2 asked to send it to coord" in cluster.log("coord")
