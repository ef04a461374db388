"""A vouch is the bytes a holder reads now, on a data root that is really distinct.

Each test is one way a source was deleted behind copies that were not what the manifest
remembered (issue 11, defects 1-4 and 9). The verdict is read off the disks: whenever a
source is gone, at least ``min_copies_before_delete`` other nodes hold its exact bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.safety.conftest import (FAKETIME_LIB, KIB, deleted, fill, holders, intact_copies,
                                   pressure_config, replace_keeping_size_and_mtime, rot, sha,
                                   write)
from tests.support.cluster import wait_for
from tests.support.strace import injected, stop_strace, strace_path

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

REL = "npz/k/a.npz"


def _on_two_holders(cluster, body: bytes) -> Path:
    source = write(cluster, "gpu-1", REL, body)
    fill(cluster, "gpu-1", "push", 360 * KIB)  # ~55 %: copies towards min_copies
    wait_for(lambda: holders(cluster, "gpu-1", REL, sha(body)) >= {"coord", "cpu-1"}, 45,
             what="a verified on coord and cpu-1")
    return source


def test_bit_rot_on_every_holder_deletes_nothing_until_good_copies_exist(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    body = os.urandom(200 * KIB)
    source = _on_two_holders(cluster, body)
    for holder in ("coord", "cpu-1"):  # inside what used to be a 60 s cached-hash window
        rot(cluster.stored(holder, "gpu-1", REL))
    fill(cluster, "gpu-1", "b", 350 * KIB)  # ~88 %: cleanup
    wait_for(lambda: not source.exists(), 60, what="a deleted once good copies exist")
    assert sorted(intact_copies(cluster, "gpu-1", REL, sha(body))) == ["coord", "cpu-1"]
    for holder in ("coord", "cpu-1"):  # each holder found its own rot when asked
        found = [e["payload"] for e in cluster.events(holder, "REPLICA_QUARANTINED")]
        assert any(p["expected_sha256"] == sha(body) and p["actual_sha256"] != sha(body)
                   for p in found), holder


def test_a_source_replaced_with_the_same_size_and_mtime_is_a_new_version(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    old, new = os.urandom(200 * KIB), os.urandom(200 * KIB)
    source = _on_two_holders(cluster, old)
    replace_keeping_size_and_mtime(source, new)  # cp -p, rsync -a, tar x, a restore
    fill(cluster, "gpu-1", "b", 350 * KIB)
    wait_for(lambda: not source.exists(), 60, what="the new version deleted behind its copies")
    # the record follows the unlink (the source leaves its name at the trash rename, first)
    record = wait_for(lambda: deleted(cluster, "gpu-1").get(REL), 10, what="the deletion record")
    assert record["sha256"] == sha(new)
    assert sorted(intact_copies(cluster, "gpu-1", REL, sha(new))) == ["coord", "cpu-1"]
    # the old version's copies are kept: they may be the only copy of that data
    assert sorted(intact_copies(cluster, "gpu-1", REL, sha(old))) == ["coord", "cpu-1"]


@pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="needs libfaketime (Debian: faketime)")
def test_a_holder_whose_clock_was_stepped_back_still_hashes_now(safety_cluster, tmp_path):
    clock = tmp_path / "faketime"
    clock.write_text("+2h\n")  # cpu-1 runs two hours ahead while the copy arrives
    cluster = safety_cluster(start=False, gpus=1, cpus=1, quota="64MiB",
                             config=pressure_config())
    cluster.env["cpu-1"] = {"LD_PRELOAD": str(FAKETIME_LIB),
                            "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
                            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    cluster.start()
    assert cluster.status("cpu-1")["time"] > cluster.status("coord")["time"] + 3600
    body = os.urandom(200 * KIB)
    source = _on_two_holders(cluster, body)
    rot(cluster.stored("cpu-1", "gpu-1", REL))
    clock.write_text("+0\n")  # stepped back: its hash of the copy now looks 2 h in the future
    wait_for(lambda: cluster.status("cpu-1")["time"] < cluster.status("coord")["time"] + 60, 10,
             what="cpu-1's clock stepped back")
    fill(cluster, "gpu-1", "b", 350 * KIB)
    wait_for(lambda: not source.exists(), 60, what="a deleted once good copies exist")
    assert sorted(intact_copies(cluster, "gpu-1", REL, sha(body))) == ["coord", "cpu-1"]


def test_a_second_node_on_a_data_root_refuses_to_start(safety_cluster):
    cluster = safety_cluster(start=False, gpus=1, cpus=2, quota="64MiB")
    alias = cluster.root / "alias-of-cpu-1"
    cluster.data_root("cpu-1").mkdir(parents=True)
    alias.symlink_to(cluster.data_root("cpu-1"))  # two hosts, one physical data root
    settings = yaml.safe_load(cluster.config_path.read_text())
    settings["hosts"]["cpu-2"]["data_root"] = str(alias)
    cluster.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    cluster.start(skip=("cpu-2",))
    proc = subprocess.run(cluster.command("cpu-2"), capture_output=True, text=True, timeout=30,
                          cwd=cluster.root, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ringsync:")]
    assert len(lines) == 1 and "node cpu-1" in lines[0] and "cpu-2" in lines[0], proc.stderr
    assert cluster.request("cpu-1", "GET", "/health", token=None).status in (200, 503)


def test_copies_on_one_data_root_count_once(safety_cluster):
    cluster = safety_cluster(start=False, gpus=1, cpus=2, quota="64MiB",
                             config=pressure_config(min_copies_before_delete=3))
    for name in ("cpu-1", "cpu-2"):  # a cloned disk: both roots carry one id
        state = cluster.data_root(name) / ".ringsync"
        state.mkdir(parents=True)
        (state / "root_id").write_text("c10ned0000000000000000000000000\n")
    cluster.start()
    body = os.urandom(200 * KIB)
    source = write(cluster, "gpu-1", REL, body)
    fill(cluster, "gpu-1", "b", 700 * KIB)
    wait_for(lambda: holders(cluster, "gpu-1", REL, sha(body)) == {"coord", "cpu-1", "cpu-2"},
             30, what="a on all three holders")
    runs = len(cluster.events("gpu-1", "CLEANUP_COMPLETED"))
    wait_for(lambda: not source.exists()
             or len(cluster.events("gpu-1", "CLEANUP_COMPLETED")) >= runs + 5, 20,
             what="five cleanup runs (or a deletion)")
    assert source.exists(), "deleted behind three copies on only two distinct data roots"
    last = cluster.events("gpu-1", "CLEANUP_COMPLETED")[-1]["payload"]
    assert last["short_of_copies"] >= 1


def test_a_decommissioned_holder_does_not_stop_cleanup(safety_cluster):
    cluster = safety_cluster(gpus=1, cpus=2, quota="64MiB", config=pressure_config())
    cluster.stop_node("cpu-2")  # so a's second copy goes to cpu-1
    body = os.urandom(200 * KIB)
    source = _on_two_holders(cluster, body)
    cluster.start_node("cpu-2")
    cluster.stop_node("cpu-1")  # cpu-1 is decommissioned: gone from the config
    settings = yaml.safe_load(cluster.config_path.read_text())
    del settings["hosts"]["cpu-1"]
    cluster.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    cluster.stop_node("gpu-1")
    cluster.start_node("gpu-1")  # it reads the new config; its manifest still names cpu-1
    fill(cluster, "gpu-1", "b", 350 * KIB)
    wait_for(lambda: not source.exists(), 60, what="a deleted behind coord and cpu-2")
    # ARTIFACT_DELETED is written just after the unlink: wait for it, don't race it
    record = wait_for(lambda: deleted(cluster, "gpu-1").get(REL), 10, what="ARTIFACT_DELETED")
    assert sorted(record["vouched_by"]) == ["coord", "cpu-2"]
    assert {"coord", "cpu-2"} <= set(intact_copies(cluster, "gpu-1", REL, sha(body)))


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_source_rewritten_in_place_while_it_is_deleted_is_not_lost(safety_cluster, tmp_path):
    """cp -p / rsync --inplace -t over the source after cleanup's last stat, before its
    rename (strace holds every rename of gpu-1 for 1.5 s to open that window): same inode,
    size and mtime, and the rename changes ctime anyway. Found by adversarial review: it was
    unlinked, and the new bytes existed nowhere."""
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config={
        **pressure_config(), "auto_sync": {"interval_seconds": 10}})  # the scanner keeps out
    old, new = os.urandom(200 * KIB), os.urandom(200 * KIB)
    source = _on_two_holders(cluster, old)
    deleting = cluster.data_root("gpu-1") / ".ringsync" / "deleting"
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-p", str(cluster.nodes["gpu-1"].proc.pid), "-o",
         str(tmp_path / "strace.out"), "-e", "trace=rename,renameat,renameat2",
         "-e", "inject=rename,renameat,renameat2:delay_enter=1500000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        fill(cluster, "gpu-1", "b", 350 * KIB)  # ~88 %: cleanup
        wait_for(lambda: deleting.is_dir() and any(n.endswith(".json")
                                                   for n in os.listdir(deleting)), 30,
                 what="the deletion's intent")
        time.sleep(0.5)  # its stat is done; its rename of the source is held
        st = source.stat()
        with open(source, "r+b") as fh:  # in place: the same inode, size and mtime
            fh.write(new)
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
        wait_for(lambda: not [n for n in os.listdir(deleting)], 30, what="the deletion to end")
    finally:
        tracer.terminate()
        tracer.wait(10)
    assert source.exists() and source.read_bytes() == new, \
        "the rewritten bytes were unlinked and exist nowhere"
    assert "changed while it was being deleted: put back" in cluster.log("gpu-1")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_holder_that_cannot_vouch_is_replaced_and_then_the_source_goes(safety_cluster,
                                                                       tmp_path):
    """cpu-1 stays up and healthy, but every read of its copy fails (a dying disk): it can
    never vouch, and its replica row stays (it never said it has no copy). Counting rows,
    pressure pushes saw two copies and sent no third, cleanup saw one live vouch and
    deleted nothing: the disk filled for good. Counted live, a third copy goes to cpu-2,
    never back to cpu-1, and the source is deleted behind coord and cpu-2 (issue 11,
    item 7)."""
    cluster = safety_cluster(gpus=1, cpus=2, quota="64MiB", config=pressure_config())
    cluster.stop_node("cpu-2")  # so a's second copy goes to cpu-1
    body = os.urandom(200 * KIB)
    source = _on_two_holders(cluster, body)
    cluster.start_node("cpu-2")
    stored = cluster.stored("cpu-1", "gpu-1", REL)
    out = tmp_path / "strace.out"
    trace = strace_path(cluster.nodes["cpu-1"].proc.pid, out, stored, "read,pread64", "1+")
    try:
        fill(cluster, "gpu-1", "b", 350 * KIB)  # ~88 %: cleanup
        record = wait_for(lambda: deleted(cluster, "gpu-1").get(REL), 60,
                          what="a deleted behind two copies that vouch")
    finally:
        stop_strace(trace)
    assert injected(out), "cpu-1's reads of its copy never failed: the test proved nothing"
    assert sorted(record["vouched_by"]) == ["coord", "cpu-2"]
    assert {"coord", "cpu-2"} <= set(intact_copies(cluster, "gpu-1", REL, sha(body)))
