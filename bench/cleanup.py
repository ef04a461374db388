"""What does deleting behind live vouches cost, now that every vouch re-hashes the copy?

    .venv/bin/python bench/cleanup.py [--small-files 400] [--small-kib 64] [--big-files 8]
        [--big-mib 256] [--big-cleanup-percent 30] [--concurrency 2,1] [--only small|big]
        [--warm] [--tmpdir DIR] [--json] [--keep]

Every run is a fresh coord + gpu-1 + cpu-1 (real ``ringsync --engine-only`` processes via
tests.support.cluster.Cluster, bandwidth limit lifted, the default scrub config). A holder
asked to vouch for a deletion always re-reads and hashes its stored copy
(``engine.server.vouch``), within its ``push.hash_concurrency`` hash slots. The runs:
``--small-files`` x ``--small-kib`` KiB with the default hash_concurrency (2), then
``--big-files`` x ``--big-mib`` MiB once per ``--concurrency`` value. Each run:

1. The files appear on gpu-1 (quota 4x the data, under push_percent); gpu-1 pushes them to
   coord, and a ``POST /v1/control/recover`` adds the copy on cpu-1 (asked again while copies
   are missing; each request itself has every holder re-hash every copy it holds, since
   recovery counts by live vouches). **replication**: files appearing -> every file with 2
   verified holders besides gpu-1.
2. gpu-1 restarts with a ``disk_quota`` its data fills to 95 % (and, for the big files,
   ``push.cleanup_percent`` ``--big-cleanup-percent`` so that more than 2 files go): it
   deletes the oldest files, each behind live vouches, until under cleanup_percent. Unless
   ``--warm``, the holders' copies are dropped from the page cache first
   (``posix_fadvise(DONTNEED)``, these files only), so every vouch reads from disk.
   From gpu-1's event log: **deleted** (ARTIFACT_DELETED) and **deletions/s** over the
   **deletion window** (DISK_PRESSURE_CHANGED to ``cleanup``, right before the first run,
   to the last deletion); **holders vouched per deletion** (``vouched_by``); **vouched
   bytes** = file size x holders that vouched, and **seconds per GiB vouched** = window /
   vouched GiB; the holders' own ``ringsync_hashed_bytes`` over the same restart (vouches
   plus anything else they hashed); **CPU** user+sys s of each process meanwhile.
3. Not timed: every deleted source must have >= 2 intact copies on disk (the bench hashes
   each stored version, ``DataRoot.copy_path``) and every other file >= 2 intact copies
   counting its source, else DATA LOSS is printed and the exit status is 1.

Data roots live under --tmpdir (default: the system temp dir); each run's are removed when
it ends. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
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
HOLDERS = ("coord", "cpu-1")
PRESSURE, TIMEOUT = 0.95, 180.0
MB, MIB, GIB = 1e6, 2**20, 2**30


# -- helpers shared with bench/scrub.py -----------------------------------------------------
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


def last_seq(cluster: Cluster, name: str) -> int:
    return max((e["seq"] for e in events(cluster, name)), default=0)


def wait(cluster: Cluster, predicate: Callable[[], Any], what: str,
         timeout: float = TIMEOUT, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy (its value); fails when a node exits or on timeout."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        for node in cluster.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited:\n{cluster.log(node.name)}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{cluster.log(n)[-1500:]}" for n in cluster.nodes)
            raise RuntimeError(f"no {what} within {timeout:.0f}s\n{logs}")
        time.sleep(interval)
    return value


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all(cluster: Cluster) -> dict[str, float]:
    """``cpu_seconds`` of each running node process."""
    return {name: cpu_seconds(n.proc.pid) for name, n in cluster.nodes.items()
            if n.proc is not None and n.proc.poll() is None}


def metric(cluster: Cluster, name: str, family: str) -> float:
    """The value of ``family`` (a counter, with or without ``_total``) in ``name``'s /metrics."""
    text = cluster.request(name, "GET", "/metrics").body.decode()
    pattern = re.compile(rf"^{re.escape(family)}(?:_total)?(?:\{{[^}}]*\}})? (\S+)$", re.M)
    found = pattern.search(text)
    return float(found.group(1)) if found else float("nan")


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (only these files; dirty pages are written first)."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(files: list[Path]) -> int | None:
    """Bytes of ``files`` in the page cache (util-linux ``fincore``), or None without it."""
    if not files or shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                          *map(str, files)], capture_output=True, text=True)
    return sum(int(x) for x in out.stdout.split() if x.isdigit()) if out.returncode == 0 else None


def start_cluster(root: Path, config: dict[str, Any], cpus: int = 1,
                  attempts: int = 3) -> Cluster:
    """coord + gpu-1 (+ ``cpus`` cpu nodes), started; retries when a picked port was taken."""
    for attempt in range(1, attempts + 1):
        cluster = Cluster(root / f"try-{attempt}", gpus=1, cpus=cpus, config=config)
        try:
            cluster.start()
            return cluster
        except BaseException as exc:  # Ctrl-C during start-up stops what started, too
            cluster.stop_all()
            if not isinstance(exc, AssertionError) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def write_sources(cluster: Cluster, n: int, size: int) -> dict[str, str]:
    """``n`` random finished npz files of ``size`` bytes, written outside every data root
    and then renamed into gpu-1's ``npz/bench/`` at once (f00000 the oldest); {rel: sha256}."""
    staging, gpu_root = cluster.root / "staging", cluster.data_root(GPU)
    staging.mkdir()  # outside every data root: neither counted nor scanned
    (gpu_root / "npz" / "bench").mkdir(parents=True)
    shas: dict[str, str] = {}
    past = time.time() - 2  # already idle for finished_after_seconds when they appear
    for i in range(n):
        tmp, h = staging / f"f{i:05d}.npz", hashlib.sha256()
        with open(tmp, "wb") as f:
            for left in range(size, 0, -4 * MIB):
                block = os.urandom(min(left, 4 * MIB))
                f.write(block)
                h.update(block)
        os.utime(tmp, (past + i / 1000, past + i / 1000))
        shas[f"npz/bench/{tmp.name}"] = h.hexdigest()
    for rel in shas:
        os.rename(staging / Path(rel).name, gpu_root / rel)
    return shas


def copy_file(cluster: Cluster, node: str, rel: str, sha: str) -> Path:
    """Where ``node`` stores gpu-1's version ``sha`` of ``rel`` (the engine's own naming)."""
    data_type, _, path = rel.partition("/")
    return DataRoot(cluster.data_root(node)).copy_path(GPU, data_type, path, sha)


def sha256_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


# -- one run --------------------------------------------------------------------------------
def verified_twice(cluster: Cluster) -> tuple[int, int]:
    """(artifacts gpu-1 registered, those with >= 2 verified holders besides gpu-1)."""
    arts = cluster.get_json(GPU, "/v1/artifacts?limit=5000")["artifacts"]
    return len(arts), sum(1 for a in arts if len({
        r["node"] for r in a["replicas"] if r["verified_at"] and r["sha256"] == a["sha256"]
        and r["node"] != GPU}) >= 2)


def run_once(work: Path, label: str, n: int, size: int, hash_concurrency: int,
             cleanup_percent: float, warm: bool) -> dict[str, Any]:
    data = n * size
    timeout = TIMEOUT + 3 * data / (20 * MB)  # big files: ~20 MB/s per copy, worst case
    cluster = start_cluster(work / label, {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "push": {"hash_concurrency": hash_concurrency},
        "hosts": {GPU: {"disk_quota": 4 * data}}})
    try:
        t_written = time.time()
        shas = write_sources(cluster, n, size)
        t_appeared = time.time()
        wait(cluster, lambda: verified_twice(cluster)[0] >= n, "registration of every file",
             timeout)
        t_registered, kicks, last_kick = time.time(), 0, 0.0
        hashed0 = {h: metric(cluster, h, "ringsync_hashed_bytes") for h in HOLDERS}
        # a recovery request makes every holder re-hash every copy: ask again only after
        # that much hashing could have finished
        rekick = 3.0 + data / (50 * MB)

        def replicated() -> bool:
            nonlocal kicks, last_kick
            if verified_twice(cluster)[1] >= n:
                return True
            if time.time() - last_kick >= rekick:
                kicks, last_kick = kicks + 1, time.time()
                resp = cluster.request(GPU, "POST", "/v1/control/recover", timeout=timeout,
                                       body=b'{"reason": "bench", "by": "bench"}')
                if resp.status != 202:
                    raise RuntimeError(f"recover answered {resp.status}: {resp.body[:200]!r}")
            return False

        wait(cluster, replicated, "2 verified copies of every file", timeout, interval=0.25)
        t_two = time.time()
        hashed_repl = {h: metric(cluster, h, "ringsync_hashed_bytes") - hashed0[h]
                       for h in HOLDERS}

        # The quota is config: restart gpu-1 with one its data fills to 95 %.
        gpu_root = cluster.data_root(GPU)
        used = DataRoot(gpu_root).used_bytes()  # what the quota is measured against
        seq = last_seq(cluster, GPU)
        cluster.stop_node(GPU)
        settings = cluster.settings
        settings["hosts"][GPU]["disk_quota"] = quota = int(used / PRESSURE)
        if cleanup_percent != 75.0:
            settings["push"].update(push_percent=cleanup_percent / 3,
                                    urgent_percent=2 * cleanup_percent / 3,
                                    cleanup_percent=cleanup_percent)
        cluster.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
        held = [copy_file(cluster, h, rel, sha) for h in HOLDERS for rel, sha in shas.items()]
        if not warm:
            evict(held)
        resident = resident_bytes(held)
        hashed_before = {h: metric(cluster, h, "ringsync_hashed_bytes") for h in HOLDERS}
        cpu_before = {**cpu_all(cluster), GPU: 0.0}
        t_restart = time.time()
        cluster.start_node(GPU)
        t_healthy = time.time()
        under = wait(cluster, lambda: next(
            (e for e in events(cluster, GPU, seq) if e["type"] == "CLEANUP_COMPLETED"
             and e["payload"]["percent_after"] < cleanup_percent), None),
            f"usage under {cleanup_percent:g} %", timeout)
        cpu = {k: v - cpu_before[k] for k, v in cpu_all(cluster).items()}
        hashed = {h: metric(cluster, h, "ringsync_hashed_bytes") - hashed_before[h]
                  for h in HOLDERS}
        after = [e for e in events(cluster, GPU, seq) if e["seq"] <= under["seq"]]
        gone = [e for e in after if e["type"] == "ARTIFACT_DELETED"]
        runs = [e["payload"] for e in after if e["type"] == "CLEANUP_COMPLETED"]
        level = next(e["ts"] for e in after if e["type"] == "DISK_PRESSURE_CHANGED"
                     and e["payload"]["level"] == "cleanup")
        window = gone[-1]["ts"] - level if gone else 0.0
        freed = sum(e["payload"]["bytes"] for e in gone)
        per = [len(e["payload"]["vouched_by"]) for e in gone]
        vouched = sum(e["payload"]["bytes"] * k for e, k in zip(gone, per))

        deleted = {e["payload"]["artifact"] for e in gone}
        intact: dict[str, int] = {}
        short: list[str] = []
        for rel, sha in shas.items():
            copies = sum(sha256_of(copy_file(cluster, h, rel, sha)) == sha for h in HOLDERS)
            source = sha256_of(gpu_root / rel) == sha
            intact[rel] = copies + source
            if (rel in deleted and copies < 2) or intact[rel] < 2:
                short.append(rel)
        return {
            "label": label, "files": n, "bytes_per_file": size,
            "hash_concurrency": hash_concurrency, "page_cache": "warm" if warm else "evicted",
            "holder_copies_resident_bytes": resident, "holder_copies_bytes": len(held) * size,
            "write_seconds": t_appeared - t_written, "scan_seconds": t_registered - t_appeared,
            "recover_requests": kicks, "replication_seconds": t_two - t_appeared,
            "replication_mb_per_s": 2 * data / MB / (t_two - t_appeared),
            "holders_hashed_bytes_replication": hashed_repl,
            "used_bytes": used, "new_quota_bytes": quota, "cleanup_percent": cleanup_percent,
            "startup_seconds": t_healthy - t_restart,
            "percent_at_restart": runs[0]["percent_before"],
            "restart_to_under_seconds": under["ts"] - t_restart,
            "deleted": len(gone), "freed_bytes": freed, "deletion_window_seconds": window,
            "deletions_per_s": len(gone) / window if window else None,
            "ms_per_deletion": 1000 * window / len(gone) if gone else None,
            "holders_vouched_per_deletion": {"min": min(per, default=0),
                                             "max": max(per, default=0),
                                             "mean": sum(per) / len(per) if per else 0},
            "vouched_bytes": vouched,
            "seconds_per_gib_vouched": window / (vouched / GIB) if vouched else None,
            "holders_hashed_bytes": hashed,
            "cleanup_runs": [{k: v for k, v in r.items() if k not in ("node", "required")}
                             for r in runs],
            "cpu_seconds": cpu,
            "holder_cpu_seconds_per_gib_vouched":
                sum(cpu.get(h, 0.0) for h in HOLDERS) / (vouched / GIB) if vouched else None,
            "min_intact_copies": min(intact.values()),
            "files_short_of_intact_copies": sorted(short),
        }
    finally:
        cluster.stop_all()
        for big in ("nodes", "staging"):  # the data; logs/ stay for --keep
            shutil.rmtree(cluster.root / big, ignore_errors=True)


def fmt_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


def report(r: dict[str, Any]) -> str:
    v = r["holders_vouched_per_deletion"]
    res = r["holder_copies_resident_bytes"]
    cache = r["page_cache"] + ("" if res is None else
                               f", {res / MIB:.1f} of {r['holder_copies_bytes'] / MIB:.0f} MiB"
                               " of holder copies resident at restart")
    lines = [
        ("replication to 2 verified copies:",
         f"{r['replication_seconds']:.1f} s, {r['replication_mb_per_s']:.1f} MB/s of copies "
         f"(scan {r['scan_seconds']:.1f} s, {r['recover_requests']} recover requests; holders "
         "hashed " + ", ".join(f"{h} {b / MIB:.1f} MiB"
                               for h, b in r["holders_hashed_bytes_replication"].items()) + ")"),
        ("restart -> under cleanup_percent:",
         f"{r['restart_to_under_seconds']:.2f} s from {r['percent_at_restart']}% to under "
         f"{r['cleanup_percent']:g}% (process start to /health {r['startup_seconds']:.2f} s)"),
        ("deleted:", f"{r['deleted']} files ({100 * r['deleted'] / r['files']:.0f} %), "
         f"{r['freed_bytes'] / MIB:.1f} MiB in {r['deletion_window_seconds']:.2f} s"),
        ("deletions per second:", f"{r['deletions_per_s'] or 0:.2f} "
         f"({r['ms_per_deletion'] or 0:.1f} ms per deletion)"),
        ("holders vouched per deletion:", f"{v['mean']:.2f} (min {v['min']}, max {v['max']})"),
        ("vouched (size x holders that re-hashed):",
         f"{r['vouched_bytes'] / GIB:.3f} GiB: {r['seconds_per_gib_vouched'] or 0:.2f} s per GiB"
         " vouched"),
        ("holders' ringsync_hashed_bytes meanwhile:",
         ", ".join(f"{h} {b / GIB:.3f} GiB" for h, b in r["holders_hashed_bytes"].items())),
        *((f"cleanup run {i}:", f"deleted {c['deleted']}, {c['percent_before']}% -> "
           f"{c['percent_after']}% (short of copies {c['short_of_copies']}, unfinished "
           f"{c['unfinished']}, busy {c['busy']})") for i, c in enumerate(r["cleanup_runs"], 1)),
        ("CPU restart -> under (user+sys s):",
         ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_seconds"].items())
         + (f"; holders {r['holder_cpu_seconds_per_gib_vouched']:.2f} s per GiB vouched"
            if r["holder_cpu_seconds_per_gib_vouched"] is not None else "")),
        ("nothing lost (>= 2 intact copies):",
         ("NO: DATA LOSS" if r["files_short_of_intact_copies"] else "yes")
         + f" (fewest intact copies of any file: {r['min_intact_copies']})"),
    ]
    head = (f"{r['label']}: {r['files']} x {fmt_size(r['bytes_per_file'])}, "
            f"hash_concurrency {r['hash_concurrency']}, holder page cache {cache}")
    return "\n".join([head] + [f"  {label:<44}{value}" for label, value in lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-files", type=int, default=400)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--big-files", type=int, default=8)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--big-cleanup-percent", type=float, default=30.0,
                        help="push.cleanup_percent for the big-file runs (default 30, so "
                        "that ~70 %% of the files go)")
    parser.add_argument("--concurrency", default="2,1",
                        help="push.hash_concurrency values for the big-file runs (default 2,1)")
    parser.add_argument("--only", choices=("small", "big"), default=None)
    parser.add_argument("--warm", action="store_true",
                        help="leave the holders' copies in the page cache")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep logs/ (data roots go)")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    plan = []
    if args.only != "big":
        plan.append(("small", args.small_files, args.small_kib * 1024, 2, 75.0))
    if args.only != "small":
        plan += [(f"big-hc{c}", args.big_files, args.big_mib * MIB, c, args.big_cleanup_percent)
                 for c in concurrency]
    if any(not 4 <= n <= 5000 or size <= 0 for _, n, size, _, _ in plan):
        parser.error("file counts must be in 4..5000 and sizes positive")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-cleanup-bench-", dir=args.tmpdir))
    need = max(3 * n * size for _, n, size, _, _ in plan) + 2 * GIB
    free = shutil.disk_usage(work).free
    if free < need:
        shutil.rmtree(work, ignore_errors=True)
        print(f"needs {need / GIB:.1f} GiB free under {work.parent}, has {free / GIB:.1f}",
              file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for label, n, size, hc, percent in plan:
            runs.append(run_once(work, label, n, size, hc, percent, args.warm))
            if not args.json:
                print(report(runs[-1]), flush=True)
            if runs[-1]["files_short_of_intact_copies"]:
                break  # no point measuring the next run
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    lost = sorted({rel for r in runs for rel in r["files_short_of_intact_copies"]})
    wall = time.monotonic() - started
    print(json.dumps({"runs": runs, "data_lost": lost, "wall_seconds": wall}) if args.json
          else f"wall time: {wall:.1f} s")
    if lost:
        print(f"\n{'!' * 72}\nDATA LOSS: {len(lost)} files have fewer than 2 intact copies "
              f"({runs[-1]['label']}): {lost[:10]}\n{'!' * 72}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
