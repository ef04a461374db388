"""The sender's stall guard (engine/transport/http.py): armed only while a piece of the body
is with the connection, pieces small enough to be progress, harmless once the push is over.
The end-to-end proof on real links is tests/hosts/test_breakers.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.bandwidth import BandwidthCoordinator
from engine.transfers import TransferTracker
from engine.transport.http import PROGRESS_BYTES, HttpTransport, _StallGuard

pytestmark = [pytest.mark.unit, pytest.mark.timeout(20)]


class Recording:
    """Stands in for the guard: records arm/disarm around each piece."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def arm(self) -> None:
        self.calls.append("arm")

    def disarm(self) -> None:
        self.calls.append("disarm")


async def test_the_body_goes_in_pieces_each_between_arm_and_disarm(tmp_path: Path) -> None:
    body = os.urandom(3 * 2**20 + 123)
    (tmp_path / "f").write_bytes(body)
    transport = HttpTransport(None, "gpu-1", BandwidthCoordinator(lambda _h: 10_000.0),
                              chunk_bytes=2**20)
    transfer = TransferTracker().start(direction="out", source="gpu-1", target="coord",
                                       artifact="npz/f", size=len(body), transport="http")
    guard = Recording()
    got = bytearray()
    async with transport.bandwidth.allocate("coord", "npz/f") as alloc:
        async for piece in transport._read(tmp_path / "f", 100, len(body), alloc, transfer,
                                           guard):
            assert len(piece) <= PROGRESS_BYTES and guard.calls[-1] == "arm"
            got += piece
    assert bytes(got) == body[100:]
    pieces = -(-(2**20) // PROGRESS_BYTES) * 3 + 1  # three whole chunks and the rest
    assert guard.calls == ["arm", "disarm"] * pieces
    assert transfer.done == len(body) - 100


async def test_the_guard_fires_after_idle_and_is_harmless_once_the_push_is_over() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as timeout:
            guard = _StallGuard(timeout, 0.05)
            guard.arm()
            await asyncio.sleep(1)
    assert timeout.expired()
    guard.arm()  # after the push: no RuntimeError into aiohttp's writer
    guard.disarm()
    async with asyncio.timeout(None) as timeout:
        guard = _StallGuard(timeout, 0.05)
        guard.arm()
        guard.disarm()
        await asyncio.sleep(0.2)  # disarmed: no stall
    assert not timeout.expired()


async def test_a_resumes_first_piece_gets_time_for_the_receiver_to_hash_its_part() -> None:
    from engine.stall import RESUME_HASH_BYTES_PER_SECOND, first_piece_grace

    assert first_piece_grace(0) == 0
    assert first_piece_grace(30 * RESUME_HASH_BYTES_PER_SECOND) == 30
    async with asyncio.timeout(None) as timeout:
        guard = _StallGuard(timeout, 0.05, first_grace=0.3)
        guard.arm()  # the first piece: idle + grace
        await asyncio.sleep(0.15)  # longer than idle alone: still running
        guard.disarm()
        guard.arm()  # later pieces: idle only
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(0.3)
            raise AssertionError("the later piece was not bounded by idle")
