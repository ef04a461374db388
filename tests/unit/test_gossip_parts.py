"""GossipDaemon and Pulls without a Node: two gossip nodes with real manifests, routers,
pause gates, breakers, stored copies, senders and push paths, joined by a fake peer client
that hands each request to the other daemon the way ``engine.server.gossip`` would.

A round exchanges manifest deltas both ways, then asks the holder of what this node
should hold to send it; the holder's Sender pushes through its own push path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.daemons.gossip import GossipDaemon, GossipError
from engine.events import EventType
from engine.gossip import ProtocolError
from engine.gossip.holder import SendRefused
from engine.gossip.pulls import ASK_AGAIN_SECONDS, Pulls
from engine.manifest import ClusterManifest
from engine.peer_client import PeerAnswer, PeerError
from tests.unit.test_holder_parts import (GOSSIP, Holder, drained, make_holder, own_source,
                                          stored)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

SEND_FIELDS = ("origin", "data_type", "path", "sha256", "to")


class Wire:
    """A stand-in PeerClient: ``call`` hands a request to the named node's daemon (its
    ``serve_exchange`` / ``serve_delta``) or Sender, as the HTTP routes would; a node in
    ``down`` does not answer."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.down: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    async def call(self, peer: str, method: str, path: str, *, timeout: float,
                   expect: Collection[int] = (200,), data: bytes | None = None,
                   headers: Mapping[str, str] | None = None, **_: Any) -> PeerAnswer:
        assert method == "POST" and timeout > 0
        assert headers == {"Content-Type": "application/json"}
        self.calls.append((peer, path))
        if peer in self.down or peer not in self.nodes:
            raise PeerError(f"{peer} unreachable: ClientConnectorError", node=peer,
                            unreachable=True)
        node, body = self.nodes[peer], json.loads(data or b"null")
        try:
            if path == "/v1/gossip":
                status, answer = 200, node.gossip.serve_exchange(body)
            elif path == "/v1/gossip/delta":
                status, answer = 200, node.gossip.serve_delta(body)
            else:
                status, answer = 202, node.holder.sender.start(*(body[k] for k in SEND_FIELDS))
        except SendRefused as exc:
            status, answer = exc.status, {"error": str(exc)}
        except ProtocolError as exc:
            status, answer = 400, {"error": str(exc)}
        raw = json.dumps(answer).encode()
        if status not in expect:
            raise PeerError(f"{peer} answered POST {path} with {status}: {answer['error']}",
                            node=peer, status=status)
        return PeerAnswer(status, json.loads(raw), raw)


class Node:
    """One gossip node's parts (no engine.node.Node): a Holder plus its GossipDaemon."""

    def __init__(self, holder: Holder, wire: Wire, clock: Callable[[], float]) -> None:
        self.holder = holder
        parts = holder.parts
        self.uploads: set[Path] = set()
        self.pulls = Pulls(holder.name, manifest=holder.manifest, router=parts.router,
                           data=parts.data, copies=holder.copies, uploads=self.uploads,
                           clock=clock)
        self.percent = 12.5
        self.pressure: str | None = None
        self.gossip = GossipDaemon(
            holder.name, parts.config.auto_sync, parts.config.transfer.max_concurrent,
            parts.config.hosts, manifest=holder.manifest, router=parts.router,
            pulls=self.pulls, sender=holder.sender, pause=parts.pause,
            breakers=parts.pushes.breakers, peers=wire,  # type: ignore[arg-type]
            emit=parts.bus.emit, disk_percent=lambda: self.percent,
            pressure=lambda: self.pressure)
        wire.nodes[holder.name] = self


@pytest.fixture
def clock() -> list[float]:
    return [5000.0]


@pytest.fixture
def cluster(tmp_path: Path, open_manifest: Callable[[str], ClusterManifest],
            clock: list[float]) -> tuple[Node, Node, Wire]:
    """gpu-1 and gpu-2 gossiping; cpu-1, the third gossip node, does not answer."""
    wire = Wire()
    wire.down.add("cpu-1")
    nodes = [Node(make_holder(tmp_path, open_manifest(n), n, **GOSSIP), wire, lambda: clock[0])
             for n in ("gpu-1", "gpu-2")]
    return nodes[0], nodes[1], wire


async def test_a_round_exchanges_deltas_then_asks_the_holder_which_pushes_here(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, peer, wire = cluster
    art = own_source(peer.holder, "npz/k/a.npz", b"a" * 400)
    mine = own_source(me.holder, "npz/k/mine.npz", b"m" * 100)
    peer.pressure = "queue"
    await me.gossip.round()
    # both ways: gpu-1 learnt gpu-2's artifact, gpu-2 gpu-1's (the follow-up delta)
    assert me.holder.manifest.get_artifact("npz", "k/a.npz", "gpu-2") == art
    assert peer.holder.manifest.get_artifact("npz", "k/mine.npz", "gpu-1") == mine
    assert sorted(me.gossip.peers) == ["cpu-1", "gpu-2"]
    figures = me.gossip.figures
    assert (figures["rounds"], figures["exchanges"], figures["exchange_failures"]) == (1, 1, 1)
    assert figures["rows_merged"] >= 2 and figures["bytes_sent"] > 0
    assert figures["bytes_received"] > 0
    assert me.holder.parts.view.backpressure == {"gpu-2": "queue"}, "the peer's answer told"
    # the unreachable peer: a DATA_SYNC_FAILED naming the manifest, and its breaker fed
    [failed] = me.holder.parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.artifact, failed.reason) == ("cpu-1", "manifest", "gossip")
    assert "unreachable" in failed.error and "cpu-1" in me.gossip.last_error
    assert me.holder.parts.pushes.breakers.get("cpu-1").failures == 1
    # then the pull: gpu-2 was asked and pushes its source here through its push path
    assert ("gpu-2", "/v1/gossip/send") in wire.calls
    assert figures["pulls_requested"] == 1 and art.ident in me.pulls.requested
    await drained(peer.holder.sender)
    [request] = peer.holder.parts.transport.requests
    assert (request.target, request.reason, request.artifact.key) == ("gpu-1", "gossip", art.key)
    assert me.gossip.status()["pulls_awaited"] == 1


async def test_a_paused_node_exchanges_but_asks_for_nothing(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, peer, wire = cluster
    own_source(peer.holder, "npz/k/a.npz", b"a" * 400)
    me.holder.parts.pause.set(True, "operator")
    await me.gossip.round()
    assert me.gossip.figures["exchanges"] == 1
    assert me.holder.manifest.get_artifact("npz", "k/a.npz", "gpu-2") is not None
    assert [c for c in wire.calls if c[1] == "/v1/gossip/send"] == []
    me.holder.parts.pause.set(False, "operator")
    await me.gossip.round()
    assert me.gossip.figures["pulls_requested"] == 1


async def test_a_refused_send_request_is_reported_and_spares_the_breaker(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, peer, _wire = cluster
    art = own_source(peer.holder, "npz/k/a.npz", b"a" * 400)
    await me.gossip.exchange("gpu-2")
    peer.holder.parts.pause.set(True, "operator")  # the holder refuses: 503 paused
    await me.gossip.pull(["gpu-2"])
    assert me.gossip.figures["pull_failures"] == 1 and me.gossip.figures["pulls_requested"] == 0
    [failed] = me.holder.parts.events(EventType.DATA_SYNC_FAILED)
    assert (failed.target, failed.artifact) == ("gpu-2", art.key)
    assert failed.error.startswith("send request refused:") and "503" in failed.error
    assert me.holder.parts.pushes.breakers.get("gpu-2").failures == 0, "it did answer"
    assert art.ident not in me.pulls.requested


async def test_peer_errors_become_gossip_errors_keeping_unreachable(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, _peer, _wire = cluster
    with pytest.raises(GossipError) as down:
        await me.gossip._post("cpu-1", "/v1/gossip", {"x": 1})
    assert down.value.unreachable
    with pytest.raises(GossipError) as refused:
        await me.gossip._post("gpu-2", "/v1/gossip/send", {k: "x" for k in SEND_FIELDS},
                              expect=202)
    assert not refused.value.unreachable and "404" in str(refused.value)


async def test_serving_refuses_a_sender_outside_the_cluster(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, peer, _wire = cluster
    request = peer.gossip.protocol.request("gpu-1")
    assert me.gossip.serve_exchange(request)["node"] == "gpu-1"
    assert me.gossip.served["exchanges"] == 1
    with pytest.raises(ProtocolError, match="not a host"):
        me.gossip.serve_exchange({**request, "node": "stranger"})


async def test_health_turns_unhealthy_when_no_exchange_succeeds(
        cluster: tuple[Node, Node, Wire]) -> None:
    me, _peer, wire = cluster
    wire.down.add("gpu-2")
    me.gossip.interval = 0.01
    await me.gossip.round()
    time.sleep(0.05)
    health = me.gossip.health_check()
    assert not health.is_healthy and "no gossip exchange succeeded" in health.message
    wire.down.discard("gpu-2")
    await me.gossip.round()
    assert me.gossip.health_check().is_healthy


# -- Pulls ----------------------------------------------------------------------------------
def test_pulls_want_what_routing_places_here_and_count_arrivals(
        cluster: tuple[Node, Node, Wire], clock: list[float]) -> None:
    me, peer, _wire = cluster
    manifest = me.holder.manifest
    a, _ = stored(peer.holder, "gpu-2", "npz/k/a.npz", b"a" * 10)  # rows only matter here
    b, _ = stored(peer.holder, "gpu-2", "npz/k/b.npz", b"b" * 10)
    for art in (a, b):
        manifest.upsert_artifact(art)
    own_source(me.holder, "npz/k/mine.npz", b"m" * 10)
    assert [x.key for x in me.pulls.wanted(10)] == [a.key, b.key], "never its own"
    assert [x.key for x in me.pulls.wanted(1)] == [a.key]
    me.pulls.asked(a, "gpu-2")
    assert [x.key for x in me.pulls.wanted(10)] == [b.key], "asked, on its way"
    # a part arriving for b: not asked for twice
    me.uploads.add(me.holder.parts.data.partial_path("npz", "k/b.npz", b.sha256,
                                                     origin="gpu-2"))
    assert me.pulls.wanted(10) == []
    clock[0] += ASK_AGAIN_SECONDS + 1
    assert [x.key for x in me.pulls.wanted(10)] == [a.key], "asked long ago: again"
    me.pulls.asked(a, "gpu-2")
    stored(me.holder, "gpu-2", "npz/k/a.npz", b"a" * 10)  # the copy arrived, verified
    assert me.pulls.wanted(10) == [] and me.pulls.arrived == 1 and not me.pulls.requested
