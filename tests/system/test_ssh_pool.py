"""SshPool on a real OpenSSH server (loopback): remote disk usage, SHA-256 and mkdir on one
pooled connection, a tunnel to the host's HTTP port, a reconnect after the connection
dropped, and a host presenting another key refused."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from engine.config import ClusterConfig
from engine.transport.ssh import SshError, SshPool
from engine.transport.ssh_setup import SshSetup
from tests.support.sshd import SshServer, free_port

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.fixture
def sshd():
    with SshServer() as server:
        yield server


def _pool(tmp_path: Path, server: SshServer, host_key: str, http_port: int) -> SshPool:
    config = ClusterConfig.model_validate({"hosts": {
        "coord": {"role": "coordinator", "provider": "x", "data_root": str(tmp_path / "c"),
                  "address": "127.0.0.1", "port": http_port,
                  "ssh": {"host": "127.0.0.1", "port": server.port, "user": server.user,
                          "key": str(server.client_key), "host_key": host_key}},
        "gpu-1": {"role": "gpu", "provider": "x", "data_root": str(tmp_path / "g"),
                  "port": free_port()}}})
    setup = SshSetup("gpu-1", tmp_path / "state", config.hosts.values())
    setup.write()
    return SshPool(setup, config.host)


def _key(path: Path) -> str:
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


async def test_remote_operations_and_a_tunnel_on_one_pooled_connection(
        tmp_path: Path, sshd: SshServer) -> None:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="from coord's own API")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pool = _pool(tmp_path, sshd, _key(sshd.host_key), port)
    try:
        remote = tmp_path / "remote" / "a" / "b"
        await pool.mkdir("coord", str(remote))
        assert remote.is_dir()
        body = os.urandom(300_000)
        (remote / "x.db").write_bytes(body)
        assert await pool.sha256("coord", str(remote / "x.db")) == \
            hashlib.sha256(body).hexdigest()
        usage = await pool.disk_usage("coord", str(remote))
        total, used, free = shutil.disk_usage(remote)
        assert abs(usage["total"] - total) < 1024 * 1024 and 0 < usage["percent"] <= 100
        with pytest.raises(SshError, match="sha256sum on coord exited 1"):
            await pool.sha256("coord", str(remote / "missing"))
        url = await pool.tunnel("coord")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/hello") as resp:
            assert await resp.text() == "from coord's own API"
        assert pool.totals["connects"] == 1  # one pooled connection for all of it
        pool._pool["coord"].conn.close()  # a cloud resetting it
        await pool._pool["coord"].conn.wait_closed()
        again = await pool.tunnel("coord")
        async with aiohttp.ClientSession() as session, session.get(f"{again}/hello") as resp:
            assert resp.status == 200
        assert pool.totals["connects"] == 2
    finally:
        await pool.close()
        await runner.cleanup()


async def test_a_host_presenting_another_key_is_refused(tmp_path: Path,
                                                       sshd: SshServer) -> None:
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    pool = _pool(tmp_path, sshd, _key(other), free_port())
    try:
        with pytest.raises(SshError, match="host key is not the one its config names") as err:
            await pool.mkdir("coord", str(tmp_path / "never"))
        assert err.value.host_key and not (tmp_path / "never").exists()
        assert not await pool.reachable("coord")
    finally:
        await pool.close()
