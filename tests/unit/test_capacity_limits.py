"""DiskUsage's capacity (pure logic: the disk's figures scripted)."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest

from engine import capacity
from engine.capacity import DiskUsage
from engine.paths import DataRoot

pytestmark = pytest.mark.unit

Usage = namedtuple("Usage", "total used free")


def test_a_quota_larger_than_its_disk_is_capped_at_what_the_disk_can_take(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 GiB quota on a 2 MiB volume: it promised 1 GiB of room, every write past 2 MiB
    was a 507, and senders kept choosing it (a chaos seed's full tmpfs)."""
    data = DataRoot(tmp_path / "root")
    data.create()
    usage = DiskUsage(data, quota=2**30)
    usage.used_bytes = 2 * 2**20 - 4096
    monkeypatch.setattr(capacity.shutil, "disk_usage",
                        lambda path: Usage(2 * 2**20, 2 * 2**20 - 4096, 4096))
    disk = usage.disk()
    assert disk["total_bytes"] == 2 * 2**20 and disk["free_bytes"] == 4096
    assert disk["percent"] > 99 and not usage.has_room_for(8192)
    monkeypatch.setattr(capacity.shutil, "disk_usage",
                        lambda path: Usage(2**40, 2**20, 2**40 - 2**20))
    assert usage.disk()["total_bytes"] == 2**30, "on a big disk the quota is the capacity"
