"""SshPool: one pooled asyncssh connection per host, for remote operations and tunnels.

What a node does on another host over SSH without a shell of its own:

- ``disk_usage(host, path)``, ``sha256(host, path)``, ``mkdir(host, path)``: one remote
  command each (``df -kP``, ``sha256sum``, ``mkdir -p``) on the host's pooled connection;
- ``tunnel(host)``: a local port forwarded over that connection to the host's own HTTP
  address, for when the host's HTTP port cannot be reached from here but SSH can
  (``transport: auto``). Requests through it reach the host's node itself, so the
  receiver still verifies and publishes what arrives (``POST /v1/staged``).

Connections check the host's key against the node's known_hosts alone (``SshSetup``: the
keys the config names; nothing is learned), offer only the configured key, send
keepalives (a connection silent for ``KEEPALIVE_SECONDS`` x ``KEEPALIVE_COUNT`` is dropped)
and are made again on the next use after they drop (clouds reset idle connections).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from engine.config import HostConfig
from engine.errors import describe
from engine.health import HealthCheckResult
from engine.transport.ssh_setup import CONNECT_TIMEOUT_SECONDS, SshSetup

log = logging.getLogger(__name__)
logging.getLogger("asyncssh").setLevel(logging.WARNING)  # a line per channel otherwise

KEEPALIVE_SECONDS = 5
KEEPALIVE_COUNT = 3
COMMAND_TIMEOUT_SECONDS = 60.0
"""A remote command that has not finished by then is given up."""


class SshError(Exception):
    """A remote operation failed: the host is unreachable, refused us, or the command
    failed. ``host_key`` is True when the host's key is not the configured one."""

    def __init__(self, message: str, *, host_key: bool = False) -> None:
        super().__init__(message)
        self.host_key = host_key


@dataclass
class _Pooled:
    conn: asyncssh.SSHClientConnection
    listener: asyncssh.SSHListener | None = None
    """The forwarded port to the host's HTTP address (``tunnel``), once asked for."""


class SshPool:
    """Pooled SSH connections of one node, one per host."""

    def __init__(self, setup: SshSetup, host_of: Callable[[str], HostConfig]) -> None:
        self.setup = setup
        """The node's known_hosts (written from the config) and ssh settings."""
        self._host_of = host_of
        self._pool: dict[str, _Pooled] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.totals = {"connects": 0, "commands": 0, "failures": 0}
        self.last_error: str | None = None

    # -- connections ------------------------------------------------------------------------
    async def _get(self, name: str) -> _Pooled:
        """The live pooled connection to ``name`` (made now if there is none or it dropped)."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            pooled = self._pool.get(name)
            if pooled is not None and not pooled.conn.is_closed():
                return pooled
            host = self._host_of(name)
            if host.ssh is None or host.ssh.host_key is None:
                raise SshError(f"hosts.{name}.ssh (with host_key) is not set")
            try:
                conn = await asyncssh.connect(
                    host.ssh.host, host.ssh.port, username=host.ssh.user,
                    known_hosts=str(self.setup.known_hosts),
                    client_keys=[os.path.expanduser(host.ssh.key)] if host.ssh.key else None,
                    agent_path=None, config=None, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    keepalive_interval=KEEPALIVE_SECONDS, keepalive_count_max=KEEPALIVE_COUNT)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise self._failed(SshError(
                    f"ssh to {name} refused: its host key is not the one its config names"
                    f" (ssh.host_key): {exc}", host_key=True)) from None
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                raise self._failed(SshError(f"ssh to {name} failed: {describe(exc)}")) from None
            self.totals["connects"] += 1
            pooled = self._pool[name] = _Pooled(conn)
            return pooled

    def _failed(self, exc: SshError) -> SshError:
        self.totals["failures"] += 1
        self.last_error = str(exc)
        log.warning("%s", exc)
        return exc

    async def reachable(self, name: str) -> bool:
        """SSH to ``name`` works now (a connection is up or can be made)."""
        try:
            await self._get(name)
        except SshError:
            return False
        return True

    # -- remote operations ------------------------------------------------------------------
    async def run(self, name: str, argv: list[str],
                  timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
        """Run ``argv`` on ``name``; its output, or SshError naming why it failed."""
        pooled = await self._get(name)
        self.totals["commands"] += 1
        try:
            result = await asyncio.wait_for(
                pooled.conn.run(shlex.join(argv), check=False), timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            raise self._failed(SshError(f"{argv[0]} on {name} failed: {describe(exc)}")) \
                from None
        if result.exit_status != 0:
            err = str(result.stderr or result.stdout or "").strip().splitlines()
            raise self._failed(SshError(f"{argv[0]} on {name} exited {result.exit_status}:"
                                        f" {(err or ['no output'])[-1][:300]}"))
        return str(result.stdout or "")

    async def disk_usage(self, name: str, path: str) -> dict[str, float]:
        """The filesystem holding ``path`` on ``name``: total, used and free bytes, and the
        percent used (as ``df`` counts it)."""
        out = await self.run(name, ["df", "-kP", "--", path])
        try:
            fields = out.strip().splitlines()[-1].split()
            total, used, free = (int(fields[i]) * 1024 for i in (1, 2, 3))
        except (IndexError, ValueError):
            raise self._failed(SshError(f"df on {name} said {out.strip()[:200]!r}")) from None
        return {"total": total, "used": used, "free": free,
                "percent": round(100.0 * used / (used + free), 2) if used + free else 0.0}

    async def sha256(self, name: str, path: str) -> str:
        """The SHA-256 of ``path`` on ``name``, computed there."""
        out = await self.run(name, ["sha256sum", "--", path])
        digest = out.split()[0] if out.split() else ""
        if len(digest) != 64:
            raise self._failed(SshError(f"sha256sum on {name} said {out.strip()[:200]!r}"))
        return digest

    async def mkdir(self, name: str, path: str) -> None:
        """Make directory ``path`` (and its parents) on ``name``."""
        await self.run(name, ["mkdir", "-p", "--", path])

    # -- tunnels ----------------------------------------------------------------------------
    async def tunnel(self, name: str) -> str:
        """A base URL on this machine whose connections reach ``name``'s own HTTP address
        and port through SSH (made again after the connection dropped)."""
        pooled = await self._get(name)
        if pooled.listener is None:
            host = self._host_of(name)
            try:
                pooled.listener = await pooled.conn.forward_local_port(
                    "127.0.0.1", 0, host.address, host.port)
            except (OSError, asyncssh.Error) as exc:
                raise self._failed(SshError(f"cannot forward to {name}'s HTTP port over ssh:"
                                            f" {describe(exc)}")) from None
        return f"http://127.0.0.1:{pooled.listener.get_port()}"

    # -- lifecycle --------------------------------------------------------------------------
    def health_check(self) -> HealthCheckResult:
        return HealthCheckResult(True, f"{len(self._pool)} ssh connections",
                                 {**self.totals, "connected": sorted(
                                     n for n, p in self._pool.items() if not p.conn.is_closed()),
                                  "last_error": self.last_error})

    async def close(self) -> None:
        """Close every connection (and its tunnel)."""
        pooled, self._pool = list(self._pool.values()), {}
        for p in pooled:
            if p.listener is not None:
                p.listener.close()
            p.conn.close()
        for p in pooled:
            await p.conn.wait_closed()
