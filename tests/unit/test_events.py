"""engine.events: one payload schema per type, envelopes, the bus, its JSONL log and live feeds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from engine.events import (
    PAYLOADS, DataSyncCompleted, DataSyncFailed, Event, EventBus, EventType, NodeDown,
    NodeSuspect, Payload, Severity, SyncPaused,
)

pytestmark = pytest.mark.unit


def _all_payload_classes() -> list[type[Payload]]:
    found, todo = [], list(Payload.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _sample(hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in typing.get_args(hint) if a is not type(None)]
        return _sample(real[0], name)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_sample(item, name + "0"), _sample(item, name + "1")]
    if hint is str:
        return f"{name}-value"
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is float:
        return 2.5
    raise AssertionError(f"no sample for {name}: {hint!r}")


def sample_payload(cls: type[Payload]) -> Payload:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _sample(hints[f.name], f.name) for f in dataclasses.fields(cls)})


def sync_failed(n: int = 1) -> DataSyncFailed:
    return DataSyncFailed(source="gpu-1", target="coord", artifact=f"games/a{n}.db", error="boom",
                          attempt=n, retry_in_seconds=1.5, reason="test")


# -- types ------------------------------------------------------------------------------------

def test_exactly_one_payload_class_per_event_type() -> None:
    classes = _all_payload_classes()
    assert len(classes) == len(EventType)
    assert sorted(c.event_type.value for c in classes) == sorted(t.value for t in EventType)
    assert set(PAYLOADS) == set(EventType)
    for event_type, cls in PAYLOADS.items():
        assert cls.event_type is event_type
        assert isinstance(cls.severity, Severity)
        assert dataclasses.is_dataclass(cls)


def test_payloads_are_frozen() -> None:
    p = sample_payload(NodeSuspect)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.node = "other"  # type: ignore[misc]


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_every_payload_round_trips_through_json(event_type: EventType) -> None:
    payload = sample_payload(PAYLOADS[event_type])
    event = Event(12, 1_700_000_000.5, "gpu-1", payload)
    data = json.loads(json.dumps(event.to_dict()))
    assert data["type"] == event_type.value
    assert data["severity"] == payload.severity.value
    assert data["seq"] == 12 and data["node"] == "gpu-1"
    back = Event.from_dict(data)
    assert back == event
    assert type(back.payload) is PAYLOADS[event_type]
    assert back.type is event_type and back.severity is payload.severity


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_from_dict_rejects_missing_or_extra_payload_fields(event_type: EventType) -> None:
    data = Event(1, 1.0, "n", sample_payload(PAYLOADS[event_type])).to_dict()
    for name in list(data["payload"]):
        missing = {**data, "payload": {k: v for k, v in data["payload"].items() if k != name}}
        with pytest.raises(ValueError):
            Event.from_dict(missing)
    extra = {**data, "payload": {**data["payload"], "unexpected": 1}}
    with pytest.raises(ValueError):
        Event.from_dict(extra)


@pytest.mark.parametrize("broken", [
    lambda d: {**d, "type": "NO_SUCH_EVENT"},
    lambda d: {k: v for k, v in d.items() if k != "type"},
    lambda d: {k: v for k, v in d.items() if k != "payload"},
    lambda d: {k: v for k, v in d.items() if k != "seq"},
    lambda d: {**d, "payload": None},
    lambda d: {**d, "seq": "not a number"},
])
def test_from_dict_rejects_broken_envelopes(broken) -> None:
    data = Event(1, 1.0, "n", sync_failed()).to_dict()
    with pytest.raises(ValueError):
        Event.from_dict(broken(data))


def test_payload_of_one_type_under_another_type_is_rejected() -> None:
    data = Event(1, 1.0, "n", sync_failed()).to_dict()
    data["type"] = EventType.DATA_SYNC_COMPLETED.value
    with pytest.raises(ValueError):
        Event.from_dict(data)


# -- bus: numbering and log -------------------------------------------------------------------

def test_bus_numbers_events_and_appends_jsonl(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    bus = EventBus("gpu-1", log)
    assert bus.last_seq == 0
    events = [bus.emit(sync_failed(i)) for i in range(1, 4)]
    assert [e.seq for e in events] == [1, 2, 3] and bus.last_seq == 3
    assert all(e.node == "gpu-1" for e in events)
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert [Event.from_dict(json.loads(line)) for line in lines] == events
    bus.close()


def test_new_bus_on_same_log_continues_numbering(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    bus = EventBus("gpu-1", log)
    for i in range(5):
        bus.emit(sync_failed(i))
    bus.close()
    bus2 = EventBus("gpu-1", log)
    assert bus2.last_seq == 5
    assert bus2.emit(sync_failed(9)).seq == 6
    assert list(bus2.since(0)) and [e.seq for e in bus2.since(0)] == [1, 2, 3, 4, 5, 6]
    bus2.close()
    assert len(log.read_text().splitlines()) == 6


def test_new_bus_continues_numbering_after_a_large_last_event(tmp_path: Path) -> None:
    """The newest event may be bigger than the 64 KiB tail the bus reads on start (e.g. a
    DATA_SYNC_COMPLETED for a cycle of thousands of files): numbering must still continue."""
    log = tmp_path / "events.jsonl"
    bus = EventBus("gpu-1", log)
    bus.emit(sync_failed(1))
    big = DataSyncCompleted(source="gpu-1", target="coord", files=3000, bytes=1,
                            artifacts=[f"games/hex8_2p/gpu-1_{i:06d}.db" for i in range(3000)],
                            reason="cycle")
    assert bus.emit(big).seq == 2
    bus.close()
    assert len(log.read_text().splitlines()[-1]) > 65536
    bus2 = EventBus("gpu-1", log)
    try:
        assert bus2.last_seq == 2
        assert bus2.emit(sync_failed(3)).seq == 3
    finally:
        bus2.close()


def test_bus_ignores_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    bus = EventBus("gpu-1", log)
    for i in range(3):
        bus.emit(sync_failed(i))
    bus.close()
    with open(log, "a") as fh:
        fh.write('{"seq": 4, "ts": 1.0, "no')  # a crash mid-write
    bus2 = EventBus("gpu-1", log)
    assert bus2.last_seq == 3
    bus2.close()


def test_memory_only_bus(tmp_path: Path) -> None:
    bus = EventBus("n")
    assert [bus.emit(sync_failed(i)).seq for i in range(3)] == [1, 2, 3]
    assert [e.seq for e in bus.since(1)] == [2, 3]
    assert [e.seq for e in bus.recent(2)] == [2, 3]
    bus.close()


# -- bus: since() -----------------------------------------------------------------------------

def test_since_from_memory_is_exact_and_ordered(tmp_path: Path) -> None:
    bus = EventBus("gpu-1", tmp_path / "e.jsonl")
    events = [bus.emit(sync_failed(i)) for i in range(10)]
    for n in range(0, 12):
        assert list(bus.since(n)) == events[n:], n
    bus.close()


def test_since_falls_back_to_the_log_for_old_events(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    bus = EventBus("gpu-1", log, memory=3)
    events = [bus.emit(sync_failed(i)) for i in range(10)]
    assert [e.seq for e in bus.recent()] == [8, 9, 10]  # only the newest are in memory
    for n in range(0, 11):
        got = list(bus.since(n))
        assert got == events[n:], n
        assert [e.seq for e in got] == list(range(n + 1, 11))
    bus.close()


def test_since_on_a_reopened_bus_reads_the_log(tmp_path: Path) -> None:
    log = tmp_path / "e.jsonl"
    bus = EventBus("gpu-1", log)
    first = [bus.emit(sync_failed(i)) for i in range(4)]
    bus.close()
    bus2 = EventBus("gpu-1", log, memory=2)
    assert list(bus2.since(0)) == first  # nothing in memory yet: all from the log
    later = [bus2.emit(sync_failed(i)) for i in range(3)]
    every = first + later
    for n in range(0, 8):
        assert list(bus2.since(n)) == every[n:], n
    bus2.close()


# -- bus: listeners ---------------------------------------------------------------------------

def test_listeners_and_type_filter(tmp_path: Path) -> None:
    bus = EventBus("n")
    everything: list[Event] = []
    downs: list[Event] = []
    bus.listen(everything.append)
    bus.listen(downs.append, event_type=EventType.NODE_DOWN)
    a = bus.emit(sync_failed())
    b = bus.emit(NodeDown(node="gpu-2", misses=3, error="timeout"))
    c = bus.emit(SyncPaused(node="n", requested_by="op"))
    assert everything == [a, b, c]
    assert downs == [b]


def test_a_raising_listener_stops_neither_emit_nor_other_listeners(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "e.jsonl"
    bus = EventBus("n", log)
    before: list[Event] = []
    after: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.listen(before.append)
    bus.listen(broken)
    bus.listen(after.append)
    with caplog.at_level(logging.ERROR, logger="engine.events.bus"):
        e1 = bus.emit(sync_failed(1))
        e2 = bus.emit(sync_failed(2))
    assert before == [e1, e2] and after == [e1, e2]
    assert bus.last_seq == 2
    assert len(log.read_text().splitlines()) == 2
    assert any("listener bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    bus.close()


# -- bus: live subscriptions ------------------------------------------------------------------

async def test_subscription_receives_live_events_in_order() -> None:
    bus = EventBus("n")
    bus.emit(sync_failed(0))  # before subscribing: not delivered live
    sub = bus.subscribe()
    sent = [bus.emit(sync_failed(i)) for i in range(1, 4)]
    got = [await asyncio.wait_for(sub.get(), 1) for _ in sent]
    assert got == sent
    sub.close()
    bus.emit(sync_failed(9))
    assert sub.queue.empty()  # a closed subscription gets nothing more


async def test_overflowing_subscriber_is_cut_off_others_unaffected() -> None:
    bus = EventBus("n")
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe(maxsize=100)
    sent = [bus.emit(sync_failed(i)) for i in range(10)]
    assert slow.overflowed is True
    assert fast.overflowed is False
    assert slow not in bus._subscriptions and fast in bus._subscriptions
    drained = []
    while not slow.queue.empty():
        drained.append(slow.queue.get_nowait())
    assert drained[-1] is None  # the feed ended
    assert None not in drained[:-1]
    assert [await asyncio.wait_for(fast.get(), 1) for _ in sent] == sent
    bus.emit(sync_failed(11))
    assert slow.queue.empty()  # removed: no more deliveries
    assert (await asyncio.wait_for(fast.get(), 1)).seq == 11


async def test_cut_off_subscriber_can_resume_without_a_gap() -> None:
    """A cut-off consumer resumes with since=<last seq it received>. So what it received before
    the None must be a gap-free run of the events sent to it; otherwise resuming loses events."""
    bus = EventBus("n")
    sub = bus.subscribe(maxsize=2)
    sent = [bus.emit(sync_failed(i)) for i in range(1, 6)]
    received = []
    while (event := sub.queue.get_nowait()) is not None:
        received.append(event)
    last = received[-1].seq if received else 0
    resumed = received + list(bus.since(last))
    assert [e.seq for e in resumed] == [e.seq for e in sent]


async def test_end_streams_sends_none_to_every_subscriber() -> None:
    bus = EventBus("n")
    a, b = bus.subscribe(), bus.subscribe(maxsize=1)
    bus.emit(sync_failed(1))  # fills b
    bus.end_streams()
    assert (await a.get()).seq == 1
    assert await a.get() is None
    assert not bus._subscriptions
    bus.close()
