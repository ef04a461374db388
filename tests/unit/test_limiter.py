"""PushLimiter: bounded concurrency, urgent waiters first, cancellation keeps the count."""

from __future__ import annotations

import asyncio

import pytest

from engine.daemons.limiter import PushLimiter


async def _hold(limiter: PushLimiter, urgent: bool, order: list[str], name: str,
                release: asyncio.Event) -> None:
    async with limiter.slot(urgent):
        order.append(name)
        await release.wait()


def test_never_more_than_slots_and_urgent_goes_first() -> None:
    async def main() -> list[str]:
        limiter, order, release = PushLimiter(1), [], asyncio.Event()
        first = asyncio.create_task(_hold(limiter, False, order, "first", release))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(_hold(limiter, False, order, "normal-1", release)),
                 asyncio.create_task(_hold(limiter, False, order, "normal-2", release)),
                 asyncio.create_task(_hold(limiter, True, order, "urgent", release))]
        await asyncio.sleep(0.01)
        assert order == ["first"] and limiter.active == 1 and limiter.waiting() == 3
        release.set()
        await asyncio.gather(first, *tasks)
        assert limiter.active == 0 and limiter.waiting() == 0
        return order

    assert asyncio.run(main()) == ["first", "urgent", "normal-1", "normal-2"]


def test_cancelled_waiter_gives_its_place_back() -> None:
    async def main() -> None:
        limiter, order, release = PushLimiter(1), [], asyncio.Event()
        holder = asyncio.create_task(_hold(limiter, False, order, "a", release))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(_hold(limiter, True, order, "b", release))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert limiter.waiting() == 0
        release.set()
        await holder
        assert limiter.active == 0
        async with limiter.slot():
            assert limiter.active == 1

    asyncio.run(main())


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PushLimiter(0)
