"""How fast does a GPU node under disk pressure free space, without losing data?

    .venv/bin/python bench/cleanup.py [--files 400] [--size-kib 64] [--tmpdir DIR] [--json] [--keep]

Two runs, each on a fresh coord + gpu-1 + cpu-1 (real ``ringsync --engine-only`` processes via
tests.support.cluster.Cluster): ``push.vouch_max_age_seconds`` 0 (holders re-hash their copy for
every vouch), then the default 60 (they answer from the hash made on receipt). Each run:

1. ``--files`` finished npz files of ``--size-kib`` KiB appear on gpu-1 (quota 4x the data,
   under push_percent); gpu-1 pushes them to coord, and once it has registered them a
   ``POST /v1/control/recover`` adds the copy on cpu-1. **replication**: files appearing ->
   every file with 2 verified holders besides gpu-1, as files/s and MB/s of copies (2 per
   file); **scan**: the part until gpu-1 had registered (hashed) them all.
2. gpu-1 restarts with a ``disk_quota`` its data fills to 95 %: it must delete ~21 % of the
   files (oldest first, each behind 2 live vouches) to get under 75 %. From its event log:
   **restart -> under 75 %**: process spawn to the CLEANUP_COMPLETED with ``percent_after`` < 75
   (start-up to /health shown apart); **deleted**: ARTIFACT_DELETED count, deletions/s and MB/s
   freed from the first to the last (the first one's own time is not in it); **mean per
   deletion**: DISK_PRESSURE_CHANGED to cleanup (right before the first run) to the last
   deletion, over the count; each **cleanup run**; **CPU**: user+sys s of each process
   meanwhile (the holders' share is what vouching costs them).
3. Not timed: every file must be on >= 2 nodes with its original SHA-256 (the bench hashes
   every copy), else DATA LOSS is printed and the exit status is 1.

Data roots live under --tmpdir (default: the system temp dir). Figures, never assertions.
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

from engine.paths import DataRoot  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402

GPU = "gpu-1"
PRESSURE, CLEANUP_PERCENT, TIMEOUT = 0.95, 75.0, 180.0
MB = 1e6


def events(cluster: Cluster, name: str, after: int = 0) -> list[dict[str, Any]]:
    """A node's logged events after seq ``after`` (a half-written last line is skipped)."""
    path = cluster.data_root(name) / ".ringsync" / "events.jsonl"
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out += [ev] if (ev := json.loads(line))["seq"] > after else []
        except json.JSONDecodeError:
            continue
    return out


def wait(cluster: Cluster, predicate: Callable[[], Any], what: str,
         timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` until truthy (its value); fails when a node exits or on timeout."""
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
    def stat(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {name: sum(map(int, stat(n.proc.pid)[11:13])) / os.sysconf("SC_CLK_TCK")
            for name, n in cluster.nodes.items() if n.proc is not None and n.proc.poll() is None}


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
        staging.mkdir()  # outside every data root: neither counted nor scanned
        (gpu_root / "npz" / "bench").mkdir(parents=True)
        shas: dict[str, str] = {}
        past = time.time() - 2  # already idle for finished_after_seconds when they appear
        for i in range(n):
            data, tmp = os.urandom(size), staging / f"f{i:05d}.npz"
            tmp.write_bytes(data)
            os.utime(tmp, (past + i / 1000, past + i / 1000))  # f00000 is the oldest
            shas[f"npz/bench/{tmp.name}"] = hashlib.sha256(data).hexdigest()
        t_written = time.time()
        for rel in shas:
            os.rename(staging / Path(rel).name, gpu_root / rel)
        wait(cluster, lambda: verified_twice(cluster)[0] >= n, "registration of every file")
        t_registered, kicks = time.time(), 0

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

        # The quota is config: restart gpu-1 with one its data fills to 95 %.
        used = DataRoot(gpu_root).used_bytes()  # what the quota is measured against
        seq = max((e["seq"] for e in events(cluster, GPU)), default=0)
        cluster.stop_node(GPU)
        cluster.settings["hosts"][GPU]["disk_quota"] = quota = int(used / PRESSURE)
        cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
        cpu_before = {**cpu_all(cluster), GPU: 0.0}
        t_restart = time.time()
        cluster.start_node(GPU)
        t_healthy = time.time()
        under = wait(cluster, lambda: next(
            (e for e in events(cluster, GPU, seq) if e["type"] == "CLEANUP_COMPLETED"
             and e["payload"]["percent_after"] < CLEANUP_PERCENT), None), "usage under 75 %")
        cpu = {k: v - cpu_before[k] for k, v in cpu_all(cluster).items()}
        after = [e for e in events(cluster, GPU, seq) if e["seq"] <= under["seq"]]
        gone = [e for e in after if e["type"] == "ARTIFACT_DELETED"]
        runs = [e["payload"] for e in after if e["type"] == "CLEANUP_COMPLETED"]
        level = next(e["ts"] for e in after if e["type"] == "DISK_PRESSURE_CHANGED"
                     and e["payload"]["level"] == "cleanup")
        span = gone[-1]["ts"] - gone[0]["ts"] if len(gone) > 1 else 0.0
        freed = sum(e["payload"]["bytes"] for e in gone)

        intact = {rel: sum(1 for node in cluster.nodes if (cluster.data_root(node) / rel).is_file()
                           and hashlib.sha256((cluster.data_root(node) / rel).read_bytes())
                           .hexdigest() == sha) for rel, sha in shas.items()}
        return {
            "vouch_max_age_seconds": max_age, "files": n, "bytes_per_file": size,
            "scan_seconds": t_registered - t_written, "recover_requests": kicks,
            "replication_seconds": t_two - t_written,
            "replication_files_per_s": n / (t_two - t_written),
            "replication_mb_per_s": 2 * n * size / MB / (t_two - t_written),
            "used_bytes": used, "new_quota_bytes": quota, "startup_seconds": t_healthy - t_restart,
            "percent_at_restart": runs[0]["percent_before"],
            "restart_to_under_75_seconds": under["ts"] - t_restart,
            "deleted": len(gone), "freed_bytes": freed, "deletion_span_seconds": span,
            "deletions_per_s": (len(gone) - 1) / span if span else None,
            "freed_mb_per_s": (freed - gone[0]["payload"]["bytes"]) / MB / span if span else None,
            "mean_seconds_per_deletion": (gone[-1]["ts"] - level) / len(gone) if gone else None,
            "cleanup_runs": [{k: v for k, v in r.items() if k not in ("node", "required")}
                             for r in runs],
            "cpu_seconds": cpu, "min_intact_copies": min(intact.values()),
            "files_under_2_intact_copies": sorted(rel for rel, k in intact.items() if k < 2),
        }
    finally:
        cluster.stop_all()


def report(r: dict[str, Any]) -> str:
    mib = r["files"] * r["bytes_per_file"] / 2**20
    rate = "" if r["deletions_per_s"] is None else (
        f": {r['deletions_per_s']:.1f} deletions/s, {r['freed_mb_per_s']:.2f} MB/s freed")
    lines = [
        ("replication to 2 verified copies:",
         f"{r['replication_seconds']:.2f} s for {r['files']} files ({mib:.1f} MiB): "
         f"{r['replication_files_per_s']:.1f} files/s, {r['replication_mb_per_s']:.2f} MB/s of "
         f"copies (scan {r['scan_seconds']:.2f} s, {r['recover_requests']} recover requests)"),
        ("restart -> under 75 %:", f"{r['restart_to_under_75_seconds']:.2f} s from "
         f"{r['percent_at_restart']}% of a {r['new_quota_bytes'] / 2**20:.2f} MiB quota "
         f"(process start to /health {r['startup_seconds']:.2f} s)"),
        ("deleted:", f"{r['deleted']} files ({100 * r['deleted'] / r['files']:.0f} %), "
         f"{r['freed_bytes'] / 2**20:.2f} MiB over {r['deletion_span_seconds']:.2f} s{rate}"),
        ("mean per deletion (cleanup level -> last):",
         f"{1000 * (r['mean_seconds_per_deletion'] or 0):.1f} ms"),
        *((f"cleanup run {i}:", f"deleted {c['deleted']}, {c['percent_before']}% -> "
           f"{c['percent_after']}% (short of copies {c['short_of_copies']}, unfinished "
           f"{c['unfinished']}, busy {c['busy']})") for i, c in enumerate(r["cleanup_runs"], 1)),
        ("CPU restart -> under 75 % (user+sys s):",
         ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_seconds"].items())),
        ("every file intact on >= 2 nodes:",
         ("NO: DATA LOSS" if r["files_under_2_intact_copies"] else "yes")
         + f" (fewest intact copies of any file: {r['min_intact_copies']})"),
    ]
    return "\n".join([f"vouch_max_age_seconds: {r['vouch_max_age_seconds']:g}"]
                     + [f"  {label:<44}{value}" for label, value in lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="files on gpu-1 (default 400)")
    parser.add_argument("--size-kib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep data roots and logs/")
    args = parser.parse_args(argv)
    if not 4 <= args.files <= 5000 or args.size_kib <= 0:
        parser.error("--files must be in 4..5000 and --size-kib positive")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and remove files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-cleanup-bench-", dir=args.tmpdir))
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
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
    wall = time.monotonic() - started
    print(json.dumps({"runs": runs, "data_lost": lost, "wall_seconds": wall}) if args.json
          else f"wall time: {wall:.1f} s")
    if lost:
        print(f"\n{'!' * 72}\nDATA LOSS: {len(lost)} files have fewer than 2 intact copies "
              f"(vouch_max_age {runs[-1]['vouch_max_age_seconds']:g}): {lost[:10]}\n{'!' * 72}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
