"""How fast does ringsync push one big file between two real nodes, verified?

    .venv/bin/python bench/push_1gib.py [--size-mib 1024] [--chunk-mib 4] [--repeat 3]
                                         [--tmpdir DIR] [--json]

Starts a real coordinator and one real GPU node (each its own ``ringsync
--engine-only`` process, via tests.support.cluster.Cluster) with the bandwidth
limiter set far above loopback speed, drops a random ``npz/bench/<name>.npz`` into
the GPU node's data root and lets the AutoSyncDaemon find, hash and push it; then
pushes the same bytes under new names ``--repeat``-1 more times in the same cluster
(hard links: no new write, a new artifact each time). The figures come from the
nodes' own event logs (``<data_root>/.ringsync/events.jsonl``):

* receive: the coordinator's DATA_SYNC_COMPLETED ``seconds`` (start of the PUT
  body to the verified, fsynced rename) -- the push over HTTP with SHA-256
  verification at the receiver; the best push is the headline, all are listed;
* send: the GPU node's DATA_SYNC_COMPLETED ``seconds`` (HEAD probe + PUT, i.e. the
  push as the sender sees it, after its scan);
* scan+hash: from the moment the file appears under its final name (already
  "finished"; a cycle is kicked at once through the priority-sync endpoint) to the
  GPU node's DATA_SYNC_STARTED, which is emitted right after the scan that hashed it;
* CPU: user+system seconds of each node process (all threads) over each push, from
  /proc/<pid>/stat -- steadier than wall time on a shared machine.

Every received copy is hashed by the bench and must match the source's SHA-256.
The coordinator's peak memory is its VmHWM after the pushes (VmRSS before, for
contrast). In the same run it times plain ``rsync -a -e ssh`` of the same file to a
throwaway local OpenSSH server and one SHA-256 pass over it (bench/rsync_baseline.py).
Page cache is warm for everything (the file was just written). The data roots live
under --tmpdir: on a disk the receive includes the fsync of the whole object; with
``--tmpdir /dev/shm`` the disk is out of the figure. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.rsync_baseline import (  # noqa: E402
    MIB,
    per_gib,
    rsync_over_ssh_seconds,
    sha256_pass_seconds,
)
from tests.support.cluster import Cluster  # noqa: E402

COORD, GPU = "coord", "gpu-1"
EVENT_TIMEOUT = 900.0


def write_random_file(path: Path, size_mib: int) -> str:
    """Write ``size_mib`` MiB of random bytes, fsynced; returns their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size_mib):
            block = os.urandom(MIB)
            f.write(block)
            h.update(block)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def proc_status_kib(pid: int) -> dict[str, int]:
    """The Vm* lines of /proc/<pid>/status, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Vm"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def read_events(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    """Events from a node's JSONL log (a half-written last line is skipped)."""
    path = cluster.data_root(name) / ".ringsync" / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def wait_for_push(cluster: Cluster, artifact: str, after_seq: dict[str, int],
                  timeout: float) -> dict[str, dict[str, Any]]:
    """The events of one push: GPU's STARTED and COMPLETED, coordinator's receive COMPLETED."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while True:
        for name in (COORD, GPU):
            proc = cluster.nodes[name].proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{cluster.log(name)}")
            for ev in read_events(cluster, name):
                if ev["seq"] <= after_seq[name]:
                    continue
                p, kind = ev["payload"], ev["type"]
                if kind == "DATA_SYNC_FAILED" and p.get("artifact") == artifact:
                    raise RuntimeError(f"{name}: push failed: {p.get('error')}")
                if kind == "DATA_SYNC_STARTED" and name == GPU:
                    found.setdefault("sender_started", ev)
                elif kind == "DATA_SYNC_COMPLETED" and artifact in p.get("artifacts", []):
                    found.setdefault("receiver_completed" if name == COORD else "sender_completed",
                                     ev)
        if {"sender_started", "sender_completed", "receiver_completed"} <= found.keys():
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"no complete push of {artifact} within {timeout:.0f}s "
                               f"(saw {sorted(found)})\n{cluster.log(GPU)}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_cluster(root: Path, args: argparse.Namespace, config: dict[str, Any],
                  attempts: int = 3) -> Cluster:
    """A started coordinator + one GPU node; retries when a picked port was taken meanwhile."""
    for attempt in range(1, attempts + 1):
        cluster = Cluster(root, gpus=1, interval=args.interval,
                          finished_after=args.finished_after, config=config)
        if len({n.port for n in cluster.nodes.values()}) != len(cluster.nodes):
            continue  # free_port() handed out the same port twice
        try:
            cluster.start()
            return cluster
        except AssertionError:
            cluster.stop_all()
            if attempt == attempts:
                raise
        for node in cluster.nodes.values():
            shutil.rmtree(node.data_root, ignore_errors=True)
    raise RuntimeError("could not pick distinct free ports for the nodes")


def push_once(cluster: Cluster, source: Path, artifact: str, appeared: float,
              src_sha: str) -> dict[str, Any]:
    """Kick a sync cycle on the GPU node for ``source`` (already in place) and time it."""
    coord_pid, gpu_pid = cluster.nodes[COORD].proc.pid, cluster.nodes[GPU].proc.pid
    cpu_before = {COORD: cpu_seconds(coord_pid), GPU: cpu_seconds(gpu_pid)}
    load_before = os.getloadavg()[0]
    after_seq = {n: max((e["seq"] for e in read_events(cluster, n)), default=0)
                 for n in (COORD, GPU)}
    kick = cluster.request(GPU, "POST", "/v1/control/priority-sync",
                           body=json.dumps({"reason": "bench"}).encode(),
                           headers={"Content-Type": "application/json"})
    if kick.status != 202:
        raise RuntimeError(f"priority-sync answered {kick.status}: {kick.body[:200]!r}")
    ev = wait_for_push(cluster, artifact, after_seq, EVENT_TIMEOUT)
    cpu_after = {COORD: cpu_seconds(coord_pid), GPU: cpu_seconds(gpu_pid)}

    received = cluster.data_root(COORD) / artifact
    dst_sha = sha256_of(received)
    if dst_sha != src_sha:
        raise RuntimeError(f"coordinator's copy of {artifact} hashes to {dst_sha}, "
                           f"source is {src_sha}")
    received.unlink()  # verified; do not let repeats fill the disk (or RAM on tmpfs)
    recv = ev["receiver_completed"]
    return {
        "receive_seconds": float(recv["payload"]["seconds"]),
        "send_seconds": float(ev["sender_completed"]["payload"]["seconds"]),
        "scan_hash_seconds": ev["sender_started"]["ts"] - appeared,
        "end_to_end_seconds": recv["ts"] - appeared,
        "receiver_cpu_seconds": cpu_after[COORD] - cpu_before[COORD],
        "sender_cpu_seconds": cpu_after[GPU] - cpu_before[GPU],
        "loadavg_1min_before": load_before,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size_bytes = args.size_mib * MIB
    stem = f"blob-{uuid.uuid4().hex[:8]}"
    config = {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "transfer": {"chunk_bytes": int(args.chunk_mib * MIB),
                     "finished_after_seconds": args.finished_after},
        "auto_sync": {"interval_seconds": args.interval},
    }
    cluster = start_cluster(work / "cluster", args, config)
    try:
        gpu_root = cluster.data_root(GPU)
        # Written outside every data-type directory (the scanner never looks there),
        # then renamed into place already idle for finished_after: the scan that
        # finds it hashes it at once, so the scan+hash time is not the write time.
        staging = gpu_root / "bench-staging"
        staging.mkdir(parents=True, exist_ok=True)
        staged = staging / f"{stem}.npz"
        src_sha = write_random_file(staged, args.size_mib)
        idle_until = staged.stat().st_mtime + args.finished_after + 0.05
        time.sleep(max(0.0, idle_until - time.time()))
        (gpu_root / "npz" / "bench").mkdir(parents=True, exist_ok=True)

        coord_pid = cluster.nodes[COORD].proc.pid
        before = proc_status_kib(coord_pid)
        pushes: list[dict[str, Any]] = []
        first: Path | None = None
        for i in range(args.repeat):
            artifact = f"npz/bench/{stem}-{i}.npz"
            source = gpu_root / artifact
            appeared = time.time()
            if first is None:
                os.rename(staged, source)
                first = source
            else:  # the same bytes under a new name: a new artifact, no new 1 GiB write
                os.link(first, source)
            pushes.append(push_once(cluster, source, artifact, appeared, src_sha))
        after = proc_status_kib(coord_pid)
        assert first is not None
        hash_s = sha256_pass_seconds(first)
        cluster.stop_all()  # nodes idle from here on; free their CPU for rsync

        rsync_dst = work / "rsync-dst"
        rsync_s = rsync_over_ssh_seconds(first, rsync_dst)
        if (rsync_dst / first.name).stat().st_size != size_bytes:
            raise RuntimeError("rsync destination size differs from source")
        best = min(pushes, key=lambda p: p["receive_seconds"])
        return {
            "size_mib": args.size_mib, "chunk_mib": args.chunk_mib, "repeat": args.repeat,
            "tmpdir": str(args.tmpdir or tempfile.gettempdir()), "sha256": src_sha, "verified_copies": len(pushes),
            "receive_seconds": best["receive_seconds"],
            "receive_s_per_gib": per_gib(best["receive_seconds"], size_bytes),
            "receive_s_per_gib_median": per_gib(
                statistics.median(p["receive_seconds"] for p in pushes), size_bytes),
            "send_seconds": best["send_seconds"],
            "send_s_per_gib": per_gib(best["send_seconds"], size_bytes),
            "scan_hash_seconds": min(p["scan_hash_seconds"] for p in pushes),
            "scan_hash_s_per_gib": per_gib(min(p["scan_hash_seconds"] for p in pushes),
                                           size_bytes),
            "pushes": pushes,
            "receiver_vmhwm_mib": after["VmHWM"] / 1024,
            "receiver_vmrss_before_mib": before["VmRSS"] / 1024,
            "receiver_vmhwm_before_mib": before["VmHWM"] / 1024,
            "rsync_seconds": rsync_s, "rsync_s_per_gib": per_gib(rsync_s, size_bytes),
            "sha256_seconds": hash_s, "sha256_s_per_gib": per_gib(hash_s, size_bytes),
        }
    finally:
        cluster.stop_all()


def report(r: dict[str, Any]) -> str:
    mib, pushes = r["size_mib"], r["pushes"]

    def each(key: str) -> str:
        return " ".join(f"{p[key]:.2f}" for p in pushes)

    best_of = f"best of {len(pushes)}, " if len(pushes) > 1 else ""
    lines = [
        ("ringsync http push (sha256-verified at receiver):",
         (f"{r['receive_s_per_gib']:.2f} s/GiB ({mib} MiB in {r['receive_seconds']:.2f} s,"
          f" {best_of}chunk {r['chunk_mib']:g} MiB)")),
        ("  every push, receive s:",
         f"{each('receive_seconds')} (median {r['receive_s_per_gib_median']:.2f} s/GiB)"),
        ("  sender push (HEAD + PUT, after its scan) s:", each("send_seconds")),
        ("  sender scan+hash (in place -> STARTED) s:", each("scan_hash_seconds")),
        ("  end to end (in place -> verified copy) s:", each("end_to_end_seconds")),
        ("  receiver CPU (user+sys) during push s:", each("receiver_cpu_seconds")),
        ("  sender CPU (scan+hash+push) s:", each("sender_cpu_seconds")),
        ("  1-min load average before each push:",
         f"{each('loadavg_1min_before')} ({os.cpu_count()} CPUs)"),
        ("receiver peak memory (VmHWM):",
         f"{r['receiver_vmhwm_mib']:.0f} MiB (VmRSS before: {r['receiver_vmrss_before_mib']:.0f} MiB)"),
        ("rsync over ssh:",
         f"{r['rsync_s_per_gib']:.2f} s/GiB ({mib} MiB in {r['rsync_seconds']:.2f} s)"),
        ("one sha256 pass:",
         f"{r['sha256_s_per_gib']:.2f} s/GiB ({mib} MiB in {r['sha256_seconds']:.2f} s)"),
        ("coordinator copies match the source sha256:",
         f"{r['verified_copies']} of {len(pushes)} ({r['sha256'][:16]}...)"),
    ]
    return "\n".join(f"{label:<50}{value}" for label, value in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--chunk-mib", type=float, default=4.0,
                        help="transfer.chunk_bytes in MiB (default 4)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="auto_sync.interval_seconds (default 0.2)")
    parser.add_argument("--finished-after", type=float, default=0.3,
                        help="transfer.finished_after_seconds (default 0.3)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="pushes of the same bytes under new names in the same cluster;"
                             " the best is reported, all are listed (default 3)")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir;"
                             " /dev/shm takes the disk out of the figure)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 < args.chunk_mib <= 256:
        parser.error("--chunk-mib must be in (0, 256]")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and remove files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-push-bench-", dir=args.tmpdir))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
