"""What does the background scrub cost a node, and how soon does it find a rotted copy?

    .venv/bin/python bench/scrub.py [--files 32] [--size-mib 64] [--fast-rate 2GiB]
        [--gentle-rate 16MiB] [--window 60] [--tmpdir DIR] [--json] [--keep]

A real coord + gpu-1 (``ringsync --engine-only`` processes via tests.support.cluster.Cluster,
bandwidth limit lifted, scrub disabled while filling): ``--files`` random npz files of
``--size-mib`` MiB appear on gpu-1, which pushes them to coord; coord then holds that many
stored copies (``<root>/npz/@gpu-1/bench/fNNNNN.v<sha16>.npz``). Then:

1. **idle baseline**: coord with the scrub still disabled, its CPU % over 20 s while the bench
   polls ``/status`` once a second (as it does in step 3).
2. **fast**: coord restarted with ``scrub.bytes_per_second: --fast-rate`` (unlimited-ish:
   the scrub hashes one copy after another at full speed, 5 s pause between passes). Its
   copies are dropped from the page cache first (``posix_fadvise(DONTNEED)``, these files
   only), so pass 1 reads from disk; pass 2 finds them cached (warm). Per pass: the engine's
   rate (``bytes_total / last_pass_seconds`` from ``/status`` ``scrub``), and coord's CPU
   (``/proc/<pid>/stat`` utime+stime) per GiB between the first and last copy of the pass
   (``/status`` polled every 0.1 s). Then one copy is rotted (bytes flipped in the middle,
   size and mtime kept) just after the scrub checked it, the worst case: **time to
   detection** (its REPLICA_QUARANTINED) and **time to repair** (the scrub asks gpu-1 to send
   it again; the copy is back and hashes right).
3. **gentle**: coord restarted (cache dropped again) with ``scrub.bytes_per_second:
   --gentle-rate`` (16 MiB/s is what the default ``pass_hours: 24`` works out to for ~1.3 TiB
   of stored copies): achieved rate, CPU s per GiB and CPU % over ``--window`` s, then the
   same worst-case rot.

``ringsync_hashed_bytes`` and ``ringsync_scrub_*`` from coord's /metrics are shown at the end.
Data roots live under --tmpdir (default: the system temp dir). Figures, never assertions.
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
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.cleanup import (  # noqa: E402
    GIB, GPU, MB, MIB, copy_file, cpu_seconds, events, evict, last_seq, metric,
    resident_bytes, sha256_of, start_cluster, wait, write_sources)
from engine.config.schema import Scrub  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402

COORD = "coord"
IDLE_BASELINE_SECONDS = 20.0


def size_bytes(text: str) -> int:
    """``2GiB``, ``16MiB``, ``1048576``: bytes, parsed by the engine's own config type."""
    return int(Scrub(bytes_per_second=text).bytes_per_second)


def on_coord(cluster: Cluster, shas: dict[str, str]) -> int:
    """gpu-1's files of which coord holds a verified copy (gpu-1's own view)."""
    arts = cluster.get_json(GPU, "/v1/artifacts?limit=5000")["artifacts"]
    return sum(1 for a in arts if a["path"].startswith("bench/") and any(
        r["node"] == COORD and r["verified_at"] and r["sha256"] == a["sha256"]
        for r in a["replicas"]))


def scrub_status(cluster: Cluster) -> dict[str, Any]:
    return cluster.get_json(COORD, "/status")["scrub"]


def restart_coord(cluster: Cluster, files: list[Path],
                  scrub: dict[str, Any]) -> tuple[int, int | None]:
    """Restart coord with ``scrub`` config and its copies dropped from the page cache first;
    returns its last event seq before the restart and the copies' bytes still cached."""
    seq = last_seq(cluster, COORD)
    cluster.stop_node(COORD)
    cluster.settings["scrub"] = scrub
    cluster.config_path.write_text(yaml.safe_dump(cluster.settings, sort_keys=False))
    evict(files)
    resident = resident_bytes(files)
    cluster.start_node(COORD)
    return seq, resident


def sample(cluster: Cluster) -> dict[str, Any]:
    st = scrub_status(cluster)
    return {"t": time.monotonic(), "cpu": cpu_seconds(cluster.nodes[COORD].proc.pid),
            "passes": st["passes"], "position": st["position"], "copies": st["copies"],
            "bytes_done": st["bytes_done"], "status": st}


def pass_figures(samples: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """Rate and CPU of pass ``number`` (1-based): the engine's own pass time, and coord's CPU
    between the first sample after its first scrubbed copy and the first sample after the
    pass ended (<= 0.1 s of the pause after it included)."""
    starts = sorted({s["status"]["pass_started_at"] for s in samples
                     if s["status"]["pass_started_at"] is not None})
    mine = [s for s in samples if s["status"]["pass_started_at"] == starts[number - 1]]
    first = next(s for s in mine if s["position"] > 0)
    last = next(s for s in mine if s["passes"] >= number)
    done = last["status"]
    span_bytes = done["bytes_total"] - first["bytes_done"]
    span_t, cpu = last["t"] - first["t"], last["cpu"] - first["cpu"]
    return {
        "pass": number, "bytes": done["bytes_total"], "pass_seconds": done["last_pass_seconds"],
        "engine_rate_mb_per_s": done["bytes_total"] / MB / done["last_pass_seconds"],
        "window_bytes": span_bytes, "window_seconds": span_t,
        "window_rate_mb_per_s": span_bytes / MB / span_t if span_t else None,
        "cpu_seconds": cpu, "cpu_seconds_per_gib": cpu / (span_bytes / GIB) if span_bytes else None,
        "cpu_percent": 100 * cpu / span_t if span_t else None,
    }


def rot_behind(cluster: Cluster, shas: dict[str, str], seq: int, poll: float,
               timeout: float) -> dict[str, Any]:
    """Flip bytes in the copy the scrub checked last (size and mtime kept); the time until
    coord's REPLICA_QUARANTINED for it, and until a good copy is back."""
    rels = sorted(shas)  # the scrub's order (origin, data_type, path)
    start = scrub_status(cluster)["position"]
    st = wait(cluster, lambda: (s := scrub_status(cluster))["position"] not in (0, start)
              and s["position"] < s["copies"] and s, "the scrub to check the next copy",
              timeout, interval=poll / 4)
    rel = rels[st["position"] - 1]
    file = copy_file(cluster, COORD, rel, shas[rel])
    before = os.stat(file)
    with open(file, "r+b") as f:
        f.seek(before.st_size // 2)
        block = f.read(4096)
        f.seek(before.st_size // 2)
        f.write(bytes(b ^ 0xFF for b in block))
        f.flush()
        os.fsync(f.fileno())
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(file)
    t_rot = time.time()
    found = wait(cluster, lambda: next(
        (e for e in events(cluster, COORD, seq) if e["type"] == "REPLICA_QUARANTINED"
         and e["payload"]["artifact"] == rel), None), f"detection of the rotted {rel}",
        timeout, interval=poll)
    wait(cluster, lambda: file.is_file() and sha256_of(file) == shas[rel], f"repair of {rel}",
         timeout, interval=0.25)
    t_repaired = time.time()
    return {"artifact": rel, "position_when_rotted": st["position"], "copies": st["copies"],
            "size_and_mtime_kept": (after.st_size, after.st_mtime_ns)
            == (before.st_size, before.st_mtime_ns),
            "seconds_to_detection": found["ts"] - t_rot,
            "seconds_to_repaired": t_repaired - t_rot,
            "quarantined_to": found["payload"].get("quarantined_to"),
            "mismatched_found": scrub_status(cluster)["findings"]["mismatched"]}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, size = args.files, args.size_mib * MIB
    fast, gentle = size_bytes(args.fast_rate), size_bytes(args.gentle_rate)
    data = n * size
    cluster = start_cluster(work, {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "scrub": {"enabled": False},
        "hosts": {GPU: {"disk_quota": 4 * data}}}, cpus=0)
    out: dict[str, Any] = {"files": n, "bytes_per_file": size, "fast_rate": fast,
                           "gentle_rate": gentle}
    try:
        t0 = time.time()
        shas = write_sources(cluster, n, size)
        fill_timeout = 180 + 2 * data / (20 * MB)
        wait(cluster, lambda: on_coord(cluster, shas) >= n, "coord holding every copy",
             fill_timeout, interval=0.5)
        out["fill_seconds"] = time.time() - t0
        files = [copy_file(cluster, COORD, rel, sha) for rel, sha in shas.items()]
        assert all(f.is_file() for f in files), "coord's copies are not where expected"

        # 1. idle baseline: scrub disabled, the same /status polling as the gentle window
        c0, t_0 = cpu_seconds(cluster.nodes[COORD].proc.pid), time.monotonic()
        while time.monotonic() - t_0 < IDLE_BASELINE_SECONDS:
            scrub_status(cluster)
            time.sleep(1.0)
        out["idle_cpu_percent"] = 100 * (cpu_seconds(cluster.nodes[COORD].proc.pid) - c0) / (
            time.monotonic() - t_0)

        # 2. fast
        seq, out["fast_resident_bytes_at_start"] = restart_coord(
            cluster, files, {"enabled": True, "bytes_per_second": fast})
        hashed0 = metric(cluster, COORD, "ringsync_hashed_bytes")
        samples: list[dict[str, Any]] = []
        timeout = 120 + 4 * data / (20 * MB)
        deadline = time.monotonic() + timeout
        while not samples or samples[-1]["passes"] < 2:
            samples.append(sample(cluster))
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than 2 scrub passes in {timeout:.0f}s: "
                                   f"{samples[-1]['status']}\n{cluster.log(COORD)}")
            time.sleep(0.1)
        out["fast_passes"] = [pass_figures(samples, 1), pass_figures(samples, 2)]
        out["fast_hashed_bytes"] = metric(cluster, COORD, "ringsync_hashed_bytes") - hashed0
        out["fast_rot"] = rot_behind(cluster, shas, seq, 0.05, timeout)

        # 3. gentle
        seq, out["gentle_resident_bytes_at_start"] = restart_coord(
            cluster, files, {"enabled": True, "bytes_per_second": gentle})
        first = wait(cluster, lambda: (s := sample(cluster))["position"] > 0 and s,
                     "the gentle scrub's first copy", 60, interval=0.05)
        hashed0 = metric(cluster, COORD, "ringsync_hashed_bytes")
        last = first
        while last["t"] - first["t"] < args.window:
            time.sleep(1.0)
            last = sample(cluster)
        moved = metric(cluster, COORD, "ringsync_hashed_bytes") - hashed0
        span, cpu = last["t"] - first["t"], last["cpu"] - first["cpu"]
        out["gentle"] = {
            "window_seconds": span, "bytes": moved,
            "rate_mb_per_s": moved / MB / span, "engine_rate": last["status"]["rate_bytes_per_second"],
            "cpu_seconds": cpu, "cpu_percent": 100 * cpu / span,
            "cpu_seconds_per_gib": cpu / (moved / GIB) if moved else None,
            "resident_bytes_after": resident_bytes(files)}
        out["gentle_rot"] = rot_behind(cluster, shas, seq, 0.5,
                                       120 + 3 * data / gentle)
        text = cluster.request(COORD, "GET", "/metrics").body.decode()
        out["metrics"] = [line for line in text.splitlines() if line.startswith(
            ("ringsync_scrub", "ringsync_hashed_bytes"))]
        out["default_rate_for_this_store"] = max(Scrub().min_bytes_per_second,
                                                 data / (Scrub().pass_hours * 3600))
        return out
    finally:
        cluster.stop_all()


def report(r: dict[str, Any]) -> str:
    def pass_line(p: dict[str, Any]) -> str:
        return (f"{p['engine_rate_mb_per_s']:.0f} MB/s ({p['bytes'] / GIB:.2f} GiB in "
                f"{p['pass_seconds']:.2f} s); between first and last copy "
                f"{p['window_rate_mb_per_s'] or 0:.0f} MB/s, CPU {p['cpu_seconds']:.2f} s = "
                f"{p['cpu_seconds_per_gib'] or 0:.2f} s/GiB ({p['cpu_percent'] or 0:.0f} % of a core)")

    def rot_line(rot: dict[str, Any]) -> str:
        return (f"{rot['artifact']} rotted right behind the scrub (position "
                f"{rot['position_when_rotted']}/{rot['copies']}, size+mtime kept: "
                f"{rot['size_and_mtime_kept']}): detected after {rot['seconds_to_detection']:.1f} s,"
                f" good copy back after {rot['seconds_to_repaired']:.1f} s "
                f"(quarantined to {rot['quarantined_to']})")

    g, res = r["gentle"], r["fast_resident_bytes_at_start"]
    total = r["files"] * r["bytes_per_file"]
    default = r["default_rate_for_this_store"]
    per_gib = g["cpu_seconds_per_gib"] or 0
    lines = [
        ("stored copies on coord:", f"{r['files']} x {r['bytes_per_file'] // MIB} MiB = "
         f"{total / GIB:.2f} GiB (filled in {r['fill_seconds']:.1f} s)"),
        ("idle CPU, scrub disabled:", f"{r['idle_cpu_percent']:.2f} % of a core"),
        (f"fast ({r['fast_rate'] / GIB:g} GiB/s) pass 1, cold:",
         pass_line(r["fast_passes"][0]) + ("" if res is None else
                                           f"; {res / MIB:.0f} MiB resident at start")),
        ("fast pass 2, warm:", pass_line(r["fast_passes"][1])),
        ("fast: ringsync_hashed_bytes over 2 passes:", f"{r['fast_hashed_bytes'] / GIB:.2f} GiB"),
        ("fast: rot:", rot_line(r["fast_rot"])),
        (f"gentle ({r['gentle_rate'] / MIB:g} MiB/s), cold:",
         f"{g['rate_mb_per_s']:.1f} MB/s achieved over {g['window_seconds']:.0f} s "
         f"({g['bytes'] / GIB:.2f} GiB), CPU {g['cpu_seconds']:.2f} s = {per_gib:.2f} s/GiB, "
         f"{g['cpu_percent']:.2f} % of a core (idle {r['idle_cpu_percent']:.2f} %)"),
        ("gentle: rot:", rot_line(r["gentle_rot"])),
        ("default pacing for this store:",
         f"{default / 1024:.0f} KiB/s (max(min_bytes_per_second, held / pass_hours)): a pass in "
         f"{total / default / 3600:.1f} h, ~{100 * per_gib * default / GIB:.3f} % of a core at "
         "the gentle run's CPU s/GiB"),
    ]
    return "\n".join([f"  {label:<44}{value}" for label, value in lines]
                     + ["  coord /metrics:"] + [f"    {m}" for m in r["metrics"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--fast-rate", default="2GiB")
    parser.add_argument("--gentle-rate", default="16MiB")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds the gentle rate is measured over (default 60)")
    parser.add_argument("--tmpdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep data roots and logs/")
    args = parser.parse_args(argv)
    if not 2 <= args.files <= 5000 or args.size_mib <= 0:
        parser.error("--files must be in 2..5000 and --size-mib positive")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-scrub-bench-", dir=args.tmpdir))
    need = 2 * args.files * args.size_mib * MIB + 2 * GIB
    if (free := shutil.disk_usage(work).free) < need:
        shutil.rmtree(work, ignore_errors=True)
        print(f"needs {need / GIB:.1f} GiB free under {work.parent}, has {free / GIB:.1f}",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        result = run(args, work)
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["wall_seconds"] = time.monotonic() - started
    print(json.dumps(result) if args.json else
          report(result) + f"\nwall time: {result['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
