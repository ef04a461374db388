"""What must be on disk before ringsync moves on, seen in the syscalls a real node makes.

A power loss keeps only what was fsynced. A received file whose new directories were never
fsynced can vanish with its directory although the sender was told it is stored; a
deletion whose record was not synced can be forgotten after the source is gone (issue 11,
item 8). strace watches a running node; the order of its calls is the verdict.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.safety.conftest import KIB, deleted, fill, holders, pressure_config, sha, write
from tests.support.cluster import wait_for
from tests.support.strace import attach, stop_strace

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")]

CALL = re.compile(r"^\d+\s+(\w+)\((?:AT_FDCWD, )?(?:\d+<([^>]*)>|\"([^\"]*)\")")


def calls(out: Path) -> list[tuple[str, str]]:
    """(syscall, path) in order, for calls on a descriptor (``-y``) or a path; successful
    ones only."""
    found = []
    for line in out.read_text().splitlines():
        m = CALL.match(line)
        if m and not re.search(r"= -1 ", line):
            found.append((m.group(1), m.group(2) or m.group(3)))
    return found


def test_every_directory_made_for_a_received_file_is_fsynced_up_to_the_data_root(
        safety_cluster, tmp_path):
    cluster = safety_cluster(gpus=1, cpus=0, config={"scrub": {"enabled": False}})
    rel = "npz/deep/er/a.npz"
    root = cluster.data_root("coord")
    before = {p for p in root.rglob("*") if p.is_dir()}
    out = tmp_path / "strace.out"
    trace = attach(cluster.nodes["coord"].proc.pid, out, "fsync,fdatasync")
    try:
        body = os.urandom(64 * KIB)
        write(cluster, "gpu-1", rel, body)
        stored = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 30,
                          what="the copy stored on coord")
    finally:
        stop_strace(trace)
    made = [d for d in stored.parents if root in d.parents and d not in before]
    assert len(made) >= 2, f"the test made no new directories: {made}"
    synced = {path for call, path in calls(out) if call in ("fsync", "fdatasync")}
    missing = [str(d) for d in made if str(d) not in synced]
    missing += [str(d.parent) for d in made if str(d.parent) not in synced]
    assert not missing, f"new directories (or their parents) never fsynced: {missing}"
    assert str(stored.parent) in synced, "the directory that gained the file's name"


def test_a_deletion_is_recorded_with_a_synced_commit_before_its_intent_goes(
        safety_cluster, tmp_path):
    """The unlink of the source, then a synced commit of the manifest (``synchronous=FULL``
    fsyncs the WAL at commit; NORMAL does not), and only then the intent's removal."""
    cluster = safety_cluster(gpus=1, cpus=1, quota="64MiB", config=pressure_config())
    rel = "npz/k/a.npz"
    body = os.urandom(200 * KIB)
    write(cluster, "gpu-1", rel, body)
    fill(cluster, "gpu-1", "push", 360 * KIB)
    wait_for(lambda: holders(cluster, "gpu-1", rel, sha(body)) >= {"coord", "cpu-1"}, 45,
             what="a verified on coord and cpu-1")
    out = tmp_path / "strace.out"
    trace = attach(cluster.nodes["gpu-1"].proc.pid, out,
                   "fsync,fdatasync,unlink,unlinkat")
    try:
        fill(cluster, "gpu-1", "b", 350 * KIB)  # cleanup
        wait_for(lambda: deleted(cluster, "gpu-1").get(rel), 60, what="a deleted")
    finally:
        stop_strace(trace)
    seen = calls(out)
    trash = next(i for i, (c, p) in enumerate(seen) if c.startswith("unlink")
                 and "/.ringsync/deleting/" in p and not p.endswith(".json"))
    intent = next(i for i, (c, p) in enumerate(seen) if i > trash and c.startswith("unlink")
                  and "/.ringsync/deleting/" in p and p.endswith(".json"))
    between = [p for c, p in seen[trash:intent] if c in ("fsync", "fdatasync")]
    assert any(p.endswith("manifest.db-wal") for p in between), \
        f"no synced manifest commit between the unlink and the intent's removal: {between}"
