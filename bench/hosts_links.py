"""Push rates achieved against the link and the engine's limit, on real shaped links (root only).

    .venv/bin/python bench/hosts_links.py [--size-mb 30] [--cases 10:-:0,10:5:0,...]
        [--tmpdir DIR]

Every case is a fresh ``tests.support.hosts.HostsCluster`` (coord + gpu-1, each a real
``ringsync --engine-only`` process in its own network namespace): coord's link is shaped
with tbf to LINK MB/s (each way), gpu-1's to 100 MB/s; the engine's limit for coord
(``hosts.coord.bandwidth_mbps``, what senders may push TO coord) is LIMIT MB/s, or left at
the harness's 1000 MB/s default (``-``, no limit); LOSS % of gpu-1's packets are dropped
each way (nftables). One random ``--size-mb`` MB file appears on gpu-1, which pushes it to
coord. The **rate** is the steady part of the push: coord's part file under
``.ringsync/incoming`` sampled every 0.1 s, growth between 20 % and 80 % of the size
(``_steady_rate`` of tests/hosts/test_links.py). The stored copy's bytes are then compared
with the source.

First a **raw TCP baseline** per (link, loss): a plain ``tests.support.netns.Network`` with
the same two namespaces and shaping; a python socket sender in gpu-1's namespace sends
``--size-mb`` MB to a receiver in coord's namespace, and the receiver measures the same
20-80 % window. That is the payload ceiling of the link itself (tbf counts Ethernet, IP and
TCP headers: ~95.6 % of the rate at MTU 1500).

Printed per case: link, limit, loss, the measured MB/s, its ratio to min(link, limit) and
to min(raw TCP rate on the same link and loss, limit), and the seconds from the file
appearing on gpu-1 to coord's stored copy (scan, hash and push). Figures, never assertions; the exit status is 1 only
if a stored copy's bytes were wrong or missing. Not root (or no ip/tc/nft): one line, exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.netns import Network, unavailable  # noqa: E402

MB = 1_000_000
GPU_LINK = 100.0
TCP_PORT = 5201
DEFAULT_CASES = "10:-:0,10:5:0,20:10:0,5:-:0,10:-:2"
"""link MB/s : engine limit MB/s on coord (``-``: none) : loss % on gpu-1."""

# The receiver of the raw TCP baseline, run in coord's namespace: accept one connection,
# read until EOF, sample (time, bytes) and print the 20-80 % rate as JSON.
RECEIVER = r"""
import json, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept()
buf, got, samples, last = bytearray(1 << 20), 0, [], 0.0
while True:
    n = conn.recv_into(buf)
    if not n:
        break
    got += n
    now = time.monotonic()
    if now - last >= 0.02:
        samples.append((now, got)); last = now
samples.append((time.monotonic(), got))
window = [(t, b) for t, b in samples if 0.2 * size <= b <= 0.8 * size]
rate = ((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) / 1e6
        if len(window) >= 2 and window[-1][0] > window[0][0] else None)
print(json.dumps({"bytes": got, "rate": rate, "samples": len(window)}), flush=True)
"""

SENDER = r"""
import os, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 10
while True:
    try:
        sock = socket.create_connection((host, port), timeout=5); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.05)
block, left = os.urandom(1 << 20), size
while left > 0:
    n = min(left, len(block)); sock.sendall(block[:n]); left -= n
sock.shutdown(socket.SHUT_WR); sock.recv(1); sock.close()
"""


def parse_cases(text: str) -> list[tuple[float, float | None, float]]:
    cases = []
    for item in text.split(","):
        link, limit, loss = item.split(":")
        cases.append((float(link), None if limit in ("-", "none", "") else float(limit),
                      float(loss)))
    return cases


def tcp_baseline(link: float, loss: float, size: int) -> float | None:
    """Raw TCP payload MB/s from gpu-1's namespace to coord's over the shaped link."""
    with Network(["coord", "gpu-1"]) as net:
        net.shape("coord", link)
        net.shape("gpu-1", GPU_LINK)
        if loss:
            net.loss("gpu-1", loss)
        host = net.address("coord")
        argv = [str(TCP_PORT), str(size)]
        receiver = subprocess.Popen(
            net.wrap("coord", [sys.executable, "-c", RECEIVER, host, *argv]),
            stdout=subprocess.PIPE, text=True)
        sender = None
        try:
            assert receiver.stdout is not None
            if receiver.stdout.readline().strip() != "ready":
                raise RuntimeError("TCP receiver did not start")
            sender = subprocess.Popen(net.wrap("gpu-1", [sys.executable, "-c", SENDER, host,
                                                         *argv]))
            out, _ = receiver.communicate(timeout=120)
            sender.wait(30)
            result = json.loads(out.strip().splitlines()[-1])
            if result["bytes"] != size:
                raise RuntimeError(f"TCP receiver got {result['bytes']} of {size} bytes")
            return result["rate"]
        finally:
            for proc in (sender, receiver):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()


def engine_case(work: Path, index: int, link: float, limit: float | None, loss: float,
                size: int) -> dict[str, Any]:
    """One push of ``size`` random bytes from gpu-1 to coord; its steady rate and check."""
    from tests.hosts.test_links import _steady_rate
    from tests.support.cluster import wait_for
    from tests.support.files import write
    from tests.support.hosts import HostsCluster

    config = {"hosts": {"coord": {"bandwidth_mbps": limit}}} if limit is not None else {}
    cluster = HostsCluster(work / f"case{index}", gpus=1, links={"coord": link, "gpu-1": GPU_LINK},
                           config=config)
    rel = f"npz/bench/link{index}.npz"
    body = os.urandom(size)
    out: dict[str, Any] = {"link": link, "limit": limit, "loss": loss, "rate": None,
                           "intact": False, "note": ""}
    try:
        cluster.start()
        if loss:
            cluster.net.loss("gpu-1", loss)
        started = time.monotonic()
        write(cluster, "gpu-1", rel, body)
        try:
            out["rate"] = _steady_rate(cluster.data_root("coord"), size, timeout=60)
        except AssertionError as exc:  # too few samples in the window: say so, go on
            out["note"] = str(exc)[:120]
        copy = wait_for(lambda: cluster.stored("coord", "gpu-1", rel), 60, 0.05, what="copy")
        out["seconds"] = time.monotonic() - started
        out["intact"] = copy.read_bytes() == body
        return out
    finally:
        cluster.stop_all()


def fmt(value: float | None, spec: str = "6.2f") -> str:
    return "   n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=30.0,
                        help="the file pushed (and the TCP baseline), MB (default 30)")
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help=f"link:limit:loss,... (limit '-': none; default {DEFAULT_CASES})")
    parser.add_argument("--tmpdir", type=Path, default=None,
                        help="where the nodes' data roots go (default: the system temp dir)")
    args = parser.parse_args(argv)
    why = unavailable()
    if why is not None:
        print(f"hosts_links: skipped: {why}")
        return 0
    cases = parse_cases(args.cases)
    size = int(args.size_mb * MB)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="ringsync-hosts-links-", dir=args.tmpdir))
    wall = time.monotonic()
    bad = 0
    try:
        print(f"push of one {size / MB:g} MB file gpu-1 -> coord; coord's link shaped (tbf), "
              f"gpu-1's {GPU_LINK:g} MB/s; rate = coord's part file, 20-80 %", flush=True)
        print("raw TCP baseline (python socket, gpu-1 ns -> coord ns, same shaping):",
              flush=True)
        baseline: dict[tuple[float, float], float | None] = {}
        for link, _, loss in cases:
            if (link, loss) in baseline:
                continue
            baseline[(link, loss)] = rate = tcp_baseline(link, loss, size)
            print(f"  link {link:5.1f} MB/s  loss {loss:g} %:  tcp {fmt(rate)} MB/s  "
                  f"({fmt(rate / link if rate else None, '.3f')} of link)", flush=True)
        print("ringsync push:", flush=True)
        print("  link MB/s  limit MB/s  loss %   measured MB/s   /min(link,limit)   "
              "/min(tcp,limit)   write->copy s  copy", flush=True)
        for index, (link, limit, loss) in enumerate(cases):
            r = engine_case(work, index, link, limit, loss, size)
            cap = min(link, limit) if limit is not None else link
            tcp = baseline[(link, loss)]
            ceiling = None if tcp is None else min(tcp, limit) if limit is not None else tcp
            bad += not r["intact"]
            print(f"  {link:9.1f}  {'none' if limit is None else f'{limit:.1f}':>10}  "
                  f"{loss:6g}   {fmt(r['rate'], '13.2f')}   "
                  f"{fmt(r['rate'] / cap if r['rate'] else None, '16.3f')}   "
                  f"{fmt(r['rate'] / ceiling if r['rate'] and ceiling else None, '14.3f')}   "
                  f"{r.get('seconds', float('nan')):13.1f}  "
                  f"{'ok' if r['intact'] else 'WRONG'}"
                  f"{'  (' + r['note'] + ')' if r['note'] else ''}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall time: {time.monotonic() - wall:.1f} s")
    if bad:
        print(f"{bad} stored copies had wrong bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
