"""BandwidthCoordinator: one per node, every transfer draws from its host's budget.

A host's limit is the host override, else its provider's limit, else the default
(MB/s, 1 MB = 10^6 bytes, as in the seed). All transfers to one host share one
token bucket, so three concurrent pushes to a host get a third of its limit each
and never more than the limit together, whichever daemon started them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

MB = 1_000_000
_RATE_WINDOW = 5.0
GRANT_BYTES = 64 * 1024
"""What every transport draws from a bucket at a time, just before sending it: the bucket's
FIFO turns then share a host's limit evenly between transfers (HTTP pieces, rsync's relay),
and no transfer waits for a long grant while its receiver hears nothing."""


@dataclass
class Allocation:
    """One transfer's share of a host's budget."""

    id: int
    host: str
    label: str
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    """Bytes this transfer has drawn so far."""
    _bucket: "_HostBucket | None" = None

    async def consume(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may be sent, then count them."""
        assert self._bucket is not None
        await self._bucket.take(nbytes)
        self.bytes += nbytes


class _HostBucket:
    def __init__(self, host: str, limit_mbps: float) -> None:
        self.host = host
        self.rate = limit_mbps * MB
        self.tokens = self.rate * 0.1
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()
        self.active: dict[int, Allocation] = {}
        self.history: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0

    async def take(self, nbytes: int) -> None:
        async with self.lock:
            now = time.monotonic()
            burst = max(self.rate * 0.1, float(nbytes))
            self.tokens = min(burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= nbytes
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)
        self.total += nbytes
        self.history.append((time.monotonic(), nbytes))

    def current_rate(self) -> float:
        cutoff = time.monotonic() - _RATE_WINDOW
        while self.history and self.history[0][0] < cutoff:
            self.history.popleft()
        return sum(n for _, n in self.history) / _RATE_WINDOW


class BandwidthCoordinator:
    """Per-host bandwidth budgets for every transfer this node makes."""

    def __init__(self, limit_for: Callable[[str], float]) -> None:
        self._limit_for = limit_for
        self._buckets: dict[str, _HostBucket] = {}
        self._ids = itertools.count(1)
        self._rsync: Any = None

    def _bucket(self, host: str) -> _HostBucket:
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _HostBucket(host, self._limit_for(host))
        return bucket

    def attach_rsync(self, rsync: Any) -> None:
        """The node's rsync transport, which carries ``sync_file``."""
        self._rsync = rsync

    async def sync_file(self, source: Any, dest: str, host: str) -> Any:
        """The seed's ``get_bandwidth_coordinator().sync_file(source, dest, host)``: rsync one
        file to ``dest`` on ``host`` within its budget, verified by SHA-256 at the far end
        (``RsyncTransport.sync_file``; a ``SyncFileResult``)."""
        if self._rsync is None:
            raise RuntimeError("no rsync transport on this node")
        return await self._rsync.sync_file(source, dest, host)

    def limit_mbps(self, host: str) -> float:
        return self._bucket(host).rate / MB

    @asynccontextmanager
    async def allocate(self, host: str, label: str) -> AsyncIterator[Allocation]:
        """Hold an allocation on ``host`` for one transfer."""
        bucket = self._bucket(host)
        alloc = Allocation(next(self._ids), host, label, _bucket=bucket)
        bucket.active[alloc.id] = alloc
        try:
            yield alloc
        finally:
            bucket.active.pop(alloc.id, None)

    def status(self) -> dict[str, Any]:
        """What ``GET /bandwidth/status`` serves."""
        hosts = {}
        for host, b in sorted(self._buckets.items()):
            limit = b.rate / MB
            share = limit / len(b.active) if b.active else 0.0
            hosts[host] = {
                "limit_mbps": limit,
                "active_transfers": len(b.active),
                "allocated_mbps": limit if b.active else 0.0,
                "per_transfer_mbps": share,
                "current_mbps": round(b.current_rate() / MB, 3),
                "total_bytes": b.total,
                "transfers": [{"id": a.id, "label": a.label, "bytes": a.bytes,
                               "allocated_mbps": share} for a in b.active.values()],
            }
        return {"hosts": hosts}


_coordinator: BandwidthCoordinator | None = None


def set_bandwidth_coordinator(coordinator: BandwidthCoordinator | None) -> None:
    global _coordinator
    _coordinator = coordinator


def get_bandwidth_coordinator() -> BandwidthCoordinator:
    """This process's coordinator (one per node process)."""
    if _coordinator is None:
        raise RuntimeError("no BandwidthCoordinator: the node has not started")
    return _coordinator
