"""ClusterEventFeed without a Node: each followed node is a real aiohttp peer on loopback
serving a real EventBus through the real ``GET /v1/events`` handler; the feed opens its
streams with a real PeerClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiohttp import web

from engine import cluster_feed
from engine.cluster_feed import ClusterEventFeed
from engine.events import Event, EventBus, NodeSuspect
from engine.server.context import NODE_KEY
from engine.server.events_stream import stream_events
from tests.support.peer_server import app_of, peers

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_feed, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(cluster_feed, "RETRY_MAX", 0.2)


class Served:
    """A node's event bus behind ``/v1/events``; ``sinces`` are the cursors asked from."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.node = SimpleNamespace(events=EventBus(name))
        self.sinces: list[int] = []

        async def events(request: web.Request) -> web.StreamResponse:
            self.sinces.append(int(request.query["since"]))
            return await stream_events(request)

        self.app = app_of({"GET /v1/events": events})
        self.app[NODE_KEY] = self.node

    @property
    def bus(self) -> EventBus:
        return self.node.events

    def emit(self, count: int) -> None:
        for n in range(count):
            self.bus.emit(NodeSuspect(node=self.name, misses=n, error="test"))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def seqs(events: list[Event], node: str) -> list[int]:
    return [e.seq for e in events if e.node == node]


async def test_every_nodes_events_reach_the_listener_once_in_order() -> None:
    one, two = Served("gpu-1"), Served("gpu-2")
    one.emit(3)
    seen: list[Event] = []
    async with peers({"gpu-1": one.app, "gpu-2": two.app}) as client:
        feed = ClusterEventFeed(client, {"gpu-1": "ignored url", "gpu-2": "ignored url"},
                                keep=100)
        feed.listen(seen.append)
        await feed.start()
        await until(lambda: feed.connected["gpu-1"] and feed.connected["gpu-2"])
        two.emit(2)
        one.emit(2)
        await until(lambda: feed.cursors == {"gpu-1": 5, "gpu-2": 2})
        await feed.stop()
        one.emit(1)
        await asyncio.sleep(0.1)
    assert seqs(seen, "gpu-1") == [1, 2, 3, 4, 5] and seqs(seen, "gpu-2") == [1, 2]
    assert list(feed.recent) == seen and feed.cursors["gpu-1"] == 5  # nothing after stop
    assert one.sinces == [0] and two.sinces == [0]


async def test_a_dropped_stream_resumes_from_the_cursor_without_gaps_or_repeats() -> None:
    node = Served("gpu-1")
    node.emit(4)
    seen: list[Event] = []
    async with peers({"gpu-1": node.app}) as client:
        feed = ClusterEventFeed(client, ["gpu-1"], keep=3)
        feed.listen(seen.append)
        await feed.start()
        await until(lambda: feed.cursors["gpu-1"] == 4)
        node.bus.end_streams()  # the stream ends (the node shuts down, a proxy drops it)
        await until(lambda: len(node.sinces) == 2 and feed.connected["gpu-1"])
        node.emit(2)
        await until(lambda: feed.cursors["gpu-1"] == 6)
        await feed.stop()
    assert node.sinces == [0, 4]
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in feed.recent] == [4, 5, 6]  # bounded: the newest ``keep``


async def test_a_node_whose_numbering_starts_over_is_followed_from_one() -> None:
    node = Served("gpu-1")
    node.emit(5)
    seen: list[Event] = []
    async with peers({"gpu-1": node.app}) as client:
        feed = ClusterEventFeed(client, ["gpu-1"])
        feed.listen(seen.append)
        await feed.start()
        await until(lambda: feed.cursors["gpu-1"] == 5)
        old = node.bus
        node.node.events = EventBus("gpu-1")  # the node lost its log: a new numbering
        node.emit(2)
        old.end_streams()
        await until(lambda: feed.log_ids["gpu-1"] == node.bus.log_id
                    and feed.cursors["gpu-1"] == 2)
        await feed.stop()
    assert node.sinces == [0, 5, 0]
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 1, 2]


async def test_a_node_that_refuses_is_retried_with_a_growing_capped_backoff() -> None:
    tries: list[float] = []

    async def refuse(_request: web.Request) -> web.Response:
        tries.append(time.monotonic())
        return web.json_response({"error": "starting"}, status=503)

    async with peers({"gpu-1": {"GET /v1/events": refuse}}) as client:
        feed = ClusterEventFeed(client, ["gpu-1"])
        await feed.start()
        await until(lambda: len(tries) >= 6)
        await feed.stop()
        count = len(tries)
        await asyncio.sleep(0.3)
    assert len(tries) == count  # stopped: no further try
    assert len(feed._follows) == 0
    assert not feed.connected["gpu-1"] and feed.cursors["gpu-1"] == 0
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.18  # 0.05, 0.1, 0.2 ...
    assert all(0.18 <= g < 0.6 for g in gaps[3:])  # ... capped at RETRY_MAX


async def test_a_broken_listener_does_not_stop_the_feed() -> None:
    node = Served("gpu-1")
    node.emit(3)
    seen: list[int] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("listener bug")

    async with peers({"gpu-1": node.app}) as client:
        feed = ClusterEventFeed(client, ["gpu-1"])
        feed.listen(broken)
        feed.listen(lambda e: seen.append(e.seq))
        await feed.start()
        await until(lambda: feed.cursors["gpu-1"] == 3)
        feed.unlisten(broken)
        await feed.stop()
    assert seen == [1, 2, 3]
