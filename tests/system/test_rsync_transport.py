"""The rsync transport on a real cluster: real rsync over a real OpenSSH server (loopback).

gpu-1 pushes to a coordinator whose config says ``transport: rsync``: rsync over SSH into the
coordinator's staged path, then the coordinator hashes and publishes it itself. A host key
other than the configured one is refused; an rsync older than 3.4.3 is refused with one
line; bytes that are not the declared version are never published.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from engine.paths import staged_name
from engine.transport.ssh_setup import SshSetup
from tests.support.cluster import Cluster, embedded_node, until, wait_for
from tests.support.files import sha_of, write
from tests.support.sshd import SshServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]


def _host_key(server: SshServer) -> str:
    return " ".join(Path(f"{server.host_key}.pub").read_text().split()[:2])


def _rsync_cluster(tmp_path: Path, server: SshServer, host_key: str | None = None,
                   name: str = "c") -> Cluster:
    ssh = {"host": "127.0.0.1", "port": server.port, "user": server.user,
           "key": str(server.client_key), "host_key": host_key or _host_key(server)}
    return Cluster(tmp_path / name, gpus=1, config={
        "hosts": {"coord": {"transport": "rsync", "ssh": ssh}}})


def _failures(cluster: Cluster, rel: str) -> list[str]:
    return [e["payload"]["error"] for e in cluster.events("gpu-1", "DATA_SYNC_FAILED")
            if e["payload"]["artifact"] == rel]


@pytest.fixture
def sshd():
    with SshServer() as server:
        yield server


def test_a_push_goes_by_rsync_and_the_receiver_publishes_what_it_hashed(
        tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    try:
        cluster.start()
        body = os.urandom(3_000_000)
        write(cluster, "gpu-1", "npz/k/by_rsync.npz", body)
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/by_rsync.npz"), 30,
                        what="the copy by rsync")
        assert copy.read_bytes() == body and sha_of(copy) == sha_of(
            cluster.data_root("gpu-1") / "npz/k/by_rsync.npz")
        assert stat.S_IMODE(copy.stat().st_mode) == 0o644
        recent = cluster.status("gpu-1")["transfers"]["recent"]
        assert [t["transport"] for t in recent if t["artifact"] == "npz/k/by_rsync.npz"
                and t["error"] is None] == ["rsync"]
        arrived = [t for t in cluster.status("coord")["transfers"]["recent"]
                   if t["artifact"] == "npz/k/by_rsync.npz"]
        assert arrived[-1]["transport"] == "rsync" and arrived[-1]["error"] is None
        # the known_hosts the node wrote holds exactly the configured key
        known = (cluster.data_root("gpu-1") / ".ringsync/ssh/known_hosts").read_text()
        assert known == f"[127.0.0.1]:{sshd.port} {_host_key(sshd)}\n"
        # nothing staged is left behind
        incoming = cluster.data_root("coord") / ".ringsync/incoming"
        assert not list(incoming.glob("*.rsync"))
        assert _masters(cluster), "the push went through a shared master connection"
    finally:
        cluster.stop_all()
    assert _masters(cluster) == [], "a stopped node leaves no ssh master behind"


def _masters(cluster: Cluster) -> list[str]:
    """gpu-1's ssh master connections still running."""
    where = SshSetup("gpu-1", cluster.data_root("gpu-1").resolve() / ".ringsync", []).control_dir
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(where) in line and "[mux]" in line]


def test_the_receiver_publishes_only_staged_bytes_that_are_the_declared_version(
        tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    try:
        cluster.start(skip=("gpu-1",))
        body, other = os.urandom(200_000), os.urandom(200_000)
        sha = hashlib.sha256(body).hexdigest()
        rel = "hex8/staged.npz"
        incoming = cluster.data_root("coord") / ".ringsync" / "incoming"
        staged = incoming / staged_name("npz", rel, sha, "gpu-1")
        headers = {"X-Ringsync-Size": str(len(body)), "X-Ringsync-Sha256": sha,
                   "X-Ringsync-Origin": "gpu-1", "X-Ringsync-Source": "gpu-1"}
        nothing = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
        assert nothing.status == 404 and b"nothing staged" in nothing.body
        staged.write_bytes(other)  # what rsync read was not the version declared
        wrong = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
        assert wrong.status == 422 and b"sha256 mismatch" in wrong.body
        assert not staged.exists() and cluster.stored("coord", "gpu-1", f"npz/{rel}") is None
        staged.write_bytes(body)
        ok = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
        assert ok.status == 201 and ok.json()["sha256"] == sha, ok.body
        assert cluster.stored("coord", "gpu-1", f"npz/{rel}").read_bytes() == body
        again = cluster.request("coord", "POST", f"/v1/staged/npz/{rel}", headers=headers)
        assert again.status == 200 and again.json()["already_present"] is True
    finally:
        cluster.stop_all()


def test_a_host_presenting_another_key_is_refused(tmp_path: Path, sshd: SshServer) -> None:
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    cluster = _rsync_cluster(tmp_path, sshd, host_key=wrong)
    try:
        cluster.start()
        write(cluster, "gpu-1", "npz/k/refused.npz", os.urandom(100_000))
        [error, *_] = wait_for(lambda: _failures(cluster, "npz/k/refused.npz"), 30,
                               what="the refusal")
        assert "Host key verification failed" in error, error
        failed = cluster.events("gpu-1", "DATA_SYNC_FAILED")[0]["payload"]
        assert failed["retry_in_seconds"] is None  # not retried: the config must change
        assert cluster.stored("coord", "gpu-1", "npz/k/refused.npz") is None
        assert not list((cluster.data_root("coord") / ".ringsync/incoming").glob("*.rsync"))
    finally:
        cluster.stop_all()


def test_an_rsync_older_than_3_4_3_is_refused_with_one_line(tmp_path: Path,
                                                            sshd: SshServer) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "rsync").write_text("#!/bin/sh\necho 'rsync  version 3.2.7  protocol version 31'\n")
    (fake / "rsync").chmod(0o755)
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.env["gpu-1"] = {"PATH": f"{fake}:{os.environ['PATH']}"}
    try:
        cluster.start()
        write(cluster, "gpu-1", "npz/k/old.npz", os.urandom(100_000))
        [error, *_] = wait_for(lambda: _failures(cluster, "npz/k/old.npz"), 30,
                               what="the refusal")
        assert error.startswith("rsync 3.2.7 on this node (gpu-1) is older than 3.4.3"), error
        assert "\n" not in error
        assert cluster.stored("coord", "gpu-1", "npz/k/old.npz") is None
    finally:
        cluster.stop_all()


def _rsync_temp(cluster: Cluster) -> int:
    """Bytes of rsync's file in progress on coord (``.<name>.XXXXXX`` beside the staged name)."""
    incoming = cluster.data_root("coord") / ".ringsync" / "incoming"
    total = 0
    for path in incoming.glob(".*.rsync.*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_a_push_killed_at_40_percent_resumes_and_sends_only_the_rest(
        tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.settings["hosts"]["coord"]["bandwidth_mbps"] = 2  # 10 MB take 5 s
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    try:
        cluster.start()
        body = os.urandom(10_000_000)
        write(cluster, "gpu-1", "npz/k/resumed.npz", body)
        wait_for(lambda: _rsync_temp(cluster) >= 4_000_000, 30, interval=0.02,
                 what="40 % on the way")
        cluster.stop_node("gpu-1", signal.SIGKILL)  # its rsync dies with it (PDEATHSIG)
        partial = cluster.data_root("coord") / ".ringsync" / "incoming" / ".rsync-partial"
        kept = wait_for(lambda: sum(p.stat().st_size for p in partial.glob("*")), 15,
                        what="rsync's partial kept apart")
        assert 3_000_000 <= kept < 10_000_000
        assert cluster.stored("coord", "gpu-1", "npz/k/resumed.npz") is None
        assert not list(partial.parent.glob("*.rsync")), "nothing under the staged name"
        cluster.start_node("gpu-1")
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/resumed.npz"), 40,
                        what="the resumed copy")
        assert copy.read_bytes() == body
        [done] = [t for t in cluster.status("gpu-1")["transfers"]["recent"]
                  if t["artifact"] == "npz/k/resumed.npz" and t["error"] is None]
        assert done["transport"] == "rsync"
        assert done["offset"] >= kept - 1_000_000, done  # what the partial held was matched
        assert done["done"] <= 10_000_000 - kept + 1_000_000, done  # only the rest was sent
    finally:
        cluster.stop_all()


def test_a_corrupted_partial_is_never_published_and_the_resume_repairs_it(
        tmp_path: Path, sshd: SshServer) -> None:
    """The partial rsync kept is damaged (bit rot, a bad disk) before the resume: the
    damaged blocks match nothing and are sent again, and what is published hashes to the
    version (the receiver hashes it; a copy that did not would be refused, 422)."""
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.settings["hosts"]["coord"]["bandwidth_mbps"] = 2
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    try:
        cluster.start()
        body = os.urandom(8_000_000)
        write(cluster, "gpu-1", "npz/k/rotted.npz", body)
        wait_for(lambda: _rsync_temp(cluster) >= 3_000_000, 30, interval=0.02,
                 what="some of it on the way")
        cluster.stop_node("gpu-1", signal.SIGKILL)
        partial = cluster.data_root("coord") / ".ringsync" / "incoming" / ".rsync-partial"
        [kept] = wait_for(lambda: list(partial.glob("*")), 15, what="rsync's partial")
        size = kept.stat().st_size
        with open(kept, "r+b") as fh:  # rot 64 KiB in its middle
            fh.seek(size // 2)
            fh.write(bytes(b ^ 0xFF for b in fh.read(65_536)))
            fh.seek(size // 2)
        cluster.start_node("gpu-1")
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/rotted.npz"), 40,
                        what="the repaired copy")
        assert copy.read_bytes() == body
        [done] = [t for t in cluster.status("gpu-1")["transfers"]["recent"]
                  if t["artifact"] == "npz/k/rotted.npz" and t["error"] is None]
        assert done["done"] >= 8_000_000 - size + 60_000, done  # the rotted blocks again
        assert done["offset"] <= size - 60_000, done
        for stored in cluster.copies("coord", "gpu-1", "npz/k/rotted.npz"):
            assert stored.read_bytes() == body, f"{stored} holds rotted bytes"
    finally:
        cluster.stop_all()


def test_a_source_rewritten_during_the_transfer_is_never_published(
        tmp_path: Path, sshd: SshServer) -> None:
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.settings["hosts"]["coord"]["bandwidth_mbps"] = 2
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    try:
        cluster.start()
        first, second = os.urandom(6_000_000), os.urandom(6_000_000)
        source = write(cluster, "gpu-1", "npz/k/rewritten.npz", first)
        wait_for(lambda: _rsync_temp(cluster) >= 1_000_000, 30, interval=0.02,
                 what="the transfer under way")
        with open(source, "r+b") as fh:  # rewritten in place while rsync reads it
            fh.write(second)
        wait_for(lambda: cluster.stored("coord", "gpu-1", "npz/k/rewritten.npz"), 60,
                 what="the new version's copy")
        wait_for(lambda: _failures(cluster, "npz/k/rewritten.npz"), 30, what="the refusal")
        assert any("sha256 mismatch" in e for e in _failures(cluster, "npz/k/rewritten.npz"))
        for copy in cluster.copies("coord", "gpu-1", "npz/k/rewritten.npz"):
            assert copy.read_bytes() == second, f"{copy} holds bytes of no version"
    finally:
        cluster.stop_all()


async def test_the_seeds_sync_file_rsyncs_within_the_budget_and_verifies_by_sha256(
        tmp_path: Path, sshd: SshServer) -> None:
    from engine.bandwidth import get_bandwidth_coordinator

    cluster = _rsync_cluster(tmp_path, sshd)
    source = tmp_path / "selfplay.db"
    body = os.urandom(2_000_000)
    source.write_bytes(body)
    dest_dir = tmp_path / "remote" / "games"
    dest_dir.mkdir(parents=True)
    async with embedded_node(cluster, "gpu-1"):
        coordinator = get_bandwidth_coordinator()
        result = await coordinator.sync_file(source=str(source),
                                             dest=f"{sshd.user}@127.0.0.1:{dest_dir}/",
                                             host="coord")
        assert result.success and result.verified, result
        assert result.sha256 == hashlib.sha256(body).hexdigest()
        assert (dest_dir / "selfplay.db").read_bytes() == body
        assert result.bytes_transferred >= len(body) * 0.9  # nothing there before: all sent
        again = await coordinator.sync_file(source, f"{sshd.user}@127.0.0.1:{dest_dir}/x.db",
                                            "coord")
        assert again.success and (dest_dir / "x.db").read_bytes() == body
        elsewhere = await coordinator.sync_file(source, f"{sshd.user}@10.9.9.9:{dest_dir}/",
                                                "coord")
        assert not elsewhere.success and "must be" in elsewhere.error
        assert not list(dest_dir.glob(".*")), "no temp or partial left in the destination"


@pytest.mark.serial
async def test_http_and_rsync_to_one_host_share_its_one_budget(tmp_path: Path,
                                                              sshd: SshServer) -> None:
    """Two HTTP pushes and one rsync (sync_file) from gpu-1 to coord at once: the three draw
    from coord's one bucket, which /bandwidth/status shows with each one's allocation."""
    from engine.bandwidth import get_bandwidth_coordinator

    limit = 4.5
    cluster = _rsync_cluster(tmp_path, sshd)
    cluster.settings["hosts"]["coord"].update({"transport": "http", "bandwidth_mbps": limit})
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    size = 35_000_000
    for i in range(2):
        write(cluster, "gpu-1", f"npz/k/http_{i}.npz", os.urandom(size))
    source = tmp_path / "by_rsync.bin"
    source.write_bytes(os.urandom(size))
    dest = tmp_path / "remote"
    dest.mkdir()
    try:
        cluster.start(skip=("gpu-1",))
        async with embedded_node(cluster, "gpu-1") as node:
            await until(lambda: node.bandwidth.status()["hosts"].get("coord", {})
                        .get("active_transfers") == 2, 30, what="the two HTTP pushes")
            rsync = asyncio.create_task(get_bandwidth_coordinator().sync_file(
                source, f"{sshd.user}@127.0.0.1:{dest}/", "coord"))
            await until(lambda: node.bandwidth.status()["hosts"]["coord"]
                        ["active_transfers"] == 3, 15, what="the rsync too")
            await asyncio.sleep(2)  # rsync's ssh handshake is not part of the steady state
            samples = []
            for _ in range(21):  # a 10 s window, every 0.5 s
                host = node.bandwidth.status()["hosts"]["coord"]
                samples.append((asyncio.get_running_loop().time(),
                                {t["label"]: t["bytes"] for t in host["transfers"]}, host))
                await asyncio.sleep(0.5)
            assert any(label.startswith("sync_file") for label in samples[-1][1])
            assert samples[-1][2]["active_transfers"] == 3
            assert samples[-1][2]["per_transfer_mbps"] == pytest.approx(limit / 3)
            result = await rsync
        assert result.success and result.verified, result
    finally:
        cluster.stop_all()
    for start in (0,):  # the 10 s window
        (t0, b0, _), (t1, b1, _) = samples[start], samples[start + 20]
        shares = {label: (b1[label] - b0[label]) / (t1 - t0) / 1e6 for label in b1}
        total = sum(shares.values())
        print(f"window {start // 2}-{start // 2 + 10} s: {total:.3f} MB/s in all,",
              ", ".join(f"{k} {v:.3f}" for k, v in sorted(shares.items())))
        assert abs(total - limit) <= 0.05 * limit, (total, shares)
        for label, rate in shares.items():
            assert abs(rate - limit / 3) <= 0.15 * limit / 3, (label, rate, shares)
    assert (dest / "by_rsync.bin").read_bytes() == source.read_bytes()
