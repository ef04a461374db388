"""engine.daemons.breaker: closed -> open after N failures -> half-open probe -> closed/open."""

from __future__ import annotations

import pytest

from engine.daemons.breaker import MAX_BACKOFF_FACTOR, Breakers
from engine.events import EventBus

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breakers() -> tuple[Breakers, Clock, EventBus]:
    clock, bus = Clock(), EventBus("gpu-1")
    return Breakers("gpu-1", bus, failure_threshold=3, reset_seconds=10, clock=clock), clock, bus


def states(bus: EventBus) -> list[tuple[str, str]]:
    return [(e.payload.previous, e.payload.state) for e in bus.recent(100)]  # type: ignore[attr-defined]


def test_opens_after_consecutive_failures_and_a_success_resets_the_count() -> None:
    b, _clock, bus = breakers()
    b.failure("coord", "refused")
    b.failure("coord", "refused")
    b.success("coord")
    b.failure("coord", "refused")
    b.failure("coord", "refused")
    assert b.allow("coord")
    b.failure("coord", "refused")
    assert not b.allow("coord") and not b.begin("coord")
    assert b.state("coord") == "open" and b.open_targets() == ["coord"]
    assert states(bus) == [("closed", "open")]
    assert bus.recent(1)[0].payload.retry_in_seconds == 10  # type: ignore[attr-defined]


def test_half_open_lets_one_probe_through_success_closes() -> None:
    b, clock, bus = breakers()
    for _ in range(3):
        b.failure("coord", "timeout")
    clock.now += 10
    assert b.state("coord") == "half_open"
    assert b.begin("coord")          # the probe
    assert not b.begin("coord")      # no second transfer while it runs
    b.success("coord")
    assert b.state("coord") == "closed" and b.allow("coord")
    assert states(bus) == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_reopens_with_a_doubled_wait_up_to_the_cap() -> None:
    b, clock, _bus = breakers()
    for _ in range(3):
        b.failure("coord", "timeout")
    waits = []
    for _ in range(6):
        clock.now += b.get("coord").wait
        assert b.begin("coord")
        b.failure("coord", "timeout")
        waits.append(b.get("coord").wait)
    assert waits == [20, 40, 80, 80, 80, 80]
    assert max(waits) == 10 * MAX_BACKOFF_FACTOR
    assert not b.allow("coord")


def test_breakers_are_per_target() -> None:
    b, _clock, _bus = breakers()
    for _ in range(3):
        b.failure("cpu-1", "dead")
    assert not b.allow("cpu-1") and b.allow("coord")
    assert set(b.status()) == {"cpu-1"}


def test_a_probe_that_ends_without_a_verdict_lets_the_next_one_through() -> None:
    b, clock, _bus = breakers()
    for _ in range(3):
        b.failure("coord", "timeout")
    clock.now += 10
    assert b.begin("coord") and not b.begin("coord")
    b.release("coord")  # e.g. the source vanished before anything was sent
    assert b.state("coord") == "half_open" and b.begin("coord")
