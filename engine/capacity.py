"""DiskUsage: how full this node is, against its quota or its disk.

With a ``disk_quota`` the node's usage is what its data root allocates (``DataRoot.used_bytes``:
blocks, not sizes, so a reserved partial upload counts); without one it is the disk's own
usage. The capacity is the quota, but never more than the disk can still take (used plus
the disk's free space): a quota larger than its disk (a small volume, a disk other data
fills) must not promise room that a write would then refuse with ENOSPC, so such a node
shows full, announces backpressure and goes to cleanup like any full node. The figure is measured in a worker thread by the ``capacity`` service (every 2 s),
on demand (``refresh``), and raised at once by ``note_stored`` for an object that just
arrived, so admission between two measurements does not overcommit.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from engine.paths import DataRoot


class DiskUsage:
    """One node's capacity figures: what ``/status.disk`` shows and admission uses."""

    def __init__(self, data: DataRoot, quota: int | None) -> None:
        self.data = data
        self.quota = quota
        """The configured ``disk_quota`` in bytes (None: the disk's own size)."""
        self.used_bytes = 0
        """Used as of the last measurement, plus what arrived since."""

    def measure(self) -> int:
        """Usage now (blocking: run it in a worker thread)."""
        if self.quota:
            return self.data.used_bytes()
        return shutil.disk_usage(self.data.root).used

    async def refresh(self) -> dict[str, Any]:
        """Measure now (not at the next refresh) and return ``disk()``."""
        self.used_bytes = await asyncio.to_thread(self.measure)
        return self.disk()

    def disk(self) -> dict[str, Any]:
        """Usage against the capacity: the quota when set (at most what the disk can still
        take), else the disk."""
        disk = shutil.disk_usage(self.data.root)
        used = self.used_bytes
        total = min(self.quota, used + disk.free) if self.quota else disk.total
        return {"used_bytes": used, "total_bytes": total, "free_bytes": max(0, total - used),
                "percent": round(100.0 * used / total, 2) if total else 0.0,
                "quota_bytes": self.quota}

    def percent(self) -> float:
        return float(self.disk()["percent"])

    def has_room_for(self, nbytes: int) -> bool:
        disk = self.disk()
        return disk["used_bytes"] + nbytes <= disk["total_bytes"]

    def note_stored(self, size: int) -> None:
        """Count a newly stored object until the next measurement."""
        self.used_bytes += size
