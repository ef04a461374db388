"""How many small files per second does a GPU node push to the coordinator, HTTP vs rsync?

    .venv/bin/python bench/many_files.py [--files 1000] [--size-kib 64]
                                         [--transports http,rsync] [--tmpdir DIR] [--json]

For each transport a fresh coordinator + one GPU node (each its own ``ringsync
--engine-only`` process, via tests.support.cluster.Cluster), the bandwidth limit lifted
far above loopback (``hosts.coord.bandwidth_mbps: 100000``):

* ``http``: the default transport, one ``PUT /v1/objects`` per file;
* ``rsync``: the coordinator's host config says ``transport: rsync`` with an ``ssh`` block
  for a throwaway local OpenSSH server (tests.support.sshd.SshServer, its host key pinned).
  The pushes of one cycle go as batches (``engine/transport/batch_rsync.py``): one probe,
  one ``rsync --files-from`` run for the batch, one ``POST /v1/staged`` where the
  coordinator hashes and publishes each file.

``--files`` random files of ``--size-kib`` are written into the GPU node's data root
(``npz/many/fNNNN.npz``) before it starts, with mtimes 2 minutes in the past, so its
first scan finds them all finished. The coordinator starts first; then the GPU node. The
bench follows both event logs (``<data_root>/.ringsync/events.jsonl``, read as they grow)
and times from the GPU node's first DATA_SYNC_STARTED (emitted right after the scan that
registered and hashed the files) to the coordinator's receive DATA_SYNC_COMPLETED of the
last file: **files/s**. It also gives the time from the GPU node's process start, and a
breakdown from the events' own timestamps:

* start -> STARTED: process start-up, the first scan and the hashing of every file;
* STARTED -> first file stored: (rsync) probes + the rsync run + the first publish;
  (http) the first PUT;
* first -> last file stored: the publishing (rsync) or the rest of the PUTs (http);
* the coordinator's per-file receive ``seconds`` (median, max) and the GPU node's cycles
  (DATA_SYNC_STARTED files, DATA_SYNC_COMPLETED seconds), DATA_SYNC_FAILED count;
* rsync: gpu-1's batches (``GET /health`` ->
  ``details["transport:rsync"]["details"]["batches"]``) and its last batch's phases
  (``last_batch``: the probe, the rsync run, the publishing, in seconds).

Every stored copy (``cluster.stored("coord", "gpu-1", rel)``) is hashed and must match its
source. Figures, never assertions; exit 1 only if a copy is missing or wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.push_1gib import COORD, GPU, sha256_of  # noqa: E402
from bench.rsync_baseline import rsync_to_server_seconds  # noqa: E402
from bench.rsync_transport import CopyMismatch, batches_text, rsync_config  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

KIB = 1024
WARM_FILES = 5
"""Files pushed before the measured ones (``--warm``)."""
AGE_SECONDS = 120
"""How far in the past the files' mtimes are set: long finished."""


class EventTail:
    """A node's events.jsonl, read as it grows (a half-written last line waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        out = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                if line.strip():
                    out.append(json.loads(line))
        return out


def write_files(root: Path, count: int, size: int, sub: str = "many",
                where: Path | None = None) -> dict[str, str]:
    """``count`` random files of ``size`` bytes under ``npz/<sub>/`` (written into ``where``
    when given, to be moved there later), mtime 2 min ago; their SHA-256 by
    ``<data_type>/<path>``."""
    where = where or root / "npz" / sub
    where.mkdir(parents=True, exist_ok=True)
    past = time.time() - AGE_SECONDS
    shas: dict[str, str] = {}
    for i in range(count):
        body = os.urandom(size)
        path = where / f"f{i:04d}.npz"
        path.write_bytes(body)
        os.utime(path, (past, past))
        shas[f"npz/{sub}/f{i:04d}.npz"] = hashlib.sha256(body).hexdigest()
    return shas


def make_cluster(root: Path, args: argparse.Namespace, config: dict[str, Any],
                 attempts: int = 5) -> Cluster:
    """A cluster (not started) whose two nodes got distinct ports."""
    for _ in range(attempts):
        cluster = Cluster(root, gpus=1, interval=args.interval,
                          finished_after=args.finished_after, config=config)
        if len({n.port for n in cluster.nodes.values()}) == len(cluster.nodes):
            # Only the sender cycles every --interval: a coordinator's own cycle (orphan
            # re-homing, recovery: scans of its whole manifest) runs at the default 60 s, as
            # on a real cluster, not five times a second beside the publishing measured.
            cluster.env[COORD] = {"RINGRIFT_SYNC_INTERVAL": "60"}
            return cluster
    raise RuntimeError("could not pick distinct free ports for the nodes")


def http_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bandwidth_limits": {"default_mbps": 100000,
                             "providers": {"lambda": 100000, "hetzner": 100000}},
        "transfer": {"finished_after_seconds": args.finished_after},
        "auto_sync": {"interval_seconds": args.interval},
        "hosts": {COORD: {"bandwidth_mbps": 100000}},
    }


def run_one(transport: str, args: argparse.Namespace, work: Path,
            server: SshServer | None) -> dict[str, Any]:
    config = rsync_config(server, args) if server is not None else http_config(args)
    cluster = make_cluster(work / transport, args, config)
    try:
        root = cluster.data_root(GPU)
        staging = root.parent / f"{GPU}-staging"  # the same file system, outside the root
        if args.warm:
            warm = write_files(root, WARM_FILES, args.size_kib * KIB, sub="warm")
            shas = write_files(root, args.files, args.size_kib * KIB, where=staging)
        else:
            shas = write_files(root, args.files, args.size_kib * KIB)
        cluster.start(skip=(GPU,))
        coord_tail = EventTail(cluster.data_root(COORD) / ".ringsync" / "events.jsonl")
        gpu_tail = EventTail(cluster.data_root(GPU) / ".ringsync" / "events.jsonl")
        coord_tail.new()  # the coordinator's own start-up events
        load_before = os.getloadavg()[0]
        started = time.time()
        cluster.start_node(GPU, wait=False)
        deadline = time.monotonic() + args.timeout
        if args.warm:  # a first batch opens the ssh connection and checks rsync's version
            arrived: set[str] = set()
            while len(arrived) < len(warm):
                arrived |= stored_keys(coord_tail.new(), warm)
                check(cluster, transport, deadline, len(arrived), len(warm))
                time.sleep(args.poll)
            gpu_tail.new()
            os.rename(staging, root / "npz" / "many")  # all of them appear at once
            started = time.time()

        received: dict[str, dict[str, Any]] = {}
        gpu_events: list[dict[str, Any]] = []
        while len(received) < len(shas):
            for ev in coord_tail.new():
                if ev["type"] == "DATA_SYNC_COMPLETED" and ev["payload"].get("source") == GPU:
                    for key in ev["payload"].get("artifacts", []):
                        if key in shas:
                            received.setdefault(key, ev)
            gpu_events += gpu_tail.new()
            check(cluster, transport, deadline, len(received), len(shas))
            time.sleep(args.poll)
        seen_all = time.time()
        time.sleep(0.3)  # the sender's own DATA_SYNC_COMPLETED follows the last publish
        gpu_events += gpu_tail.new()

        health = cluster.request(GPU, "GET", "/health").json()
        details = health.get("details", {}).get(f"transport:{transport}", {}).get("details", {})
        batches = details.get("batches") if transport == "rsync" else None
        last_batch = details.get("last_batch") if transport == "rsync" else None

        wrong = []
        for rel, sha in shas.items():
            copy = cluster.stored(COORD, GPU, rel)
            if copy is None or sha256_of(copy) != sha:
                wrong.append(rel if copy is None else str(copy))
        if wrong:
            raise CopyMismatch(f"{transport}: {len(wrong)} of {len(shas)} stored copies missing"
                               f" or not the source's bytes: {wrong[:5]}")
    finally:
        cluster.stop_all()
    plain = None
    if server is not None:  # the same files by the plain rsync CLI, same sshd, nothing else up
        plain = rsync_to_server_seconds(server, root / "npz" / "many", work / "plain-rsync")

    cycles = [e for e in gpu_events if e["type"] == "DATA_SYNC_STARTED" and e["ts"] >= started]
    done = [e for e in gpu_events if e["type"] == "DATA_SYNC_COMPLETED"]
    failed = [e for e in gpu_events if e["type"] == "DATA_SYNC_FAILED"]
    first_started = cycles[0]["ts"] if cycles else started
    stored_ts = sorted(e["ts"] for e in received.values())
    recv_seconds = [float(e["payload"].get("seconds", 0.0)) for e in received.values()]
    window = stored_ts[-1] - first_started
    from_start = stored_ts[-1] - started
    return {
        "transport": transport, "files": len(shas), "size_kib": args.size_kib,
        "warm": args.warm,
        "verified_copies": len(shas),
        "files_per_second": len(shas) / window if window > 0 else float("inf"),
        "seconds": window,
        "files_per_second_from_start": len(shas) / from_start,
        "seconds_from_start": from_start,
        "start_to_started": first_started - started,
        "started_to_first_stored": stored_ts[0] - first_started,
        "first_to_last_stored": stored_ts[-1] - stored_ts[0],
        "receive_seconds_median": statistics.median(recv_seconds),
        "receive_seconds_max": max(recv_seconds),
        "cycles": [{"files": e["payload"]["files"], "at": round(e["ts"] - started, 3)}
                   for e in cycles],
        "sender_completed": [{"files": e["payload"]["files"], "seconds": e["payload"]["seconds"],
                              "at": round(e["ts"] - started, 3)} for e in done],
        "failed": len(failed),
        "failed_errors": sorted({e["payload"].get("error", "")[:160] for e in failed})[:3],
        "batches": batches,
        "last_batch": last_batch,
        "plain_rsync_seconds": plain,
        "poll_overrun": round(seen_all - stored_ts[-1], 3),
        "loadavg_1min_before": load_before,
    }


def stored_keys(events: list[dict[str, Any]], wanted: dict[str, str]) -> set[str]:
    """The keys of ``wanted`` the coordinator's receive events in ``events`` report stored."""
    return {key for ev in events if ev["type"] == "DATA_SYNC_COMPLETED"
            and ev["payload"].get("source") == GPU
            for key in ev["payload"].get("artifacts", []) if key in wanted}


def check(cluster: Cluster, transport: str, deadline: float, have: int, want: int) -> None:
    """Give up when the sender died or the files are late."""
    proc = cluster.nodes[GPU].proc
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"{GPU} exited {proc.returncode}:\n{cluster.log(GPU)}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"{transport}: {have} of {want} files stored in time\n"
                           f"{cluster.log(GPU)}")


def run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    results = []
    for transport in args.transports:
        if transport == "rsync":
            with SshServer() as server:
                results.append(run_one(transport, args, work, server))
        else:
            results.append(run_one(transport, args, work, None))
    return results


def report(results: list[dict[str, Any]]) -> str:
    lines: list[tuple[str, str]] = []
    for r in results:
        name = "rsync (BatchRsync)" if r["transport"] == "rsync" else "http (PUT per file)"
        cycles = ", ".join(f"{c['files']} files at +{c['at']:.2f}s" for c in r["cycles"])
        completed = ", ".join(f"{c['files']} files in {c['seconds']:.2f}s (at +{c['at']:.2f}s)"
                              for c in r["sender_completed"])
        lines += [
            (f"{name}, {r['files']} x {r['size_kib']} KiB"
         f" ({'after a first batch' if r['warm'] else 'cold'}):",
             f"{r['files_per_second']:.0f} files/s ({r['seconds']:.2f} s from gpu-1's first"
             " DATA_SYNC_STARTED to the last file stored)"),
            ("  from the files in place:" if r["warm"] else "  from gpu-1's process start:",
             f"{r['files_per_second_from_start']:.0f} files/s ({r['seconds_from_start']:.2f} s)"),
            ("  in place -> STARTED (scan, hash):" if r["warm"] else
             "  start -> STARTED (start-up, scan, hash):", f"{r['start_to_started']:.2f} s"),
            ("  STARTED -> first file stored:", f"{r['started_to_first_stored']:.2f} s"),
            ("  first -> last file stored:", f"{r['first_to_last_stored']:.2f} s"),
            ("  coord receive seconds per file:",
             f"median {r['receive_seconds_median']:.3f}, max {r['receive_seconds_max']:.3f}"),
            ("  gpu-1 cycles (DATA_SYNC_STARTED):", cycles or "-"),
            ("  gpu-1 DATA_SYNC_COMPLETED:", completed or "-"),
            ("  gpu-1 DATA_SYNC_FAILED:",
             str(r["failed"]) + (f" ({'; '.join(r['failed_errors'])})" if r["failed"] else "")),
        ]
        if r["transport"] == "rsync":
            lines.append(("  rsync batches on gpu-1 (/health):", batches_text(r["batches"])))
            if last := r.get("last_batch"):
                lines.append(("  its last batch:", f"{last['sent']} of {last['files']} files sent"
                              f" ({last['published_during_rsync']} published while rsync ran);"
                              f" probe {last['probe_seconds']:.2f} s, rsync"
                              f" {last['rsync_seconds']:.2f} s, publishing after it"
                              f" {last['publish_after_rsync_seconds']:.2f} s"))
            if r.get("plain_rsync_seconds"):
                lines.append(("  plain rsync -a of the same files:",
                              f"{r['files'] / r['plain_rsync_seconds']:.0f} files/s"
                              f" ({r['plain_rsync_seconds']:.2f} s, same sshd, no verification:"
                              f" BatchRsync does {r['files_per_second'] * r['plain_rsync_seconds'] / r['files']:.0%}"
                              " of its rate)"))
        lines += [
            ("  1-min load average before:", f"{r['loadavg_1min_before']:.2f}"
             f" ({os.cpu_count()} CPUs)"),
            ("  stored copies match the source sha256:",
             f"{r['verified_copies']} of {r['files']}"),
        ]
    by = {r["transport"]: r for r in results}
    if "http" in by and "rsync" in by:
        lines.append(("rsync / http files/s:",
                      f"{by['rsync']['files_per_second'] / by['http']['files_per_second']:.1f}x"))
    return "\n".join(f"{label:<46}{value}" for label, value in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="number of files (default 1000)")
    parser.add_argument("--size-kib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--transports", default="http,rsync",
                        help="comma-separated, run in this order (default http,rsync)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="auto_sync.interval_seconds (default 0.2)")
    parser.add_argument("--finished-after", type=float, default=0.3,
                        help="transfer.finished_after_seconds (default 0.3)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up a run after this many seconds (default 600)")
    parser.add_argument("--poll", type=float, default=0.05,
                        help="how often the event logs are read, s (default 0.05)")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    parser.add_argument("--cold", dest="warm", action="store_false",
                        help="measure gpu-1's first push (ssh connection, rsync version"
                             " check, first HTTP connection included); by default a first"
                             f" batch of {WARM_FILES} files is pushed before the measured ones")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not args.transports or set(args.transports) - {"http", "rsync"}:
        parser.error("--transports takes http and/or rsync")
    if args.files <= 0 or args.size_kib <= 0:
        parser.error("--files and --size-kib must be positive")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and remove files.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-many-bench-", dir=args.tmpdir))
    try:
        results = run(args, work)
    except CopyMismatch as exc:
        print(f"COPY WRONG: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
