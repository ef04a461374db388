"""Does a node keep answering under hostile connections, and what does it cost idle?

    .venv/bin/python bench/connections.py [--idle 2000] [--slow 300] [--window 20]

A real coordinator process (``ringsync --engine-only`` via tests.support.cluster.Cluster,
alone). Three phases, each measuring ``/health`` latency (50 requests from 127.0.0.1, one
every 0.1 s: median, p99, max), coord's RSS (``/proc/<pid>/status`` VmRSS) and its CPU %
(``/proc/<pid>/stat`` utime+stime over the phase):

1. **idle**: nothing else connected, ``--window`` seconds: the idle node's CPU.
2. **idle connections**: ``--idle`` TCP connections that never send a byte, from 127.0.0.2..
   (``--idle`` / 500 source addresses, under the per-address cap), held open.
3. **slow headers**: ``--slow`` connections from 127.0.0.20.. that send a request line and
   then one 4 KiB header line every 0.5 s, never ending their headers.

What the node's guard did (``/status`` ``connections``) is printed after each phase. Figures,
never assertions.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.cluster import Cluster  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def health_latencies(port: int, n: int = 50) -> list[float]:
    out = []
    for _ in range(n):
        began = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        except OSError:
            out.append(float("inf"))
            continue
        out.append(time.monotonic() - began)
        time.sleep(0.1)
    return out


def report(name: str, cluster: Cluster, pid: int, lat: list[float], cpu: float, secs: float) -> None:
    lat_ms = sorted(x * 1000 for x in lat)
    guard = cluster.get_json("coord", "/status")["connections"]
    print(f"{name:18s} /health median {statistics.median(lat_ms):7.1f} ms  p99 "
          f"{lat_ms[int(len(lat_ms) * 0.99) - 1]:7.1f} ms  max {lat_ms[-1]:7.1f} ms  "
          f"RSS {rss_mib(pid):6.1f} MiB  CPU {100 * cpu / secs:5.1f} %  guard {guard}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), gpus=0, cpus=0)
        cluster.start()
        try:
            pid = cluster.nodes["coord"].proc.pid
            port = cluster.nodes["coord"].port
            time.sleep(3)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(args.window)
            lat = health_latencies(port)
            report("idle", cluster, pid, lat, cpu_seconds(pid) - c0, time.monotonic() - t0)

            socks = []
            c0, t0 = cpu_seconds(pid), time.monotonic()
            for i in range(args.idle):
                s = socket.socket()
                s.bind((f"127.0.0.{2 + i // 500}", 0))
                s.connect(("127.0.0.1", port))
                socks.append(s)
            lat = health_latencies(port)
            report(f"{args.idle} idle", cluster, pid, lat, cpu_seconds(pid) - c0,
                   time.monotonic() - t0)
            for s in socks:
                s.close()
            time.sleep(1)

            stop = threading.Event()
            slow = []
            for i in range(args.slow):
                s = socket.socket()
                s.bind((f"127.0.0.{20 + i // 100}", 0))
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                slow.append(s)

            def drip() -> None:
                line = b"X-Pad: " + b"a" * 4000 + b"\r\n"
                while not stop.is_set():
                    for s in slow:
                        try:
                            s.sendall(line)
                        except OSError:
                            pass
                    time.sleep(0.5)

            dripper = threading.Thread(target=drip, daemon=True)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            dripper.start()
            lat = health_latencies(port)
            report(f"{args.slow} slow headers", cluster, pid, lat, cpu_seconds(pid) - c0,
                   time.monotonic() - t0)
            stop.set()
            dripper.join()
            for s in slow:
                s.close()
        finally:
            cluster.stop_node("coord")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
