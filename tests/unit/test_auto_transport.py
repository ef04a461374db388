"""AutoTransport's choice, with stand-in transports: HTTP until it fails at the target
*and* a new connection to the host's HTTP port cannot be made *and* SSH works; then rsync
(batched) through the tunnel, until HTTP is tried again."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.manifest import Artifact
from engine.transfers import Transfer
from engine.transport.auto import AutoTransport
from engine.transport.base import PushRequest, PushResult, TransferError
from engine.transport.ssh import SshError

pytestmark = pytest.mark.unit


@dataclass
class Host:
    name: str
    address: str
    port: int


@dataclass
class FakeHttp:
    name: str = "http"
    error: TransferError | None = None
    urls: list[str] = field(default_factory=list)

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        self.urls.append(request.target_url)
        if self.error is not None:
            raise self.error
        return PushResult(request.target, request.artifact.sha256, 1, 0.0, False, 1)


@dataclass
class FakeRsync(FakeHttp):
    name: str = "rsync"
    host: Host | None = None

    def host_of(self, name: str) -> Host:
        assert self.host is not None
        return self.host

    async def push_batch(self, requests, transfers):
        return [await self.push(r, t) for r, t in zip(requests, transfers)]


@dataclass
class FakePool:
    ssh_works: bool = True
    asked: int = 0

    async def reachable(self, name: str) -> bool:
        self.asked += 1
        return self.ssh_works

    async def tunnel(self, name: str) -> str:
        if not self.ssh_works:
            raise SshError("ssh to coord failed")
        return "http://127.0.0.1:4242"

    def health_check(self):
        from engine.health import HealthCheckResult
        return HealthCheckResult(True, "", {"connected": []})


def _request() -> PushRequest:
    art = Artifact("npz", "a.npz", None, 1, "a" * 64, 0.0, "gpu-1")
    return PushRequest(art, Path("/dev/null"), "coord", "http://10.0.0.1:8770", "interval")


def _transfer() -> Transfer:
    return Transfer(id=1, direction="out", source="gpu-1", target="coord", artifact="npz/a.npz",
                    size=1, transport="auto")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def _auto(port: int, ssh_works: bool = True, recheck: float = 60.0):
    http, rsync = FakeHttp(), FakeRsync(host=Host("coord", "127.0.0.1", port))
    pool = FakePool(ssh_works)
    return AutoTransport(http, rsync, pool, recheck_seconds=recheck), http, rsync, pool


async def test_http_while_it_works() -> None:
    auto, http, rsync, pool = _auto(_closed_port())
    transfer = _transfer()
    await auto.push(_request(), transfer)
    assert transfer.transport == "http" and http.urls and not rsync.urls and pool.asked == 0
    assert not auto.batches_to("coord")


async def test_a_refused_http_port_with_ssh_working_goes_by_rsync_through_the_tunnel() -> None:
    auto, http, rsync, pool = _auto(_closed_port(), recheck=0.3)
    http.error = TransferError("coord unreachable: refused", unreachable=True)
    transfer = _transfer()
    result = await auto.push(_request(), transfer)
    assert result.target == "coord" and transfer.transport == "rsync"
    assert rsync.urls == ["http://127.0.0.1:4242"]  # the receiver's API through ssh
    assert auto.over_ssh("coord") and auto.batches_to("coord")
    outcomes = await auto.push_batch([_request()], [_transfer()])
    assert isinstance(outcomes[0], PushResult) and len(http.urls) == 1  # HTTP not retried
    health = auto.health_check().details
    assert health["fallbacks"] == 1 and "refused" in health["over_ssh"]["coord"]["http_error"]
    await asyncio.sleep(0.35)
    assert not auto.over_ssh("coord")  # HTTP is tried again after recheck_seconds


async def test_no_fallback_when_the_http_port_answers_or_ssh_fails_too() -> None:
    with socket.socket() as listening:  # the port connects: a kept-alive stall is not a block
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        auto, http, rsync, pool = _auto(listening.getsockname()[1])
        http.error = TransferError("coord timed out")
        with pytest.raises(TransferError, match="timed out"):
            await auto.push(_request(), _transfer())
        assert not rsync.urls and not auto.over_ssh("coord")
    auto, http, rsync, pool = _auto(_closed_port(), ssh_works=False)
    http.error = TransferError("coord unreachable", unreachable=True)
    with pytest.raises(TransferError, match="unreachable"):
        await auto.push(_request(), _transfer())
    assert pool.asked == 1 and not rsync.urls
    # the file or this node at fault: nothing about the host, no probe at all
    auto, http, rsync, pool = _auto(_closed_port())
    http.error = TransferError("a.npz shrank", target_fault=False)
    with pytest.raises(TransferError, match="shrank"):
        await auto.push(_request(), _transfer())
    assert pool.asked == 0
