"""A real cluster for tests: every node its own ``ringsync --engine-only`` process.

Each node gets a free loopback port and its own data root under the test's tmp
dir; the config is real YAML loaded by the real loader. ``stop_all`` always runs
(SIGTERM, then SIGKILL after a grace period) so no process outlives its test.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.sshd import free_ports

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-cluster-token"
DEFAULT_QUOTA = "8GiB"
COORDINATOR_QUOTA = "64GiB"
"""The coordinator gets a quota too, so its usage (and backpressure) is about its data root."""


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float = 15.0,
                what: str = "condition") -> Any:
    """``wait_for`` for async tests: poll without blocking the loop (an embedded node runs
    on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


@asynccontextmanager
async def embedded_node(cluster: "Cluster", name: str) -> AsyncIterator[Any]:
    """Run ``name`` inside this process's loop, as the dashboard embeds the coordinator."""
    from engine.config import load_config
    from engine.node import Node

    node = Node(load_config(cluster.config_path), name)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class NodeProc:
    name: str
    role: str
    port: int
    data_root: Path
    log: Path
    proc: subprocess.Popen | None = None
    address: str = "127.0.0.1"


class Cluster:
    """A coordinator, ``gpus`` GPU nodes and ``cpus`` CPU nodes on 127.0.0.1."""

    def __init__(self, root: Path, gpus: int = 2, cpus: int = 0, quota: str | None = None,
                 interval: float = 0.5, finished_after: float = 0.3,
                 config: dict[str, Any] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "cluster.yaml"
        self.nodes: dict[str, NodeProc] = {}
        self.env: dict[str, dict[str, str]] = {}
        """Extra environment per node name (e.g. libfaketime), applied when it (re)starts."""
        roles = [("coord", "coordinator")] + [(f"gpu-{i}", "gpu") for i in range(1, gpus + 1)] \
            + [(f"cpu-{i}", "cpu") for i in range(1, cpus + 1)]
        for (name, role), (address, port) in zip(roles, self.endpoints([n for n, _ in roles])):
            self.nodes[name] = NodeProc(name, role, port, root / "nodes" / name,
                                        root / "logs" / f"{name}.log", address=address)
        self.settings: dict[str, Any] = {
            "cluster_name": "test", "token": TOKEN,
            "auto_sync": {"enabled": True, "interval_seconds": interval,
                          "strategy": "push_from_generator",
                          # an ephemeral node's SIGTERM push fits the harness's stop timeouts
                          "final_push_seconds": 3},
            "bandwidth_limits": {"default_mbps": 1000},
            "membership": {"interval_seconds": 0.5, "suspect_after_misses": 1,
                           "down_after_misses": 3},
            "push": {"interval_seconds": 0.5},
            "transfer": {"finished_after_seconds": finished_after, "retry_base_seconds": 0.2,
                         "retry_max_seconds": 2.0},
            "hosts": {n.name: {"role": n.role, "provider": "lambda" if n.role == "gpu" else "hetzner",
                               "address": n.address, "port": n.port,
                               "data_root": str(n.data_root),
                               # a quota keeps disk pressure about the data root, not the
                               # test machine's disk (a full /tmp must not start cleanups)
                               "disk_quota": (quota or DEFAULT_QUOTA) if n.role != "coordinator"
                               else COORDINATOR_QUOTA}
                      for n in self.nodes.values()},
        }
        _merge(self.settings, config or {})
        self.config_path.write_text(yaml.safe_dump(self.settings, sort_keys=False))

    # -- where nodes live ---------------------------------------------------------------------
    def endpoints(self, names: list[str]) -> list[tuple[str, int]]:
        """(address, port) for each node: here a free port each on 127.0.0.1
        (``tests.support.hosts.HostsCluster``: an address each, the default port)."""
        return [("127.0.0.1", port) for port in free_ports(len(names))]

    # -- processes --------------------------------------------------------------------------
    def command(self, name: str) -> list[str]:
        return [sys.executable, "-m", "ringsync_tui.cli", "--engine-only",
                "--config", str(self.config_path), "--node", name]

    def start(self, skip: tuple[str, ...] = ()) -> None:
        """Start every node as a process, except ``skip`` (e.g. a coordinator the test embeds)."""
        for name in self.nodes:
            if name not in skip:
                self.start_node(name, wait=False)
        for name in self.nodes:
            if name not in skip:
                self.wait_healthy(name)

    def start_node(self, name: str, wait: bool = True) -> None:
        node = self.nodes[name]
        node.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env.get(name, {})}
        env.pop("RINGRIFT_CLUSTER_TOKEN", None)
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(self.command(name), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.root)
        if wait:
            self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float = 20.0) -> None:
        node = self.nodes[name]

        def up() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"{name} exited {node.proc.returncode}:\n{self.log(name)}")
            try:
                return self.request(name, "GET", "/health", token=None).status in (200, 503)
            except OSError:
                return False

        wait_for(up, timeout, what=f"{name} to answer /health")

    def stop_node(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal a node and wait for it; returns its exit code."""
        proc = self.nodes[name].proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not exit within {timeout}s of signal {sig}")

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.proc and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8
        for node in self.nodes.values():
            if node.proc and node.proc.poll() is None:
                try:
                    node.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
        if any("LD_PRELOAD" in env for env in self.env.values()):
            sweep_faketime_shm()

    def log(self, name: str) -> str:
        path = self.nodes[name].log
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- HTTP -------------------------------------------------------------------------------
    def request(self, name: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = TOKEN,
                timeout: float = 30.0) -> Response:
        """One raw HTTP request (no URL normalisation, so traversal tests mean it)."""
        node = self.nodes[name]
        conn = http.client.HTTPConnection(node.address, node.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get_json(self, name: str, path: str) -> Any:
        resp = self.request(name, "GET", path)
        assert resp.status == 200, (resp.status, resp.body[:500])
        return resp.json()

    def status(self, name: str) -> dict[str, Any]:
        return self.get_json(name, "/status")

    # -- files ------------------------------------------------------------------------------
    def data_root(self, name: str) -> Path:
        return self.nodes[name].data_root

    def stored(self, name: str, origin: str, rel: str) -> Path | None:
        """``name``'s stored copy of ``origin``'s ``<data_type>/<path>`` (``rel``), any version
        (the newest by mtime when there are several), or None: received copies live under
        ``<data_type>/@<origin>/<dir>/<stem>.v<sha16><suffix>``."""
        copies = self.copies(name, origin, rel)
        return copies[-1] if copies else None

    def copies(self, name: str, origin: str, rel: str) -> list[Path]:
        """Every stored version of ``origin``'s ``rel`` on ``name``, oldest first."""
        data_type, _, path = rel.partition("/")
        head, _, file = path.rpartition("/")
        stem, dot, suffix = file.rpartition(".")
        pattern = f"{stem}.v{'[0-9a-f]' * 16}.{suffix}" if dot and stem else f"{file}.v*"
        base = self.data_root(name) / data_type / f"@{origin}" / head
        found = [p for p in base.glob(pattern) if p.is_file()] if base.is_dir() else []
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)

    def version(self, name: str, origin: str, rel: str, sha256: str) -> Path | None:
        """``name``'s stored copy of exactly version ``sha256`` of ``origin``'s ``rel``, or
        None (the engine's own naming, ``DataRoot.copy_path``)."""
        from engine.paths import DataRoot

        data_type, _, path = rel.partition("/")
        copy = DataRoot(self.data_root(name)).copy_path(origin, data_type, path, sha256)
        return copy if copy.is_file() else None

    def events(self, name: str, type_: str | None = None) -> list[dict[str, Any]]:
        path = self.data_root(name) / ".ringsync" / "events.jsonl"
        if not path.exists():
            return []
        out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in out if type_ is None or e["type"] == type_]


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def sweep_faketime_shm(shm: Path = Path("/dev/shm")) -> None:
    """Remove what libfaketime left for processes that are gone. Loaded by ``LD_PRELOAD``,
    it makes ``faketime_shm_<pid>`` and ``sem.faketime_sem_<pid>`` for every process it is in
    (a node and its children: ssh, rsync, the meter relay), and removes them only when that
    process exits normally: a SIGKILL or an ``os._exit`` leaves them behind."""
    for path in shm.glob("*faketime_s*_*"):
        pid = path.name.rsplit("_", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:
            continue
