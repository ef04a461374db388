"""The object and vouch handlers without a Node: a real ``Storage`` (data root,
ClusterManifest, StoredCopies, EventBus, TransferTracker on tmp_path) behind the real routes,
served on a free loopback port and called with a real PeerClient."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from engine.copies import StoredCopies
from engine.events import EventBus, EventType
from engine.headers import H_ORIGIN, H_SHA, H_SIZE, H_SOURCE, H_URGENCY
from engine.manifest import ClusterManifest
from engine.paths import DataRoot
from engine.peer_client import PeerClient
from engine.server import objects, vouch
from engine.server.context import STORAGE_KEY, Storage
from engine.transfers import TransferTracker
from tests.support.peer_server import peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NODE = "coord"
HOSTS = ("coord", "gpu-1", "cpu-1")


@dataclass
class Served:
    storage: Storage
    client: PeerClient
    bus: EventBus
    refusal: list[str | None] = field(default_factory=lambda: [None])
    room: list[bool] = field(default_factory=lambda: [True])
    stored: list[int] = field(default_factory=list)

    def events(self, kind: EventType) -> list:
        return [e.payload for e in self.bus.recent(1000) if e.type == kind]

    async def put(self, rel: str, body: bytes, sha: str | None = None, **headers: str):
        return await self.client.call(
            NODE, "PUT", f"/v1/objects/npz/{rel}", timeout=5, expect=range(100, 600),
            data=body, headers={H_SIZE: str(len(body)), H_SHA: sha or digest(body),
                                H_ORIGIN: "gpu-1", H_SOURCE: "gpu-1", **headers})


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.fixture
async def served(tmp_path: Path,
                 open_manifest: Callable[[str], ClusterManifest]) -> AsyncIterator[Served]:
    data = DataRoot(tmp_path / "root")
    data.create()
    manifest, bus = open_manifest(NODE), EventBus(NODE)
    copies = StoredCopies(NODE, data, manifest, bus, "root-coord", 2)
    refusal: list[str | None] = [None]
    room = [True]
    stored: list[int] = []
    storage = Storage(NODE, "root-coord", HOSTS, data, manifest, copies, TransferTracker(),
                      set(), bus.emit, lambda urgent: None if urgent else refusal[0],
                      lambda nbytes: room[0], stored.append, 1 << 16, 1 << 30)
    app = web.Application()
    app[STORAGE_KEY] = storage
    objects.add_routes(app)
    vouch.add_routes(app)
    async with peers({NODE: app}, caller="gpu-1") as client:
        yield Served(storage, client, bus, refusal, room, stored)
    bus.close()


async def test_an_upload_is_verified_published_registered_and_reported(served: Served) -> None:
    body = os.urandom(200_000)
    answer = await served.put("k/a.npz", body)
    assert answer.status == 201, answer.raw
    store = served.storage
    final = store.data.copy_path("gpu-1", "npz", "k/a.npz", digest(body))
    assert final.read_bytes() == body
    art = store.manifest.get_artifact("npz", "k/a.npz", origin="gpu-1")
    assert art is not None and store.manifest.verified_holders(art) == {NODE}
    (done,) = served.events(EventType.DATA_SYNC_COMPLETED)
    assert done.target == NODE and done.artifacts == ["npz/k/a.npz"]
    assert served.stored == [len(body)] and store.uploads == set()
    assert [t.error for t in store.transfers.recent] == [None]

    head = await served.client.call(NODE, "HEAD", "/v1/objects/npz/k/a.npz", timeout=5,
                                    headers={H_SHA: digest(body), H_ORIGIN: "gpu-1"},
                                    parse=False)
    assert head.status == 200
    again = await served.put("k/a.npz", body)
    assert again.status == 200 and again.body["already_present"] is True
    assert served.stored == [len(body)], "nothing stored twice"


async def test_refusals_name_their_reason_and_leave_nothing_behind(served: Served) -> None:
    body = os.urandom(10_000)
    wrong = await served.put("k/b.npz", body, sha="0" * 64)
    assert wrong.status == 422 and "sha256 mismatch" in wrong.body["error"]
    (failed,) = served.events(EventType.DATA_SYNC_FAILED)
    assert failed.target == NODE and "sha256 mismatch" in failed.error
    assert list(served.storage.data.incoming.iterdir()) == []

    served.refusal[0] = "disk 81% full"
    held = await served.put("k/b.npz", body)
    assert held.status == 503 and held.body["error"].endswith("backpressure (disk 81% full)")
    urgent = await served.put("k/b.npz", body, **{H_URGENCY: "urgent"})
    assert urgent.status == 201, "urgent uploads pass backpressure"

    served.refusal[0], served.room[0] = None, False
    full = await served.put("k/c.npz", body)
    assert full.status == 507 and "has no room" in full.body["error"]
    unknown = await served.put("k/c.npz", body, **{H_ORIGIN: "nobody"})
    assert unknown.status == 400 and "unknown origin" in unknown.body["error"]


async def test_a_vouch_rehashes_now_and_quarantines_a_copy_that_rotted(served: Served) -> None:
    body = os.urandom(50_000)
    assert (await served.put("k/v.npz", body)).status == 201
    path = f"/v1/vouch/npz/k/v.npz?origin=gpu-1&sha256={digest(body)}"
    answer = await served.client.get(NODE, path, timeout=5)
    assert (answer["node"], answer["root_id"], answer["sha256"]) == (NODE, "root-coord",
                                                                     digest(body))
    assert "quarantined_to" not in answer
    final = served.storage.data.copy_path("gpu-1", "npz", "k/v.npz", digest(body))
    final.write_bytes(b"\0" * len(body))  # same size, other bytes: only a re-hash tells
    rotted = await served.client.get(NODE, path, timeout=5)
    assert rotted["sha256"] != digest(body) and rotted["quarantined_to"]
    assert not final.exists()
    assert served.events(EventType.REPLICA_QUARANTINED)[-1].artifact == "npz/k/v.npz"
    missing = await served.client.call(NODE, "GET", path, timeout=5, expect=(404,))
    assert "stores no copy" in missing.body["error"]
