"""The runtime (engine.runtime): services step on their interval, a failing step is
reported (event, health, log) and restarted with backoff, stop drops no exception."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.events import ComponentFailed, ComponentRecovered, Payload
from engine.ratelog import RateLimitedLog
from engine.runtime import Service, Supervisor, TaskSet, backoff

pytestmark = pytest.mark.timeout(20)


def supervisor(events: list[Payload]) -> Supervisor:
    return Supervisor("n1", events.append, backoff_for=lambda streak: 0.01 * streak)


async def until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_failing_step_is_reported_restarted_and_recovers() -> None:
    events: list[Payload] = []
    calls = {"n": 0}

    async def step() -> None:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise OSError("database or disk is full")

    sup = supervisor(events)
    svc = sup.add(Service("membership", step, interval=0.01))
    await sup.start()
    await until(lambda: svc.failures == 2)
    health = sup.health_check()
    assert not health.is_healthy and "membership" in health.message
    assert "database or disk is full" in health.message
    await until(lambda: svc.failures == 0 and svc.steps >= 2)
    await sup.stop()
    failed = [e for e in events if isinstance(e, ComponentFailed)]
    assert [e.streak for e in failed] == [1, 2]
    assert failed[0].component == "membership" and failed[0].restart_in_seconds == 0.01
    recovered = [e for e in events if isinstance(e, ComponentRecovered)]
    assert len(recovered) == 1 and recovered[0].failures == 2
    assert sup.health_check().is_healthy
    assert svc.last_error == "OSError: database or disk is full"


async def test_wake_runs_the_next_step_at_once() -> None:
    ran = asyncio.Event()
    count = {"n": 0}

    async def step() -> None:
        count["n"] += 1
        ran.set()

    sup = supervisor([])
    svc = sup.add(Service("slow", step, interval=3600))
    await sup.start()
    await asyncio.wait_for(ran.wait(), 2)
    ran.clear()
    svc.wake()
    await asyncio.wait_for(ran.wait(), 2)
    assert count["n"] == 2
    await sup.stop()


async def test_services_stop_in_reverse_order_and_stop_errors_are_kept() -> None:
    order: list[str] = []
    events: list[Payload] = []

    def service(name: str, fail_on_stop: bool = False) -> Service:
        async def step() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                order.append(name)
                if fail_on_stop:
                    raise RuntimeError("flush failed") from None
                raise
        return Service(name, step, interval=1)

    sup = supervisor(events)
    for name in ("a", "b", "c"):
        sup.add(service(name, fail_on_stop=name == "b"))
    await sup.start()
    await asyncio.sleep(0.05)
    await sup.stop()
    assert order == ["c", "b", "a"]
    assert sup.stop_errors == ["b: RuntimeError: flush failed"]
    assert [(e.component, e.restart_in_seconds) for e in events
            if isinstance(e, ComponentFailed)] == [("b", None)]
    assert sup.health_check().details["stop_errors"] == ["b: RuntimeError: flush failed"]


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff(50) == 60.0


def test_duplicate_service_names_are_refused() -> None:
    async def step() -> None:
        return None
    sup = supervisor([])
    sup.add(Service("x", step, 1))
    with pytest.raises(ValueError, match="already"):
        sup.add(Service("x", step, 1))


async def test_a_task_set_reports_failures_and_cancels_on_close() -> None:
    failures: list[tuple[str, str]] = []
    tasks = TaskSet("owner", lambda name, exc: failures.append((name, str(exc))))

    async def boom() -> None:
        raise ValueError("bad answer")

    tasks.spawn(boom(), name="pull:gpu-1")
    forever = tasks.spawn(asyncio.sleep(3600), name="pull:gpu-2")
    await until(lambda: failures)
    assert failures == [("pull:gpu-1", "bad answer")]
    assert len(tasks) == 1
    await tasks.close()
    assert forever.cancelled() and len(tasks) == 0


def test_rate_limited_log_writes_one_line_per_window(caplog) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t"), window=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(100):
            rl.warning("k", "push to %s failed", "coord")
        rl.warning("other", "breaker open")
        now[0] = 61
        rl.warning("k", "push to %s failed", "coord")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["push to coord failed", "breaker open",
                     "push to coord failed (99 more like this in the last 60s)"]


async def test_max_backoff_caps_the_wait_before_a_restart() -> None:
    events: list[Payload] = []

    async def step() -> None:
        raise OSError("coord unreachable")

    sup = Supervisor("n1", events.append, backoff_for=lambda streak: 60.0 * streak)
    capped = sup.add(Service("cluster_view", step, interval=0.02, max_backoff=0.02))
    plain = sup.add(Service("membership", step, interval=0.02))
    await sup.start()
    await until(lambda: capped.failures >= 3)
    await sup.stop()
    waits = {e.component: e.restart_in_seconds for e in events if isinstance(e, ComponentFailed)}
    assert waits == {"cluster_view": 0.02, "membership": 60.0}
    assert plain.failures == 1


async def test_component_failed_is_emitted_at_the_1st_2nd_4th_8th_failure_of_a_streak() -> None:
    events: list[Payload] = []

    async def step() -> None:
        raise OSError("coord unreachable (3 refreshes in a row)")

    sup = supervisor(events)
    svc = sup.add(Service("cluster_view", step, interval=0.001, max_backoff=0.001))
    await sup.start()
    await until(lambda: svc.failures >= 10)
    await sup.stop()
    streaks = [e.streak for e in events if isinstance(e, ComponentFailed)]
    assert streaks[:4] == [1, 2, 4, 8] and all(s & (s - 1) == 0 for s in streaks)
