"""The dashboard's pure logic: snapshots from status answers, event lines, formatting."""

from __future__ import annotations

import pytest

from engine.events import (ArtifactDeleted, CleanupCompleted, DataSyncFailed, DiskPressureChanged, Event,
                           NodeDown, SyncPaused)
from ringsync_tui.event_text import event_row
from ringsync_tui.format import human_bytes, human_duration, human_rate
from ringsync_tui.model import Thresholds
from ringsync_tui.snapshot import build_snapshot, sorted_nodes

pytestmark = pytest.mark.unit


def status(name: str, percent: float, paused: bool = False, in_flight=(), recent=(),
           bandwidth=None) -> dict:
    return {"node": name, "role": "gpu", "provider": "vast", "paused": paused,
            "strategy": "push_from_generator", "ephemeral": False,
            "disk": {"used_bytes": int(percent * 10), "total_bytes": 1000, "percent": percent},
            "thresholds": {"push_percent": 50, "urgent_percent": 70, "cleanup_percent": 75,
                           "min_copies_before_delete": 2},
            "sync": {"pending": 3, "pending_bytes": 30, "last_error": None},
            "transfers": {"in_flight": list(in_flight), "recent": list(recent)},
            "bandwidth": bandwidth or {}}


def transfer(i: int, source: str, direction: str = "out", finished=None, error=None) -> dict:
    return {"id": i, "direction": direction, "source": source, "target": "coord",
            "artifact": f"npz/a{i}.npz", "size": 100, "transport": "http", "attempt": 1,
            "offset": 0, "done": 50, "progress": 0.5, "rate_bps": 10.0, "eta_seconds": 5.0,
            "started": 100.0 + i, "finished": finished, "error": error}


def test_thresholds_bands() -> None:
    t = Thresholds()
    assert [t.band(p) for p in (10, 50, 69.9, 70, 75, 99)] == \
        ["ok", "push", "push", "urgent", "cleanup", "cleanup"]


def test_trouble_sorts_on_top() -> None:
    members = {
        "gpu-ok": {"state": "up", "status": status("gpu-ok", 10)},
        "gpu-full": {"state": "up", "status": status("gpu-full", 80)},
        "gpu-urgent": {"state": "up", "status": status("gpu-urgent", 71)},
        "gpu-down": {"state": "down", "status": status("gpu-down", 5), "last_error": "refused"},
        "gpu-sus": {"state": "suspect", "status": status("gpu-sus", 5)},
        "gpu-new": {"state": "unknown", "status": None},
    }
    snap = build_snapshot("coord", status("coord", 20), members, now=1.0)
    assert [n.name for n in sorted_nodes(snap)] == \
        ["gpu-down", "gpu-sus", "gpu-new", "gpu-full", "gpu-urgent", "coord", "gpu-ok"]
    assert snap.node("gpu-down").last_error == "refused"
    assert snap.node("gpu-new").total_bytes == 0


def test_transfers_come_from_senders_and_down_nodes_move_nothing() -> None:
    members = {
        "gpu-1": {"state": "up", "status": status(
            "gpu-1", 10, in_flight=[transfer(1, "gpu-1"), transfer(2, "gpu-1", "in")],
            recent=[transfer(3, "gpu-1", finished=200.0, error="422 mismatch")],
            bandwidth={"coord": {"limit_mbps": 100, "allocated_mbps": 100,
                                 "current_mbps": 12.5, "active_transfers": 1}})},
        "gpu-2": {"state": "down", "status": status("gpu-2", 10, in_flight=[transfer(4, "gpu-2")],
                                                     bandwidth={"coord": {"limit_mbps": 1}})},
    }
    snap = build_snapshot("coord", status("coord", 20), members, now=1.0)
    assert [t.key for t in snap.live] == ["gpu-1:1"]
    assert [t.error for t in snap.recent] == ["422 mismatch"]
    assert [(b.node, b.host, b.current_mbps) for b in snap.bandwidth] == [("gpu-1", "coord", 12.5)]


def test_all_paused_counts_answering_nodes_only() -> None:
    members = {"gpu-1": {"state": "up", "status": status("gpu-1", 1, paused=True)},
               "gpu-2": {"state": "down", "status": status("gpu-2", 1, paused=False)}}
    assert build_snapshot("coord", status("coord", 1, paused=True), members).all_paused
    members["gpu-1"]["status"]["paused"] = False
    assert not build_snapshot("coord", status("coord", 1, paused=True), members).all_paused


def test_event_lines_and_subjects() -> None:
    failed = Event(7, 1.0, "gpu-1", DataSyncFailed(
        source="gpu-1", target="coord", artifact="npz/x.npz", error="boom", attempt=2,
        retry_in_seconds=4.0, reason="interval"))
    row = event_row(failed.to_dict())
    assert row.severity == "error" and row.type == "DATA_SYNC_FAILED"
    assert "attempt 2: boom (retry in 4s)" in row.text
    assert row.subjects == {"gpu-1", "coord"}
    down = event_row(Event(1, 1.0, "coord", NodeDown(node="gpu-3", misses=3, error="x")).to_dict())
    assert down.subjects == {"coord", "gpu-3"} and "gpu-3 is down" in down.text
    paused = event_row(Event(2, 1.0, "gpu-1", SyncPaused(node="gpu-1",
                                                          requested_by="dashboard")).to_dict())
    assert paused.text == "sync paused on gpu-1 by dashboard"
    gone = event_row(Event(3, 1.0, "gpu-1", ArtifactDeleted(
        node="gpu-1", artifact="games/k/a.db", sha256="ab" * 32, bytes=2048,
        vouched_by=["coord", "cpu-1"], reason="disk_pressure")).to_dict())
    assert gone.text == ("gpu-1 deleted games/k/a.db (2.0 KiB): vouched for live by coord, cpu-1")
    level = event_row(Event(4, 1.0, "gpu-1", DiskPressureChanged(
        node="gpu-1", level="urgent", previous="push", percent=71.4, used_bytes=714,
        total_bytes=1000)).to_dict())
    assert level.severity == "warning" and "disk 71%: push → urgent" in level.text
    cleanup = event_row(Event(5, 1.0, "gpu-1", CleanupCompleted(
        node="gpu-1", deleted=0, freed_bytes=0, percent_before=80.0, percent_after=80.0,
        required=2, short_of_copies=3, unfinished=1, busy=0)).to_dict())
    assert cleanup.text.endswith("3 short of 2 vouched copies, 1 unfinished")
    future = event_row({"seq": 1, "ts": 1.0, "node": "n", "type": "NEW_KIND",
                        "payload": {"a": 1}})
    assert future.text == "a=1" and future.severity == "info"


def test_formatting() -> None:
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"
    assert human_bytes(64 * 2**30) == "64.0 GiB"
    assert human_rate(12_500_000) == "12.5 MB/s" and human_rate(500) == "0 kB/s"
    assert human_duration(None) == "-" and human_duration(75) == "1m15s"
    assert human_duration(7300) == "2h01m"


def test_a_node_announcing_backpressure_says_why() -> None:
    held = {**status("gpu-1", 72.0), "backpressure": {"active": True, "reason": "disk"}}
    free = {**status("gpu-2", 10.0), "backpressure": {"active": False, "reason": None}}
    members = {"gpu-1": {"state": "up", "status": held}, "gpu-2": {"state": "up", "status": free}}
    snap = build_snapshot("coord", status("coord", 5.0), members, {})
    rows = {n.name: n for n in snap.nodes}
    assert rows["gpu-1"].backpressure == "disk" and rows["gpu-2"].backpressure is None

    held["routing"] = {"breakers": {"coord": {"state": "open"}, "cpu-1": {"state": "closed"},
                                    "gpu-3": {"state": "half_open"}}}
    snap = build_snapshot("coord", status("coord", 5.0), members, {})
    rows = {n.name: n for n in snap.nodes}
    assert rows["gpu-1"].open_breakers == ("coord", "gpu-3") and rows["gpu-2"].open_breakers == ()
