"""AutoTransport (``transport: auto``): HTTP, and rsync over SSH while only SSH gets through.

On real clouds a host's HTTP port is sometimes blocked (a security group, a container port
not published) while its SSH port is open. A push to an ``auto`` host goes over HTTP; when
it fails at the target, a new connection to the host's HTTP port cannot be made (refused,
no route, connect timeout) and SSH to the host works,
the push goes by rsync over SSH instead, and the receiver's API is reached through an SSH
tunnel (``SshPool.tunnel``) so the receiver still hashes and publishes what arrived itself.
The host then stays on SSH for ``RECHECK_SECONDS``, after which HTTP is tried again. Each
push's transfer and receipt name the transport that carried it (``http`` or ``rsync``);
``/health`` lists the hosts on SSH and why, and each switch is one log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from engine.health import HealthCheckResult
from engine.transfers import Transfer
from engine.transport.base import PushRequest, PushResult, TransferError, Transport
from engine.transport.rsync import RsyncTransport
from engine.transport.ssh import SshError, SshPool
from engine.transport.ssh_setup import CONNECT_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

RECHECK_SECONDS = 60.0
"""How long a host whose HTTP port could not be reached is pushed to over SSH before HTTP
is tried again."""


class AutoTransport:
    """HTTP first; rsync over SSH (its API through a tunnel) while HTTP cannot connect."""

    name = "auto"

    def __init__(self, http: Transport, rsync: RsyncTransport, pool: SshPool,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.http = http
        self.rsync = rsync
        self.pool = pool
        """Where SSH reachability and the tunnels come from."""
        self.recheck_seconds = recheck_seconds
        self._over_ssh: dict[str, tuple[float, str]] = {}
        """Target -> (monotonic time HTTP is tried again, the HTTP failure that sent it)."""
        self.totals = {"fallbacks": 0, "via_http": 0, "via_rsync": 0}

    def over_ssh(self, target: str) -> bool:
        """Pushes to ``target`` go by rsync over SSH now."""
        entry = self._over_ssh.get(target)
        if entry is not None and time.monotonic() >= entry[0]:
            del self._over_ssh[target]
            log.info("trying HTTP to %s again", target)
            return False
        return entry is not None

    def batches_to(self, target: str) -> bool:
        """Batched while on rsync (``BatchRsync``); one push at a time over HTTP."""
        return self.over_ssh(target)

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        if not self.over_ssh(request.target):
            transfer.transport = self.http.name
            try:
                result = await self.http.push(request, transfer)
            except TransferError as exc:
                if not exc.target_fault or not await self._only_ssh(request.target):
                    raise
                self._fall_back(request.target, str(exc))
            else:
                self.totals["via_http"] += 1
                return result
        transfer.transport = self.rsync.name
        result = await self.rsync.push(await self._tunnelled(request), transfer)
        self.totals["via_rsync"] += 1
        return result

    async def push_batch(self, requests: list[PushRequest],
                         transfers: list[Transfer]) -> list[PushResult | TransferError]:
        for transfer in transfers:
            transfer.transport = self.rsync.name
        try:
            tunnelled = [await self._tunnelled(r) for r in requests]
        except TransferError as exc:
            return [exc] * len(requests)
        outcomes = await self.rsync.push_batch(tunnelled, transfers)
        self.totals["via_rsync"] += sum(isinstance(o, PushResult) for o in outcomes)
        return outcomes

    async def _only_ssh(self, target: str) -> bool:
        """A new connection to ``target``'s HTTP port cannot be made, and SSH to it works
        (an HTTP failure on a connection kept alive says nothing about the port)."""
        host = self.rsync.host_of(target)
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host.address, host.port), CONNECT_TIMEOUT_SECONDS)
        except (OSError, asyncio.TimeoutError):
            return await self.pool.reachable(target)
        writer.close()
        return False

    def _fall_back(self, target: str, error: str) -> None:
        self.totals["fallbacks"] += 1
        self._over_ssh[target] = (time.monotonic() + self.recheck_seconds, error)
        log.warning("%s: HTTP unreachable (%s) but SSH works: pushing by rsync over SSH for"
                    " %.0f s", target, error, self.recheck_seconds)

    async def _tunnelled(self, request: PushRequest) -> PushRequest:
        """``request`` with the target's API reached through its SSH tunnel."""
        try:
            url = await self.pool.tunnel(request.target)
        except SshError as exc:
            raise TransferError(str(exc), retryable=not exc.host_key,
                                unreachable=True) from None
        return dataclasses.replace(request, target_url=url)

    def health_check(self) -> HealthCheckResult:
        now = time.monotonic()
        over = {t: {"http_error": e, "http_again_in_seconds": round(max(0.0, at - now), 1)}
                for t, (at, e) in self._over_ssh.items()}
        ssh = self.pool.health_check()
        return HealthCheckResult(True, f"{len(over)} hosts over ssh" if over
                                 else "auto transport: every host over http",
                                 {**self.totals, "over_ssh": over, "ssh": ssh.details})
