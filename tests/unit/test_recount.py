"""Recount's rules (pure logic): a stand-in for the VouchClient records who is asked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.manifest import Artifact, Replica
from engine.recount import Recount
from engine.vouches import Vouch

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def art(n: int, size: int = 10) -> Artifact:
    return Artifact("npz", f"k/{n}.npz", "k", size, f"{n:064x}", float(n), "gpu-1")


class Vouches:
    """Remembered = every configured holder (no root rules here); ``counted`` asks: a holder
    in ``silent`` does not vouch."""

    def __init__(self, silent: set[str] = frozenset()) -> None:
        self.name = "gpu-1"
        self.silent = set(silent)
        self.asked: list[str] = []
        self.rows: dict[tuple[str, str, str, str], set[str]] = {}
        self.manifest = SimpleNamespace(replicas=lambda a: [
            Replica(a.data_type, a.path, n, a.sha256, 1.0, origin=a.origin)
            for n in self.rows.get(a.ident, ())])

    def remembered(self, a: Artifact, holders: set[str], alongside: bool = False) -> set[str]:
        return set(holders)

    async def counted(self, a: Artifact, skip=None, alongside: bool = False) -> list[Vouch]:
        self.asked.append(a.path)
        return [Vouch(h, f"root-{h}", h, False) for h in sorted(self.rows.get(a.ident, ()))
                if h not in self.silent and not (skip and skip(h))]


def candidates(vouches: Vouches, *arts: Artifact, holders=("coord", "cpu-1")):
    for a in arts:
        vouches.rows[a.ident] = set(holders)
    return [(a, set(holders)) for a in arts]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_short_by_memory_is_short_without_asking_and_down_holders_never_count() -> None:
    vouches, down = Vouches(), {"cpu-1"}
    recount = Recount(vouches, down.__contains__)  # type: ignore[arg-type]
    a, b = art(1), art(2)
    found = await recount.short([(a, {"coord"}), (b, {"coord", "cpu-1"})], 2, budget=5)
    assert [(c.artifact, c.holders, c.live) for c in found] == [
        (a, {"coord"}, False), (b, {"coord"}, False)]
    assert vouches.asked == [], "the manifest already says short: nobody is asked"


async def test_a_version_memory_calls_sufficient_is_asked_and_counts_only_its_vouchers() -> None:
    vouches, clock = Vouches(silent={"cpu-1"}), Clock()
    recount = Recount(vouches, lambda n: False, clock=clock)  # type: ignore[arg-type]
    a = art(1)
    [count] = await recount.short(candidates(vouches, a), 2, budget=5)
    assert (count.holders, count.live, count.silent) == ({"coord"}, True, {"cpu-1"})
    assert vouches.asked == [a.path]
    clock.now += 59
    assert await recount.short(candidates(vouches, a), 2, budget=5) == [count], \
        "found short a moment ago: still short, nothing re-read"
    assert vouches.asked == [a.path]
    clock.now += 2
    vouches.silent.clear()
    assert await recount.short(candidates(vouches, a), 2, budget=5) == []
    assert vouches.asked == [a.path] * 2, "asked again after SHORT_RECOUNT_SECONDS"
    vouches.silent.add("cpu-1")
    clock.now += 301
    await recount.short(candidates(vouches, a), 2, budget=5)  # short again
    assert await recount.short(candidates(vouches, a, holders=("coord", "cpu-1", "gpu-2")),
                               2, budget=5) == [], "a holder came since: asked again at once"
    assert vouches.asked == [a.path] * 4
    vouches.silent.clear()
    clock.now += 299
    vouches.silent.add("cpu-1")
    assert await recount.short(candidates(vouches, a), 2, budget=5) == [], \
        "found sufficient: not asked again within RECOUNT_SECONDS"
    clock.now += 2
    [count] = await recount.short(candidates(vouches, a), 2, budget=5)
    assert count.holders == {"coord"} and vouches.asked == [a.path] * 5
    assert recount.status()["found_short"] == 3


async def test_pressure_looks_at_the_oldest_budget_and_a_rotation_goes_round_them_all() -> None:
    vouches, clock = Vouches(), Clock()
    recount = Recount(vouches, lambda n: False, clock=clock)  # type: ignore[arg-type]
    arts = [art(n) for n in range(1, 6)]
    await recount.short(candidates(vouches, *arts), 2, budget=2)
    await recount.short(candidates(vouches, *arts), 2, budget=2)
    assert vouches.asked == ["k/1.npz", "k/2.npz"], "pressure: the oldest only, then not due"
    vouches.asked.clear()
    for _ in range(3):
        await recount.short(candidates(vouches, *arts), 2, budget=2, rotate=True)
    assert vouches.asked == ["k/3.npz", "k/4.npz", "k/5.npz"], "re-homing goes round"


async def test_a_rotation_reaches_every_orphan_however_many_there_are() -> None:
    """Each due version asked longest ago first: the first ones, due again, never starve
    the tail (they did when the order was the candidates')."""
    vouches, clock = Vouches(), Clock()
    recount = Recount(vouches, lambda n: False, clock=clock,  # type: ignore[arg-type]
                      bucket_bytes=10**12)
    arts = [art(n) for n in range(1, 201)]
    for _ in range(40):  # 40 rounds a minute apart, 16 each: 640 asks for 200 orphans
        await recount.short(candidates(vouches, *arts), 2, budget=16, rotate=True)
        clock.now += 60
    assert {a.path for a in arts} <= set(vouches.asked)


async def test_versions_found_short_do_not_take_every_rounds_budget() -> None:
    vouches, clock = Vouches(silent={"cpu-1"}), Clock()
    recount = Recount(vouches, lambda n: False, clock=clock)  # type: ignore[arg-type]
    stuck, others = [art(n) for n in range(1, 17)], [art(n) for n in range(17, 27)]
    await recount.short(candidates(vouches, *stuck), 2, budget=16, rotate=True)
    vouches.silent.clear()
    vouches.asked.clear()
    await recount.short(candidates(vouches, *stuck, *others), 2, budget=16, rotate=True)
    assert vouches.asked == [a.path for a in others]


async def test_a_node_asks_about_at_most_its_bytes_per_second_on_average() -> None:
    vouches, clock = Vouches(), Clock()
    recount = Recount(vouches, lambda n: False, clock=clock,  # type: ignore[arg-type]
                      bytes_per_second=100, bucket_bytes=500)
    arts = [art(1, size=700), art(2, size=400), art(3, size=300)]
    await recount.short(candidates(vouches, *arts), 2, budget=5, rotate=True)
    assert vouches.asked == ["k/1.npz"], "a version bigger than the bucket, when it is full"
    clock.now += 6  # 600 bytes earned, 200 of debt paid: 400 to spend
    await recount.short(candidates(vouches, *arts), 2, budget=5, rotate=True)
    assert vouches.asked == ["k/1.npz", "k/2.npz"]


async def test_known_live_answers_are_used_as_they_are() -> None:
    vouches = Vouches()
    recount = Recount(vouches, lambda n: False)  # type: ignore[arg-type]
    a, b = art(1), art(2)
    found = await recount.short(candidates(vouches, a, b), 2, budget=0,
                                known={a.ident: {"coord"}, b.ident: {"coord", "cpu-1"}})
    assert [(c.artifact, c.holders, c.silent) for c in found] == [(a, {"coord"}, {"cpu-1"})]
    assert vouches.asked == []
