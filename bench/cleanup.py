"""How fast does a GPU node under disk pressure free space, without losing data?

    .venv/bin/python bench/cleanup.py [--files 400] [--size-kib 64] [--tmpdir DIR] [--json] [--keep]

Starts a real coordinator, gpu-1 and cpu-1 (each its own ``ringsync --engine-only``
process, via tests.support.cluster.Cluster), twice: once with ``push.vouch_max_age_seconds:
0`` (every holder re-hashes its copy for every vouch) and once with the default 60 (holders
answer from their own hashing made at receive time). In each run:

1. ``--files`` finished ``npz/bench/*.npz`` files of ``--size-kib`` KiB appear on gpu-1 at
   once; its quota is 4x the data, so usage stays under push_percent. gpu-1 pushes them
   to the coordinator on its own; as soon as it has registered them all, the bench asks it
   for a recovery (``POST /v1/control/recover``), which adds the copy on cpu-1.
   **replication**: from the files appearing to every file having 2 verified holders besides
   gpu-1 (its /v1/artifacts): files/s, and MB/s of copies written (2 per file). **scan** is
   the part until gpu-1 had registered (hashed) every file.
2. gpu-1 is stopped and started again with a ``disk_quota`` that puts its usage at 95 %, so
   its SyncPushDaemon must delete ~21 % of the files (oldest first, each behind 2 live
   vouches) to get under cleanup_percent (75 %). From gpu-1's event log:
   **restart -> under 75 %**: from spawning the process to the CLEANUP_COMPLETED whose
   ``percent_after`` is under 75 (process start-up included, shown separately);
   **deletions**: ARTIFACT_DELETED count, deletions/s and MB/s freed over the first-to-last
   deletion span; **mean per deletion**: from DISK_PRESSURE_CHANGED (level cleanup, emitted
   right before the first run) to the last ARTIFACT_DELETED, divided by the count;
   **runs**: every CLEANUP_COMPLETED (deleted, percent before -> after);
   **CPU**: user+sys seconds of each process over restart -> under 75 % (the holders'
   share is what vouching costs them: with max_age 0, one SHA-256 of the file per vouch).
3. Not timed: every file must be present with its original SHA-256 on at least 2 nodes
   (the bench hashes every copy on disk). Otherwise it prints DATA LOSS and exits 1.

The data roots live under --tmpdir (default: the system temp dir). Figures, never assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.cluster import Cluster  # noqa: E402

GPU = "gpu-1"
PRESSURE, CLEANUP_PERCENT, TIMEOUT = 0.95, 75.0, 180.0
MB = 1e6


def events(cluster: Cluster, name: str, after: int = 0) -> list[dict[str, Any]]:
    """A node's logged events after seq ``after`` (a half-written last line is skipped)."""
    path = cluster.data_root(name) / ".ringsync" / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ev for ev in map(json.loads, lines[:-1]) if ev["seq"] > after] + [
        ev for ev in map(json.loads, lines[-1:]) if lines[-1].endswith("}") and ev["seq"] > after]


def wait(cluster: Cluster, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        for node in cluster.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited:\n{cluster.log(node.name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f}s\n{cluster.log(GPU)}")
        time.sleep(0.1)
    return value


def cpu_all(cluster: Cluster) -> dict[str, float]:
    """User + system CPU seconds so far of each running node process (all threads)."""
    out = {}
    for name, node in cluster.nodes.items():
        if node.proc is not None and node.proc.poll() is None:
            with open(f"/proc/{node.proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def used_bytes(root: Path) -> int:
    """What the engine measures against a quota (engine.paths.DataRoot.used_bytes)."""
    state = str(root / ".ringsync")
    return sum(os.lstat(os.path.join(d, f)).st_size
               for d, _, files in os.walk(root) if d != state for f in files)


def verified_twice(cluster: Cluster) -> tuple[int, int]:
    """(artifacts gpu-1 registered, those with >= 2 verified holders besides gpu-1)."""
    arts = cluster.get_json(GPU, "/v1/artifacts?limit=5000")["artifacts"]
    return len(arts), sum(1 for a in arts if len({
        r["node"] for r in a["replicas"] if r["verified_at"] and r["sha256"] == a["sha256"]
        and r["node"] != GPU}) >= 2)


def start_cluster(root: Path, config: dict[str, Any], attempts: int = 3) -> Cluster:
    """coord + gpu-1 + cpu-1, started; retries when a picked port was taken meanwhile."""
    for attempt in range(1, attempts + 1):
        cluster = Cluster(root / f"try-{attempt}", gpus=1, cpus=1, config=config)
        try:
            cluster.start()
            return cluster
        except BaseException as exc:  # Ctrl-C during start-up stops what started, too
            cluster.stop_all()
            if not isinstance(exc, AssertionError) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def run_once(args: argparse.Namespace, work: Path, max_age: float) -> dict[str, Any]:
    size, n = args.size_kib * 1024, args.files
    cluster = start_cluster(work / f"vouch-max-age-{max_age:g}", {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "push": {"vouch_max_age_seconds": max_age},
        "hosts": {GPU: {"disk_quota": 4 * n * size}}})
    try:
        staging, gpu_root = cluster.root / "staging", cluster.data_root(GPU)
        staging.mkdir()  # outside every data root: not counted, not scanned
        shas: dict[str, str] = {}
        for i in range(n):
            data = os.urandom(size)
            (staging / f"f{i:05d}.npz").write_bytes(data)
            shas[f"npz/bench/f{i:05d}.npz"] = hashlib.sha256(data).hexdigest()
        past = time.time() - 2  # already idle for finished_after_seconds
        (gpu_root / "npz" / "bench").mkdir(parents=True)
        t_written = time.time()
        for i, rel in enumerate(shas):  # ascending mtime: f00000 is the oldest
            os.utime(staging / f"f{i:05d}.npz", (past + i * 1e-3, past + i * 1e-3))
            os.rename(staging / f"f{i:05d}.npz", gpu_root / rel)
        wait(cluster, lambda: verified_twice(cluster)[0] >= n, "registration of every file")
        t_registered = time.time()
        kicks = 0

        def replicated() -> bool:
            nonlocal kicks
            if verified_twice(cluster)[1] >= n:
                return True
            if time.time() - t_registered >= 3 * kicks:  # a recovery now and every 3 s
                kicks += 1
                resp = cluster.request(GPU, "POST", "/v1/control/recover",
                                       body=b'{"reason": "bench", "by": "bench"}')
                if resp.status != 202:
                    raise RuntimeError(f"recover answered {resp.status}: {resp.body[:200]!r}")
            return False

        wait(cluster, replicated, "2 verified copies of every file")
        t_two = time.time()

        used = used_bytes(gpu_root)
        quota = int(used / PRESSURE)
        seq = max((e["seq"] for e in events(cluster, GPU)), default=0)
        cluster.stop_node(GPU)
        cluster.settings["hosts"][GPU]["disk_quota"] = quota
        cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
        cpu_before = cpu_all(cluster)
        t_restart = time.time()
        cluster.start_node(GPU)
        t_healthy = time.time()
        cpu_before[GPU] = 0.0  # a new process
        under = wait(cluster, lambda: next(
            (e for e in events(cluster, GPU, seq) if e["type"] == "CLEANUP_COMPLETED"
             and e["payload"]["percent_after"] < CLEANUP_PERCENT), None), "usage under 75 %")
        cpu = {k: v - cpu_before[k] for k, v in cpu_all(cluster).items()}
        after = events(cluster, GPU, seq)
        gone = [e for e in after if e["type"] == "ARTIFACT_DELETED"]
        runs = [e["payload"] for e in after if e["type"] == "CLEANUP_COMPLETED"
                and e["seq"] <= under["seq"]]
        level = next(e["ts"] for e in after if e["type"] == "DISK_PRESSURE_CHANGED"
                     and e["payload"]["level"] == "cleanup")
        span = gone[-1]["ts"] - gone[0]["ts"] if len(gone) > 1 else 0.0
        freed = sum(e["payload"]["bytes"] for e in gone)

        roots = {name: cluster.data_root(name) for name in cluster.nodes}
        intact = {rel: sum(1 for root in roots.values() if (root / rel).is_file()
                           and hashlib.sha256((root / rel).read_bytes()).hexdigest() == sha) for rel, sha in shas.items()}
        short = sorted(rel for rel, k in intact.items() if k < 2)
        return {
            "vouch_max_age_seconds": max_age, "files": n, "bytes_per_file": size,
            "scan_seconds": t_registered - t_written,
            "replication_seconds": t_two - t_written, "recover_requests": kicks,
            "replication_files_per_s": n / (t_two - t_written),
            "replication_mb_per_s": 2 * n * size / MB / (t_two - t_written),
            "used_bytes": used, "new_quota_bytes": quota,
            "percent_at_restart": runs[0]["percent_before"] if runs else None,
            "startup_seconds": t_healthy - t_restart,
            "restart_to_under_75_seconds": under["ts"] - t_restart,
            "deleted": len(gone), "deleted_fraction": len(gone) / n, "freed_bytes": freed,
            "deletion_span_seconds": span,
            "deletions_per_s": (len(gone) - 1) / span if span else None,
            "freed_mb_per_s": freed / MB / span if span else None,
            "mean_seconds_per_deletion": (gone[-1]["ts"] - level) / len(gone) if gone else None,
            "cleanup_runs": [{k: r[k] for k in ("deleted", "freed_bytes", "percent_before",
                                                "percent_after", "short_of_copies", "unfinished",
                                                "busy")} for r in runs],
            "cpu_seconds": cpu, "min_intact_copies": min(intact.values()),
            "files_under_2_intact_copies": short,
        }
    finally:
        cluster.stop_all()


def report(r: dict[str, Any]) -> str:
    out = [f"vouch_max_age_seconds: {r['vouch_max_age_seconds']:g}"]

    def line(label: str, value: str) -> None:
        out.append(f"  {label:<44}{value}")

    mib = r["files"] * r["bytes_per_file"] / 2**20
    line("replication to 2 verified copies:",
         f"{r['replication_seconds']:.2f} s for {r['files']} files ({mib:.1f} MiB): "
         f"{r['replication_files_per_s']:.1f} files/s, {r['replication_mb_per_s']:.2f} MB/s "
         f"of copies (scan {r['scan_seconds']:.2f} s, {r['recover_requests']} recover requests)")
    line("restart at:", f"{r['percent_at_restart']}% of a {r['new_quota_bytes'] / 2**20:.2f} "
         f"MiB quota (start-up to /health {r['startup_seconds']:.2f} s)")
    line("restart -> under 75 %:", f"{r['restart_to_under_75_seconds']:.2f} s")
    rate = "-" if r["deletions_per_s"] is None else (
        f"{r['deletions_per_s']:.1f} deletions/s, {r['freed_mb_per_s']:.2f} MB/s freed")
    line("deleted:", f"{r['deleted']} files ({100 * r['deleted_fraction']:.0f} %), "
         f"{r['freed_bytes'] / 2**20:.2f} MiB over {r['deletion_span_seconds']:.2f} s: {rate}")
    line("mean per deletion (cleanup level -> last):",
         f"{1000 * (r['mean_seconds_per_deletion'] or 0):.1f} ms")
    for i, run in enumerate(r["cleanup_runs"], 1):
        line(f"cleanup run {i}:", f"deleted {run['deleted']}, {run['percent_before']}% -> "
             f"{run['percent_after']}% (short of copies {run['short_of_copies']}, unfinished "
             f"{run['unfinished']}, busy {run['busy']})")
    line("CPU restart -> under 75 % (user+sys s):",
         ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_seconds"].items()))
    line("every file intact on >= 2 nodes:", ("NO: DATA LOSS" if r["files_under_2_intact_copies"]
         else "yes") + f" (fewest intact copies of any file: {r['min_intact_copies']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="files on gpu-1 (default 400)")
    parser.add_argument("--size-kib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data roots and node logs (their path is printed)")
    args = parser.parse_args(argv)
    if not 4 <= args.files <= 5000:
        parser.error("--files must be in 4..5000")
    if args.size_kib <= 0:
        parser.error("--size-kib must be positive")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and remove files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-cleanup-bench-", dir=args.tmpdir))
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    try:
        for max_age in (0.0, 60.0):
            runs.append(run_once(args, work, max_age))
            if not args.json:
                print(report(runs[-1]), flush=True)
            if runs[-1]["files_under_2_intact_copies"]:
                break  # no point measuring the next run
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    lost = sorted({rel for r in runs for rel in r["files_under_2_intact_copies"]})
    if args.json:
        print(json.dumps({"runs": runs, "data_lost": lost,
                          "wall_seconds": time.monotonic() - started}))
    else:
        print(f"bench wall time: {time.monotonic() - started:.1f} s")
    if lost:
        print(f"\n{'!' * 72}\nDATA LOSS: {len(lost)} files have fewer than 2 intact copies "
              f"(vouch_max_age {runs[-1]['vouch_max_age_seconds']:g}): {lost[:10]}\n{'!' * 72}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
