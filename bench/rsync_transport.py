"""How fast does ringsync's rsync transport push one big file, next to the plain rsync CLI?

    .venv/bin/python bench/rsync_transport.py [--size-mib 1024] [--repeat 1] [--tmpdir DIR]
                                              [--json]

Starts a throwaway local OpenSSH server (tests.support.sshd.SshServer) and a real
coordinator + one real GPU node (each its own ``ringsync --engine-only`` process, via
tests.support.cluster.Cluster). The coordinator's host config says ``transport: rsync``
with an ``ssh`` block for that server (its host key pinned), so every push to it goes
through the rsync transport: HEAD probe, ``rsync`` over ssh through the node's metering
relay (``engine/transport/meter.py``) into the coordinator's incoming directory, then
``POST /v1/staged``, where the coordinator hashes the staged file itself and publishes
it. Pushes of one cycle go as one batch (``engine/transport/batch_rsync.py``); here the
batch holds the one file. The bandwidth limit for the coordinator is set far above
loopback (``hosts.coord.bandwidth_mbps: 100000``) so the limiter is not the figure.

A random ``npz/bench/<name>.npz`` is written outside the scanned directories, renamed
into place once it counts as finished, and a cycle is kicked through
``POST /v1/control/priority-sync`` (as bench/push_1gib.py does; its helpers are used).
``--repeat``-1 more pushes of the same bytes go under new names (hard links). The
figures come from the nodes' own event logs:

* transport push: the GPU node's DATA_SYNC_COMPLETED ``seconds`` (probe + rsync +
  the receiver's verify and publish, i.e. the push as the sender sees it, after its scan);
* receiver verify+publish: the coordinator's receive DATA_SYNC_COMPLETED ``seconds``
  (from the ``POST /v1/staged`` to the published copy: its SHA-256 of the staged file,
  fsync, rename); the rsync run is roughly the difference;
* scan+hash: the file appearing -> the GPU node's DATA_SYNC_STARTED;
* end to end: the file appearing -> the coordinator's receive DATA_SYNC_COMPLETED.

Every stored copy (``cluster.stored("coord", "gpu-1", rel)``) is hashed and must match
the source. Then, with the nodes stopped, the same file goes by plain
``rsync -a -e ssh`` to the same sshd (a fresh destination), and one SHA-256 pass over it
is timed (bench/rsync_baseline.py). The overhead ratio is transport / plain rsync. Page
cache is warm for everything. Figures, never assertions; exit 1 only if a copy is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.push_1gib import (  # noqa: E402
    COORD,
    EVENT_TIMEOUT,
    GPU,
    cpu_seconds,
    read_events,
    sha256_of,
    start_cluster,
    wait_for_push,
    write_random_file,
)
from bench.rsync_baseline import (  # noqa: E402
    MIB,
    per_gib,
    rsync_to_server_seconds,
    sha256_pass_seconds,
)
from tests.support.sshd import SshServer  # noqa: E402


class CopyMismatch(Exception):
    """A copy's bytes are not the source's."""


def host_key(server: SshServer) -> str:
    """The server's public host key, ``<type> <base64>`` (what ``ssh.host_key`` pins)."""
    return " ".join(Path(f"{server.host_key}.pub").read_text().split()[:2])


def rsync_config(server: SshServer, args: argparse.Namespace) -> dict[str, Any]:
    """Cluster config: coord takes pushes by rsync over ``server``, the limiter lifted."""
    return {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "transfer": {"finished_after_seconds": args.finished_after},
        "auto_sync": {"interval_seconds": args.interval},
        "hosts": {COORD: {"transport": "rsync", "bandwidth_mbps": 100000,
                          "ssh": {"host": server.host, "port": server.port,
                                  "user": server.user, "key": str(server.client_key),
                                  "host_key": host_key(server)}}},
    }


def push_once(cluster, artifact: str, appeared: float, src_sha: str) -> dict[str, Any]:
    """Kick a sync cycle on the GPU node for ``artifact`` (already in place) and time it."""
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

    stored = cluster.stored(COORD, GPU, artifact)
    if stored is None:
        raise CopyMismatch(f"coordinator reported {artifact} but holds no stored copy of it")
    dst_sha = sha256_of(stored)
    if dst_sha != src_sha:
        raise CopyMismatch(f"coordinator's copy {stored} hashes to {dst_sha}, "
                           f"source is {src_sha}")
    stored.unlink()  # verified; do not let repeats fill the disk
    recv, sent = ev["receiver_completed"], ev["sender_completed"]
    return {
        "push_seconds": float(sent["payload"]["seconds"]),
        "publish_seconds": float(recv["payload"]["seconds"]),
        "scan_hash_seconds": ev["sender_started"]["ts"] - appeared,
        "end_to_end_seconds": recv["ts"] - appeared,
        "receiver_cpu_seconds": cpu_after[COORD] - cpu_before[COORD],
        "sender_cpu_seconds": cpu_after[GPU] - cpu_before[GPU],
        "loadavg_1min_before": load_before,
    }


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size_bytes = args.size_mib * MIB
    stem = f"blob-{uuid.uuid4().hex[:8]}"
    with SshServer() as server:
        cluster = start_cluster(work / "cluster", args, rsync_config(server, args))
        try:
            gpu_root = cluster.data_root(GPU)
            staging = gpu_root / "bench-staging"  # not a data-type dir: never scanned
            staging.mkdir(parents=True, exist_ok=True)
            staged = staging / f"{stem}.npz"
            src_sha = write_random_file(staged, args.size_mib)
            idle_until = staged.stat().st_mtime + args.finished_after + 0.05
            time.sleep(max(0.0, idle_until - time.time()))
            (gpu_root / "npz" / "bench").mkdir(parents=True, exist_ok=True)

            pushes: list[dict[str, Any]] = []
            first: Path | None = None
            for i in range(args.repeat):
                artifact = f"npz/bench/{stem}-{i}.npz"
                source = gpu_root / artifact
                appeared = time.time()
                if first is None:
                    os.rename(staged, source)
                    first = source
                else:  # the same bytes under a new name: a new artifact, no new write
                    os.link(first, source)
                pushes.append(push_once(cluster, artifact, appeared, src_sha))
            assert first is not None
            health = cluster.request(GPU, "GET", "/health").json()
            batches = (health.get("details", {}).get("transport:rsync", {})
                       .get("details", {}).get("batches"))
            hash_s = sha256_pass_seconds(first)
            cluster.stop_all()  # nodes idle from here on; free their CPU for rsync

            rsync_dst = work / "rsync-dst"
            rsync_s = rsync_to_server_seconds(server, first, rsync_dst)
            if sha256_of(rsync_dst / first.name) != src_sha:
                raise CopyMismatch("plain rsync's copy does not hash to the source's SHA-256")
        finally:
            cluster.stop_all()
    best = min(pushes, key=lambda p: p["push_seconds"])
    return {
        "size_mib": args.size_mib, "size_bytes": size_bytes, "repeat": args.repeat,
        "tmpdir": str(args.tmpdir or tempfile.gettempdir()), "sha256": src_sha,
        "verified_copies": len(pushes), "pushes": pushes, "best": best,
        "rsync_batches": batches,
        "rsync_seconds": rsync_s, "sha256_seconds": hash_s,
        "overhead_push": best["push_seconds"] / rsync_s,
        "overhead_end_to_end": min(p["end_to_end_seconds"] for p in pushes) / rsync_s,
    }


def batches_text(totals: dict[str, int] | None) -> str:
    """``BatchRsync.totals`` as one phrase."""
    if not totals:
        return "(not reported)"
    return (f"{totals.get('batches')} ({totals.get('files')} files,"
            f" {totals.get('failed_files')} failed)")


def report(r: dict[str, Any]) -> str:
    mib, size, pushes, best = r["size_mib"], r["size_bytes"], r["pushes"], r["best"]

    def rate(seconds: float) -> str:
        return (f"{seconds:.2f} s, {size / seconds / 1e6:.0f} MB/s,"
                f" {per_gib(seconds, size):.2f} s/GiB")

    def each(key: str) -> str:
        return " ".join(f"{p[key]:.2f}" for p in pushes)

    best_of = f" (best of {len(pushes)})" if len(pushes) > 1 else ""
    e2e = min(p["end_to_end_seconds"] for p in pushes)
    lines = [
        (f"ringsync rsync transport push, {mib} MiB{best_of}:", rate(best["push_seconds"])),
        ("  every push (probe + rsync + publish) s:", each("push_seconds")),
        ("  receiver verify+publish (POST /v1/staged) s:", each("publish_seconds")),
        ("  so the rsync run itself, about s:",
         " ".join(f"{p['push_seconds'] - p['publish_seconds']:.2f}" for p in pushes)),
        ("  sender scan+hash (in place -> STARTED) s:", each("scan_hash_seconds")),
        ("  end to end (in place -> stored copy):", rate(e2e)),
        ("  receiver CPU (user+sys) during push s:", each("receiver_cpu_seconds")),
        ("  sender CPU (scan+hash+push, not rsync/ssh) s:", each("sender_cpu_seconds")),
        ("  rsync batches on gpu-1 (/health):", batches_text(r["rsync_batches"])),
        ("  1-min load average before each push:",
         f"{each('loadavg_1min_before')} ({os.cpu_count()} CPUs)"),
        ("plain rsync -a -e ssh, same sshd:", rate(r["rsync_seconds"])),
        ("one sha256 pass:", rate(r["sha256_seconds"])),
        ("overhead, transport push / plain rsync:", f"{r['overhead_push']:.2f}x"),
        ("overhead, end to end / plain rsync:", f"{r['overhead_end_to_end']:.2f}x"),
        ("stored copies match the source sha256:",
         f"{r['verified_copies']} of {len(pushes)} ({r['sha256'][:16]}...)"),
    ]
    return "\n".join(f"{label:<50}{value}" for label, value in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pushes of the same bytes under new names (default 1)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="auto_sync.interval_seconds (default 0.2)")
    parser.add_argument("--finished-after", type=float, default=0.3,
                        help="transfer.finished_after_seconds (default 0.3)")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and remove files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-rsync-bench-", dir=args.tmpdir))
    try:
        result = run(args, work)
    except CopyMismatch as exc:
        print(f"COPY WRONG: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
