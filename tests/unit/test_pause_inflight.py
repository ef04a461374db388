"""PauseGate and InFlight: the node-wide pause switch and the claimed (version, target) pairs."""

from __future__ import annotations

import pytest

from engine.events import EventBus, EventType
from engine.inflight import InFlight
from engine.pause import PauseGate

pytestmark = pytest.mark.unit

A = ("gpu-1", "npz", "k/a.npz", "a" * 64)
B = ("gpu-1", "npz", "k/b.npz", "b" * 64)


def test_the_gate_reports_each_change_once_and_runs_listeners_on_resume_only() -> None:
    bus = EventBus("gpu-1")
    gate = PauseGate("gpu-1", bus.emit)
    resumed: list[str] = []
    gate.on_resume(lambda: resumed.append("first"))
    gate.on_resume(lambda: resumed.append("second"))
    assert gate.paused is False
    assert gate.set(False, "api") is False  # no change: no event
    assert gate.set(True, "operator") is True
    assert gate.paused is True and resumed == []
    assert gate.set(True, "again") is False
    assert gate.set(False, "operator") is True
    assert gate.paused is False
    assert resumed == ["first", "second"]
    events = [(e.type, e.payload.node, e.payload.requested_by) for e in bus.recent()]
    assert events == [(EventType.SYNC_PAUSED, "gpu-1", "operator"),
                      (EventType.SYNC_RESUMED, "gpu-1", "operator")]


def test_claims_are_exclusive_until_released() -> None:
    flight = InFlight()
    assert flight.claim([(A, "coord"), (B, "coord")]) == {(A, "coord"), (B, "coord")}
    assert flight.claim([(A, "coord"), (A, "cpu-1")]) == {(A, "cpu-1")}  # only the new one
    assert flight.claim_one((A, "coord")) is False
    assert len(flight) == 3 and (A, "cpu-1") in flight and (B, "cpu-1") not in flight
    assert flight.idents() == {A, B}
    snapshot = iter(flight)
    flight.release([(A, "coord"), (A, "cpu-1"), (B, "nowhere")])
    assert len(list(snapshot)) == 3, "iterating a copy: releasing meanwhile is safe"
    assert set(flight) == {(B, "coord")} and flight.idents() == {B}
    assert flight.claim_one((A, "coord")) is True
    flight.release([(A, "coord"), (B, "coord")])
    assert len(flight) == 0 and flight.idents() == set()
