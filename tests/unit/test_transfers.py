"""engine.transfers.TransferTracker: live and recent transfers, progress and ETA."""

from __future__ import annotations

import time

import pytest

from engine.transfers import Transfer, TransferTracker

pytestmark = pytest.mark.unit


def start(tracker: TransferTracker, size: int = 1000, **extra) -> Transfer:
    fields = dict(direction="out", source="gpu-1", target="coord", artifact="games/a.db",
                  size=size, transport="http")
    return tracker.start(**{**fields, **extra})


def test_start_and_finish_move_between_live_and_recent() -> None:
    t = TransferTracker()
    a, b = start(t), start(t, artifact="npz/b.npz", direction="in")
    assert (a.id, b.id) == (1, 2)
    assert set(t.live) == {1, 2} and not t.recent
    t.finish(a)
    assert set(t.live) == {2}
    assert list(t.recent) == [a] and a.finished is not None and a.error is None
    t.finish(b, error="sha256 mismatch")
    assert t.live == {} and list(t.recent) == [a, b]
    assert b.error == "sha256 mismatch"
    snap = t.snapshot()
    assert snap["in_flight"] == []
    assert [r["id"] for r in snap["recent"]] == [1, 2]  # newest last
    assert snap["recent"][1]["error"] == "sha256 mismatch"
    assert snap["recent"][1]["direction"] == "in"


def test_recent_is_bounded() -> None:
    t = TransferTracker(keep=5)
    for i in range(20):
        t.finish(start(t, artifact=f"games/{i}.db"))
    assert len(t.recent) == 5
    assert [x.artifact for x in t.recent] == [f"games/{i}.db" for i in range(15, 20)]
    assert len(t.snapshot()["recent"]) == 5
    assert t.live == {}
    assert start(t).id == 21  # ids keep counting


def test_in_flight_snapshot() -> None:
    t = TransferTracker()
    x = start(t, size=200, attempt=3, offset=50)
    x.done = 50
    (row,) = t.snapshot()["in_flight"]
    assert row["id"] == x.id and row["attempt"] == 3 and row["offset"] == 50
    assert row["done"] == 50 and row["progress"] == 0.5
    assert row["finished"] is None and row["error"] is None
    assert set(row) >= {"id", "direction", "source", "target", "artifact", "size", "transport",
                        "attempt", "offset", "done", "progress", "rate_bps", "eta_seconds",
                        "started", "finished", "error"}


def test_progress_counts_resumed_offset_and_caps_at_one() -> None:
    x = Transfer(1, "out", "a", "b", "games/x.db", size=1000, transport="http")
    assert x.progress() == 0.0
    x.done = 250
    assert x.progress() == pytest.approx(0.25)
    x.offset = 500
    assert x.progress() == pytest.approx(0.75)
    x.done = 900
    assert x.progress() == 1.0
    assert Transfer(2, "out", "a", "b", "n", size=0, transport="http").progress() == 1.0


def test_rate_and_eta() -> None:
    now = time.time()
    x = Transfer(1, "out", "a", "b", "games/x.db", size=10_000, transport="http",
                 offset=2_000, started=now - 10.0)
    x.done = 1_000  # 1000 bytes in ~10 s: ~100 B/s; 7000 bytes left: ~70 s
    d = x.to_dict()
    assert d["rate_bps"] == pytest.approx(100.0, rel=0.05)
    assert d["eta_seconds"] == pytest.approx(70.0, rel=0.05)
    assert d["progress"] == pytest.approx(0.3)


def test_eta_is_none_without_rate_or_when_finished() -> None:
    t = TransferTracker()
    x = start(t, size=1000)
    assert x.to_dict()["eta_seconds"] is None  # nothing moved yet
    assert x.to_dict()["rate_bps"] == 0.0
    x.started -= 5
    x.done = 500
    assert x.to_dict()["eta_seconds"] is not None
    t.finish(x)
    d = x.to_dict()
    assert d["eta_seconds"] is None
    assert d["rate_bps"] == pytest.approx(100.0, rel=0.05)  # measured over the attempt
    assert x.rate() == pytest.approx(100.0, rel=0.05)


def test_rate_of_a_finished_transfer_is_frozen() -> None:
    x = Transfer(1, "out", "a", "b", "n", size=100, transport="http", started=100.0)
    x.done = 100
    x.finished = 104.0
    assert x.rate() == pytest.approx(25.0)
    assert x.to_dict()["rate_bps"] == 25.0
    x.finished = 100.0  # zero elapsed: no division by zero
    assert x.rate() == 0.0


def test_finish_leaves_no_live_state() -> None:
    t = TransferTracker()
    x = start(t)
    t.finish(x)
    assert t.live == {}
    assert len(t.recent) == 1
