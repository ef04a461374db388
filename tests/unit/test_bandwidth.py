"""engine.bandwidth.BandwidthCoordinator: one budget per host, shared by all its transfers."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.bandwidth import MB, BandwidthCoordinator

pytestmark = pytest.mark.unit

CHUNK = 64 * 1024


async def _send(coord: BandwidthCoordinator, host: str, label: str, nbytes: int,
                chunk: int = CHUNK) -> int:
    async with coord.allocate(host, label) as alloc:
        left = nbytes
        while left > 0:
            n = min(chunk, left)
            await alloc.consume(n)
            left -= n
        return alloc.bytes


def test_limit_comes_from_the_callable() -> None:
    asked: list[str] = []

    def limit_for(host: str) -> float:
        asked.append(host)
        return {"gpu-1": 25.0, "gpu-2": 3.5}.get(host, 100.0)

    coord = BandwidthCoordinator(limit_for)
    assert coord.limit_mbps("gpu-1") == pytest.approx(25.0)
    assert coord.limit_mbps("gpu-2") == pytest.approx(3.5)
    assert coord.limit_mbps("elsewhere") == pytest.approx(100.0)
    assert set(asked) == {"gpu-1", "gpu-2", "elsewhere"}
    assert coord.status()["hosts"]["gpu-2"]["limit_mbps"] == pytest.approx(3.5)


async def test_concurrent_allocations_to_one_host_share_its_budget() -> None:
    limit, total = 2.0, 1_000_000
    coord = BandwidthCoordinator(lambda host: limit)
    ideal = total / (limit * MB)  # 0.5 s
    t0 = time.monotonic()
    sent = await asyncio.gather(_send(coord, "coord", "a", total // 2),
                                _send(coord, "coord", "b", total // 2))
    elapsed = time.monotonic() - t0
    assert sent == [total // 2, total // 2]
    assert elapsed >= 0.7 * ideal, f"{total} B at {limit} MB/s took only {elapsed:.3f}s"
    assert elapsed < 4 * ideal
    assert coord.status()["hosts"]["coord"]["total_bytes"] == total


async def test_a_single_large_consume_is_also_paced() -> None:
    coord = BandwidthCoordinator(lambda host: 2.0)
    t0 = time.monotonic()
    await _send(coord, "coord", "big", 1_000_000, chunk=1_000_000)
    await _send(coord, "coord", "big2", 500_000, chunk=500_000)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.7 * (1_500_000 / (2.0 * MB))


async def test_different_hosts_do_not_share() -> None:
    limit, each = 2.0, 1_000_000
    coord = BandwidthCoordinator(lambda host: limit)
    t0 = time.monotonic()
    await asyncio.gather(_send(coord, "gpu-1", "a", each), _send(coord, "gpu-2", "b", each))
    elapsed = time.monotonic() - t0
    alone = each / (limit * MB)          # 0.5 s: both hosts at full rate in parallel
    shared = 2 * each / (limit * MB)     # 1.0 s if one budget were shared
    assert elapsed >= 0.7 * alone
    assert elapsed < (alone + shared) / 2, f"two hosts took {elapsed:.3f}s: they share a budget"
    hosts = coord.status()["hosts"]
    assert hosts["gpu-1"]["total_bytes"] == each and hosts["gpu-2"]["total_bytes"] == each


async def test_status_shows_active_transfers_and_shares() -> None:
    coord = BandwidthCoordinator(lambda host: 30.0)
    assert coord.status() == {"hosts": {}}
    async with coord.allocate("coord", "games/a.db") as a1:
        await a1.consume(1000)
        async with coord.allocate("coord", "games/b.db") as a2, \
                coord.allocate("coord", "npz/c.npz") as a3:
            await a2.consume(500)
            h = coord.status()["hosts"]["coord"]
            assert h["limit_mbps"] == pytest.approx(30.0)
            assert h["active_transfers"] == 3
            assert h["per_transfer_mbps"] == pytest.approx(10.0)
            assert h["allocated_mbps"] == pytest.approx(30.0)
            assert h["total_bytes"] == 1500
            assert h["current_mbps"] >= 0
            rows = {t["label"]: t for t in h["transfers"]}
            assert set(rows) == {"games/a.db", "games/b.db", "npz/c.npz"}
            assert rows["games/a.db"]["bytes"] == 1000
            assert rows["games/b.db"]["bytes"] == 500
            assert rows["npz/c.npz"]["bytes"] == 0
            assert all(t["allocated_mbps"] == pytest.approx(10.0) for t in rows.values())
            assert len({a1.id, a2.id, a3.id}) == 3
            assert a3.host == "coord"
        h = coord.status()["hosts"]["coord"]
        assert h["active_transfers"] == 1
        assert h["per_transfer_mbps"] == pytest.approx(30.0)
        assert [t["label"] for t in h["transfers"]] == ["games/a.db"]
    h = coord.status()["hosts"]["coord"]
    assert h["active_transfers"] == 0 and h["transfers"] == []
    assert h["per_transfer_mbps"] == 0.0 and h["allocated_mbps"] == 0.0
    assert h["total_bytes"] == 1500  # totals outlive the transfers


async def test_allocation_is_released_on_exception() -> None:
    coord = BandwidthCoordinator(lambda host: 30.0)
    with pytest.raises(RuntimeError, match="transfer broke"):
        async with coord.allocate("gpu-1", "x") as alloc:
            await alloc.consume(10)
            assert coord.status()["hosts"]["gpu-1"]["active_transfers"] == 1
            raise RuntimeError("transfer broke")
    h = coord.status()["hosts"]["gpu-1"]
    assert h["active_transfers"] == 0 and h["transfers"] == []
    assert h["total_bytes"] == 10


async def test_allocation_is_released_on_cancellation() -> None:
    coord = BandwidthCoordinator(lambda host: 1.0)

    async def slow() -> None:
        async with coord.allocate("gpu-1", "slow") as alloc:
            await alloc.consume(200_000)
            await alloc.consume(10_000_000)  # would take ~10 s

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.05)
    assert coord.status()["hosts"]["gpu-1"]["active_transfers"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert coord.status()["hosts"]["gpu-1"]["active_transfers"] == 0
