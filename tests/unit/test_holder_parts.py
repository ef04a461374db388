"""The holder's side of a pull without a Node: ``stored_copy`` and ``Sender`` on a real
DataRoot, ClusterManifest, StoredCopies, Scanner, PauseGate, Breakers and PushPath (its
target a scripted transport).

The helpers here (``Holder``, ``make_holder``, ``own_source``, ``stored``) are shared by
the other gossip, scrub and verification ``*_parts`` tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.copies import StoredCopies
from engine.events import EventType
from engine.gossip.holder import SendRefused, Sender, StoredCopy, stored_copy
from engine.manifest import Artifact, ClusterManifest, Replica
from engine.manifest.store import stat_identity
from engine.transport import TransferError
from tests.unit.test_push_path_parts import NodeParts, make_node_parts, write_file

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

GOSSIP = {"auto_sync": {"strategy": "gossip"}}


# -- shared helpers -------------------------------------------------------------------------
@dataclass
class Holder:
    """One node's real parts plus its stored copies and its Sender."""

    parts: NodeParts
    copies: StoredCopies
    sender: Sender

    @property
    def name(self) -> str:
        return self.parts.pushes.path.node

    @property
    def manifest(self) -> ClusterManifest:
        return self.parts.manifest


def make_holder(tmp_path: Path, manifest: ClusterManifest, node: str, **settings) -> Holder:
    parts = make_node_parts(tmp_path, manifest, node=node, **settings)
    copies = StoredCopies(node, parts.data, manifest, parts.bus, f"root-{node}", 2)
    sender = Sender(node, data=parts.data, manifest=manifest, copies=copies,
                    scanner=parts.scanner, pushes=parts.pushes.path, pause=parts.pause,
                    breakers=parts.pushes.breakers)
    return Holder(parts, copies, sender)


def own_source(holder: Holder, rel: str, body: bytes) -> Artifact:
    """An own, finished source of ``holder``, registered with its identity on disk and
    its own verified replica row (as the scanner registers one)."""
    file = write_file(holder.parts.data.root / rel, body)
    dev, ino, size, mtime_ns, ctime_ns = stat_identity(file.stat())
    data_type, path = rel.split("/", 1)
    art = Artifact(data_type, path, path.split("/")[0], size, hashlib.sha256(body).hexdigest(),
                   file.stat().st_mtime, holder.name, size, mtime_ns, dev, ino, ctime_ns)
    holder.manifest.upsert_artifact(art)
    holder.manifest.set_replica(Replica(art.data_type, art.path, holder.name, art.sha256,
                                        time.time(), origin=holder.name,
                                        root_id=f"root-{holder.name}"))
    return art


def stored(holder: Holder, origin: str, rel: str, body: bytes,
           verified: bool = True) -> tuple[Artifact, Path]:
    """A copy of ``origin``'s ``rel`` that ``holder`` stores, with its replica row."""
    data_type, path = rel.split("/", 1)
    art = Artifact(data_type, path, path.split("/")[0], len(body),
                   hashlib.sha256(body).hexdigest(), time.time(), origin)
    holder.manifest.upsert_artifact(art)
    file = holder.copies.path(art.ident)
    write_file(file, body)
    holder.manifest.set_replica(Replica(art.data_type, art.path, holder.name, art.sha256,
                                        time.time() if verified else None, origin=origin,
                                        root_id=f"root-{holder.name}"))
    return art, file


async def drained(sender: Sender, seconds: float = 5.0) -> None:
    """Until the sender's background pushes have ended."""
    deadline = time.monotonic() + seconds
    while len(sender.tasks):
        assert time.monotonic() < deadline, "the send never ended"
        await asyncio.sleep(0.01)


@pytest.fixture
def holder(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest]) -> Holder:
    return make_holder(tmp_path, open_manifest("gpu-2"), "gpu-2", **GOSSIP)


def copy_of(holder: Holder, art: Artifact) -> StoredCopy | None:
    h = holder
    return stored_copy(art, node=h.name, data=h.parts.data, manifest=h.manifest,
                       copies=h.copies, scanner=h.parts.scanner)


# -- stored_copy ----------------------------------------------------------------------------
def test_an_own_unchanged_source_is_sent_from_the_source(holder: Holder) -> None:
    art = own_source(holder, "npz/k/a.npz", b"a" * 300)
    assert copy_of(holder, art) == StoredCopy(holder.parts.data.root / "npz/k/a.npz")


def test_an_own_source_changed_since_it_was_hashed_is_not_sent(holder: Holder) -> None:
    art = own_source(holder, "npz/k/a.npz", b"a" * 300)
    file = holder.parts.data.root / "npz/k/a.npz"
    write_file(file, b"b" * 300, age=30)  # same size, rewritten: another version now
    assert copy_of(holder, art) is None
    own = own_source(holder, "npz/k/b.npz", b"c" * 10)
    holder.manifest.record_deletion(own, ["coord", "cpu-1"])  # its source was deleted here
    assert copy_of(holder, own) is None


def test_a_received_copy_is_sent_only_verified_and_whole(holder: Holder) -> None:
    art, file = stored(holder, "gpu-1", "npz/k/a.npz", b"x" * 500)
    assert copy_of(holder, art) == StoredCopy(file)
    unverified, _ = stored(holder, "gpu-1", "npz/k/b.npz", b"y" * 500, verified=False)
    assert copy_of(holder, unverified) is None
    short, short_file = stored(holder, "gpu-1", "npz/k/c.npz", b"z" * 500)
    short_file.write_bytes(b"z" * 499)
    assert copy_of(holder, short) is None
    gone, gone_file = stored(holder, "gpu-1", "npz/k/d.npz", b"w" * 500)
    gone_file.unlink()
    assert copy_of(holder, gone) is None


def test_an_own_database_whose_snapshot_was_dropped_is_re_made_first(holder: Holder) -> None:
    art = own_source(holder, "games/k/g.db", b"SQLite format 3\x00" + b"\x00" * 100)
    copy = copy_of(holder, art)
    assert copy is not None and copy.restore_snapshot
    assert copy.file == holder.parts.scanner.snapshot_path("games", "k/g.db")


# -- Sender ---------------------------------------------------------------------------------
async def test_a_send_pushes_the_copy_through_the_push_path_once(holder: Holder) -> None:
    art, file = stored(holder, "gpu-1", "npz/k/a.npz", b"x" * 500)
    transport = holder.parts.transport
    transport.gate = asyncio.Event()
    answer = holder.sender.start("gpu-1", "npz", "k/a.npz", art.sha256, "cpu-1")
    assert answer == {"node": "gpu-2", "artifact": "npz/k/a.npz", "to": "cpu-1",
                      "started": True}
    await asyncio.wait_for(transport.started.wait(), 5)
    assert (art.ident, "cpu-1") in holder.parts.pushes.path.inflight
    again = holder.sender.start("gpu-1", "npz", "k/a.npz", art.sha256, "cpu-1")
    assert again["started"] is False, "the same push is under way"
    assert holder.sender.status()["sending"] == 1
    transport.gate.set()
    await drained(holder.sender)
    [request] = transport.requests
    assert (request.target, request.reason, request.source_file) == ("cpu-1", "gossip", file)
    assert "cpu-1" in {r.node for r in holder.manifest.replicas(art)}, "the receipt is recorded"
    assert len(holder.parts.pushes.path.inflight) == 0
    assert holder.sender.status() == {"sends": 1, "sends_refused": 0, "sending": 0,
                                      "last_send_error": None}


async def test_a_failed_send_is_reported_by_the_push_path(holder: Holder) -> None:
    art, _ = stored(holder, "gpu-1", "npz/k/a.npz", b"x" * 500)
    holder.parts.transport.fail["cpu-1"] = TransferError("disk full", retryable=True)
    holder.sender.start("gpu-1", "npz", "k/a.npz", art.sha256, "cpu-1")
    await drained(holder.sender)
    [failed] = holder.parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.reason, failed.retry_in_seconds) == ("cpu-1", "gossip", None)


def test_what_cannot_be_sent_is_refused_with_its_status(holder: Holder) -> None:
    art, _ = stored(holder, "gpu-1", "npz/k/a.npz", b"x" * 500)
    sha = art.sha256

    def refused(*args: str) -> tuple[int, str]:
        with pytest.raises(SendRefused) as info:
            holder.sender.start(*args)
        return info.value.status, str(info.value)

    assert refused("gpu-1", "npz", "k/a.npz", "0" * 64, "cpu-1")[0] == 404
    unverified, _ = stored(holder, "gpu-1", "npz/k/b.npz", b"y" * 5, verified=False)
    status, message = refused("gpu-1", "npz", "k/b.npz", unverified.sha256, "cpu-1")
    assert status == 404 and "no verified copy" in message
    holder.parts.pause.set(True, "test")
    assert refused("gpu-1", "npz", "k/a.npz", sha, "cpu-1") == (
        503, "gpu-2 is paused: it sends nothing")
    holder.parts.pause.set(False, "test")
    for _ in range(3):
        holder.parts.pushes.breakers.failure("cpu-1", "refused")
    status, message = refused("gpu-1", "npz", "k/a.npz", sha, "cpu-1")
    assert status == 503 and "circuit breaker" in message
    assert holder.sender.counts == {"sends": 0, "sends_refused": 4}
    assert holder.parts.transport.requests == []


async def test_stop_cancels_the_sends_under_way_and_releases_their_claims(
        holder: Holder) -> None:
    art, _ = stored(holder, "gpu-1", "npz/k/a.npz", b"x" * 500)
    holder.parts.transport.gate = asyncio.Event()  # never set: the push hangs
    holder.sender.start("gpu-1", "npz", "k/a.npz", art.sha256, "cpu-1")
    await asyncio.wait_for(holder.parts.transport.started.wait(), 5)
    await holder.sender.stop()
    assert len(holder.sender.tasks) == 0
    assert len(holder.parts.pushes.path.inflight) == 0
    assert holder.parts.transport.sent == [], "nothing arrived"
