"""Claims of staged files (``engine/server/staged.py``) as pure logic: a real Storage and the
real handlers, with the disk's slowness and failures scripted, so that the races a stopping
node or a crash only sometimes shows are forced (found by adversarial review of 6ba8948;
each of these failed on it)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from engine import diskio
from engine.copies import StoredCopies
from engine.daemons.backpressure import BackpressureMonitor
from engine.events import EventBus, EventType
from engine.headers import H_ORIGIN, H_SHA, H_SIZE, H_SOURCE
from engine.manifest import ClusterManifest
from engine.paths import DataRoot, claimed_path
from engine.server import staged as staged_mod
from engine.server.context import STORAGE_KEY, Storage
from engine.transfers import TransferTracker
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NODE = "coord"
HOSTS = ("coord", "gpu-1", "cpu-1")


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def hdrs(body: bytes) -> dict[str, str]:
    return {H_SIZE: str(len(body)), H_SHA: digest(body), H_ORIGIN: "gpu-1", H_SOURCE: "gpu-1"}


@dataclass
class Env:
    storage: Storage
    bus: EventBus
    app: web.Application

    def staged(self, rel: str, body: bytes) -> Path:
        return self.storage.data.staged_path("npz", rel, digest(body), "gpu-1")

    def final(self, rel: str, body: bytes) -> Path:
        return self.storage.data.copy_path("gpu-1", "npz", rel, digest(body))

    def events(self, kind: EventType) -> list:
        return [e.payload for e in self.bus.recent(1000) if e.type == kind]


@pytest.fixture
async def env(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> AsyncIterator[Env]:
    data = DataRoot(tmp_path / "root")
    data.create()
    manifest, bus = open_manifest(NODE), EventBus(NODE)
    copies = StoredCopies(NODE, data, manifest, bus, "root-coord", 2)
    storage = Storage(NODE, "root-coord", HOSTS, data, manifest, copies, TransferTracker(),
                      set(), bus.emit, lambda urgent: None, lambda n: True, lambda n: None,
                      1 << 16, 1 << 30)
    app = web.Application()
    app[STORAGE_KEY] = storage
    staged_mod.add_routes(app)
    yield Env(storage, bus, app)
    bus.close()


class FakeRequest:
    """What the handlers read of a request (so a test can cancel the handler's task, as
    the server's shutdown does)."""

    def __init__(self, app: web.Application, body: object = None, headers=None,
                 match_info=None) -> None:
        self.app, self._body = app, body
        self.headers = headers or {}
        self.match_info = match_info or {}

    async def json(self) -> object:
        return self._body


def batch_body(items: list[tuple[str, bytes]]) -> dict:
    return {"files": [{"data_type": "npz", "path": rel, "headers": hdrs(body)}
                      for rel, body in items]}


async def _post(env: Env, rel: str, body: bytes):
    async with peers({NODE: env.app}, caller="gpu-1") as client:
        return await client.call(NODE, "POST", f"/v1/staged/npz/{rel}", timeout=5,
                                 expect=range(100, 600), headers=hdrs(body))


async def test_a_claimed_file_a_crash_left_is_taken_by_the_next_request(env: Env) -> None:
    """SIGKILL after the claim's rename, before the publish: the staged name is gone, the
    bytes are under a claimed name nobody holds. The retry publishes them (it answered 503
    ENOENT and deleted them)."""
    body = os.urandom(50_000)
    leftover = claimed_path(env.staged("k/a.npz", body), "deadbeef0000")
    leftover.write_bytes(body)
    answer = await _post(env, "k/a.npz", body)
    assert answer.status == 201, (answer.status, answer.raw)
    assert env.final("k/a.npz", body).read_bytes() == body and not leftover.exists()
    assert not env.events(EventType.DATA_SYNC_FAILED)
    assert (await _post(env, "k/b.npz", body)).status == 404, "nothing staged, nothing left"


async def test_a_cancelled_batch_lets_its_claims_go_only_when_its_threads_are_done(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node stopping cancels a batch whose thread is still busy with file 1; file 2, not
    reached yet, must end up back under its staged name (the thread renamed it after the
    claims were let go, and the retry got a 503)."""
    monkeypatch.setattr(staged_mod, "SETTLE_THREADS", 1)  # one share: files in turn
    b1, b2 = os.urandom(30_000), os.urandom(30_000)
    for rel, body in (("k/1.npz", b1), ("k/2.npz", b2)):
        env.staged(rel, body).write_bytes(body)
    gate, entered = threading.Event(), threading.Event()
    real = diskio.settle
    first = env.staged("k/1.npz", b1).name

    def slow(path: Path) -> str:
        if path.name.startswith(first):
            entered.set()
            gate.wait(10)  # a slow disk: the node is stopped meanwhile
        return real(path)

    monkeypatch.setattr(diskio, "settle", slow)
    task = asyncio.create_task(staged_mod.publish_batch(
        FakeRequest(env.app, batch_body([("k/1.npz", b1), ("k/2.npz", b2)]))))
    await asyncio.to_thread(entered.wait, 5)
    task.cancel()  # what the runner's cleanup does to a handler still running at shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.storage.uploads, "claims let go while their thread still runs"
    gate.set()
    for _ in range(100):
        if not env.storage.uploads:
            break
        await asyncio.sleep(0.02)
    assert not env.storage.uploads
    assert env.staged("k/2.npz", b2).read_bytes() == b2
    assert (await _post(env, "k/2.npz", b2)).status == 201


async def test_one_staged_publish_counts_once_in_the_inbound_queue(env: Env) -> None:
    body = os.urandom(10_000)
    env.staged("k/q.npz", body).write_bytes(body)
    monitor = BackpressureMonitor(NODE, 95.0, 32, disk_percent=lambda: 1.0,
                                  uploads=env.storage.uploads, emit=lambda p: None)
    claim = await staged_mod._claim(env.storage, hdrs(body), "npz", "k/q.npz")
    assert monitor.queue_depth() == 1, env.storage.uploads
    staged_mod._release(env.storage, [claim])
    assert monitor.queue_depth() == 0


async def test_a_failing_rename_is_a_503_named_for_it(env: Env,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    body = os.urandom(10_000)
    env.staged("k/e.npz", body).write_bytes(body)
    real = os.rename

    def eio(src, dst, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if str(dst).endswith(".claimed"):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(staged_mod.os, "rename", eio)
    answer = await _post(env, "k/e.npz", body)
    assert answer.status == 503 and json.loads(answer.raw)["op"] == "rename", answer.raw


async def test_a_request_ended_inside_its_publish_leaves_no_second_name_of_the_copy(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled after the link under the final name, before the claimed name's unlink: the
    claimed file must not go back under the staged name (a second name of the copy)."""
    body = os.urandom(10_000)
    env.staged("k/h.npz", body).write_bytes(body)
    gate, entered = threading.Event(), threading.Event()
    real = diskio.fsync_dir

    def slow(path: Path) -> None:
        entered.set()
        gate.wait(10)
        return real(path)

    monkeypatch.setattr(diskio, "fsync_dir", slow)
    monkeypatch.setattr(diskio, "make_dirs", lambda p, root: p.mkdir(parents=True, exist_ok=True))
    task = asyncio.create_task(staged_mod.publish_staged(FakeRequest(
        env.app, headers=hdrs(body), match_info={"data_type": "npz", "path": "k/h.npz"})))
    await asyncio.to_thread(entered.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await asyncio.sleep(0.3)
    staged, final = env.staged("k/h.npz", body), env.final("k/h.npz", body)
    assert not (staged.exists() and final.exists() and os.path.samefile(staged, final))


async def test_a_disk_error_on_one_claimed_file_fails_only_that_file(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    b1, b2 = os.urandom(10_000), os.urandom(10_000)
    for rel, body in (("k/1.npz", b1), ("k/2.npz", b2)):
        env.staged(rel, body).write_bytes(body)
    bad = env.staged("k/2.npz", b2).name
    real_rename, real_stat = os.rename, Path.stat

    def rename(src, dst, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if Path(src).name == bad:
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst, *a, **k)

    def stat(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if self.name.startswith(bad):
            raise OSError(errno.EIO, "Input/output error")
        return real_stat(self, *a, **k)

    monkeypatch.setattr(staged_mod.os, "rename", rename)
    monkeypatch.setattr(Path, "stat", stat)
    answer = await staged_mod.publish_batch(
        FakeRequest(env.app, batch_body([("k/1.npz", b1), ("k/2.npz", b2)])))
    results = json.loads(answer.body)["results"]
    assert [r["status"] for r in results] == [201, 503], results
    assert env.final("k/1.npz", b1).exists()
