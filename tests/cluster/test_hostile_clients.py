"""A node stays reachable under idle, slow-header and too many connections.

Real sockets against a real node process: connections from 127.0.0.2 (another loopback
address, so the per-address cap is what holds them) that never send a request, or send
headers slowly. Before the bound site, aiohttp kept each until TCP gave up and took every
connection offered.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from tests.support.cluster import Cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def health_seconds(cluster: Cluster, name: str) -> float:
    url = f"http://127.0.0.1:{cluster.nodes[name].port}/health"
    began = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        exc.read()
    return time.monotonic() - began


def connect(port: int, source: str = "127.0.0.2") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_idle_and_slow_connections_are_capped_and_timed_out(make_cluster) -> None:
    cluster = make_cluster(gpus=1, skip=("gpu-1",))
    port = cluster.nodes["coord"].port
    socks: list[socket.socket] = []
    try:
        for _ in range(700):  # beyond the per-address cap (512)
            socks.append(connect(port))
        slow = connect(port, "127.0.0.3")
        slow.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # and never the end of headers
        socks.append(slow)
        assert max(health_seconds(cluster, "coord") for _ in range(5)) < 1.0
        status = cluster.get_json("coord", "/status")["connections"]
        assert status["refused"] >= 700 - status["max_per_peer"], status
        assert status["open"] <= status["max_per_peer"] + 3, status
        # none sent a request: all closed once the header timeout (10 s) passes
        wait_for(lambda: cluster.get_json("coord", "/status")["connections"]["header_timeouts"]
                 >= status["max_per_peer"] + 1, 20, what="the header timeout")
        slow.settimeout(2)
        assert slow.recv(100) == b""  # the slow client was closed
        assert json.loads(cluster.request("coord", "GET", "/health").body)["is_healthy"]
    finally:
        for sock in socks:
            sock.close()


def test_slow_headers_of_a_later_request_on_a_keep_alive_connection_are_timed_out(
        make_cluster) -> None:
    """A client that made one good request, then trickles the next one's headers (a byte
    every second, inside the keep-alive timeout each time) is closed after the header
    timeout (10 s), as a slow first request is."""
    cluster = make_cluster(gpus=1, skip=("gpu-1",))
    port = cluster.nodes["coord"].port
    before = cluster.get_json("coord", "/status")["connections"]["header_timeouts"]
    sock = connect(port, "127.0.0.4")
    try:
        sock.settimeout(5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 "), first[:100]
        began = time.monotonic()
        closed = False
        for byte in b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(1.0)
                if sock.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:  # reset by the server
                closed = True
                break
        took = time.monotonic() - began
        assert closed, "the slow second request was never cut off"
        assert 8 < took < 16, took
        after = cluster.get_json("coord", "/status")["connections"]["header_timeouts"]
        assert after == before + 1
    finally:
        sock.close()
