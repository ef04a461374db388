"""Start and stop the demo cluster's processes: one engine per host, one generator per GPU host.

Every process is its own OS process in its own session (so a Ctrl-C in the terminal reaches only
the demo, which then stops the children in order), logs to ``workdir/logs/<name>.log`` and, on
Linux, gets SIGTERM if the demo itself dies. ``workdir/pids.json`` lists every pid started.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from engine.children import die_with_parent
from engine.config import ClusterConfig, HostConfig

# Generator pace per GPU node: a DB of 20 games every ~2 s and an NPZ (~100 kB) every second DB
# of a config key: about 60 kB/s of data held per node. Against config/local.yaml's
# 4 MiB GPU quotas (data held: databases, their snapshots until sent, NPZs) that passes 50 %
# after ~35 s, 70 % after ~45 s and 75 % within ~50 s.
GENERATOR_ARGS = ["--games-per-db", "20", "--game-interval", "0.1", "--npz-every", "2",
                  "--npz-bytes", "100000"]
HEALTH_TIMEOUT = 20.0


class LaunchError(Exception):
    """A process could not be started; ``str()`` is one line naming the node and port."""


@dataclass
class Proc:
    """One child process of the demo."""

    name: str
    kind: str
    """``"node"`` or ``"generator"``."""
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None


def last_log_line(path: Path) -> str:
    """The last non-empty line of a log file, or '' when there is none."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def port_problem(host: HostConfig) -> str | None:
    """Why ``host.address:host.port`` cannot be bound right now, or None when it can."""
    family = socket.AF_INET6 if ":" in host.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's site does
        try:
            sock.bind((host.address, host.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "port is already in use"
            return exc.strerror or str(exc)
    return None


class Launcher:
    """The demo cluster's processes for one config and working directory."""

    def __init__(self, config: ClusterConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.cluster_yaml = workdir / "cluster.yaml"
        """The effective config (absolute data roots) every node is started with."""
        self.logs = workdir / "logs"
        self.ledgers = workdir / "ledgers"
        self.nodes: dict[str, Proc] = {}
        self.generators: dict[str, Proc] = {}
        self._env = self._child_env()

    # -- files ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the working directory and write ``cluster.yaml`` from the loaded config."""
        for path in (self.workdir, self.logs, self.ledgers):
            path.mkdir(parents=True, exist_ok=True)
        data = self.config.model_dump(mode="json", exclude_none=True)
        header = ("# Written by `ringsync demo`: the effective config of this demo run\n"
                  f"# (from {self.config.source}), with absolute data roots.\n")
        self.cluster_yaml.write_text(header + yaml.safe_dump(data, sort_keys=False))

    def ledger(self, name: str) -> Path:
        return self.ledgers / f"{name}.jsonl"

    def _write_pids(self) -> None:
        pids = {"demo": os.getpid(),
                "nodes": {n: p.popen.pid for n, p in self.nodes.items()},
                "generators": {n: p.popen.pid for n, p in self.generators.items()}}
        (self.workdir / "pids.json").write_text(json.dumps(pids, indent=2) + "\n")

    @staticmethod
    def _child_env() -> dict[str, str]:
        """The demo's environment, with the directory holding this ``engine`` package first."""
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
        env["PYTHONPATH"] = os.pathsep.join([here, *parts])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, kind: str, argv: list[str], log_name: str) -> Proc:
        log = self.logs / f"{log_name}.log"
        with open(log, "ab") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            fh.flush()
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh,
                                     stderr=subprocess.STDOUT, env=self._env, cwd=self.workdir,
                                     start_new_session=True,
                                     preexec_fn=die_with_parent())
        return Proc(name, kind, popen, log)

    # -- nodes ------------------------------------------------------------------------------
    async def start_nodes(self, stop: asyncio.Event | None = None,
                          embedded: str | None = None) -> None:
        """Start every host's engine but ``embedded`` (which runs in this process) and wait for
        each to answer; raises LaunchError."""
        for host in self.config.hosts.values():
            problem = port_problem(host)
            if problem:
                raise LaunchError(f"node {host.name} cannot listen on {host.address}:{host.port}:"
                                  f" {problem}")
        coordinator = self.config.coordinator.name  # last, so its first heartbeats find peers
        for name in sorted(self.config.hosts, key=lambda n: n == coordinator):
            if name == embedded:
                continue
            argv = [sys.executable, "-m", "engine", "--config", str(self.cluster_yaml),
                    "--node", name]
            self.nodes[name] = self._spawn(name, "node", argv, name)
        self._write_pids()
        await self._wait_healthy(stop)

    async def _wait_healthy(self, stop: asyncio.Event | None) -> None:
        pending = dict(self.nodes)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        headers = {"Authorization": f"Bearer {self.config.token}"}
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while pending:
                for name, proc in list(pending.items()):
                    host = self.config.host(name)
                    if not proc.alive():
                        raise LaunchError(
                            f"node {name} (port {host.port}) exited with code "
                            f"{proc.popen.returncode}: {last_log_line(proc.log) or 'no output'}"
                            f" (log: {proc.log})")
                    if await self._answers(session, host):
                        del pending[name]
                if not pending:
                    return
                if stop is not None and stop.is_set():
                    raise LaunchError("interrupted while the nodes were starting")
                if time.monotonic() > deadline:
                    name = next(iter(pending))
                    host, proc = self.config.host(name), pending[name]
                    raise LaunchError(
                        f"node {name} did not answer on {host.url}/health within "
                        f"{HEALTH_TIMEOUT:g} s: {last_log_line(proc.log) or 'no output'}"
                        f" (log: {proc.log})")
                await asyncio.sleep(0.1)

    @staticmethod
    async def _answers(session: aiohttp.ClientSession, host: HostConfig) -> bool:
        """True when this host's engine answers /health and /status says it is ``host``."""
        try:
            async with session.get(f"{host.url}/health") as resp:
                if resp.status not in (200, 503):
                    return False
            async with session.get(f"{host.url}/status") as resp:
                return resp.status == 200 and (await resp.json()).get("node") == host.name
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return False

    # -- generators -------------------------------------------------------------------------
    def start_generators(self) -> None:
        """One synthetic self-play generator per GPU host, each with its own seed and ledger."""
        for index, host in enumerate(self.config.hosts_by_role("gpu"), start=1):
            argv = [sys.executable, "-m", "engine.demo.generator", "--root", str(host.data_root),
                    "--node", host.name, "--ledger", str(self.ledger(host.name)),
                    "--seed", str(1000 + index), *GENERATOR_ARGS]
            self.generators[host.name] = self._spawn(host.name, "generator", argv,
                                                     f"generator-{host.name}")
        self._write_pids()

    # -- stopping ---------------------------------------------------------------------------
    async def stop_generators(self, grace: float = 5.0) -> None:
        """SIGTERM the generators (each closes its open DB), SIGKILL after ``grace`` seconds."""
        await _terminate(list(self.generators.values()), grace)

    async def stop_nodes(self, grace: float = 8.0) -> None:
        """SIGTERM the engines (they exit within ~5 s), SIGKILL after ``grace`` seconds."""
        await _terminate(list(self.nodes.values()), grace)

    def kill_all(self) -> None:
        """Last resort (sync): make sure no child outlives the demo."""
        procs = [*self.generators.values(), *self.nodes.values()]
        for proc in procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8.0
        for proc in procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def dead_nodes(self) -> list[str]:
        """Nodes whose process has exited."""
        return [name for name, proc in self.nodes.items() if not proc.alive()]


async def _terminate(procs: list[Proc], grace: float) -> None:
    for proc in procs:
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.alive() for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for proc in procs:
        if proc.alive():
            print(f"ringsync demo: {proc.kind} {proc.name} did not stop within {grace:g} s;"
                  " killing it", file=sys.stderr)
            proc.popen.kill()
        proc.popen.wait()
