"""The runtime for long-running work: services, their supervisor, and background task sets.

A :class:`Service` is one piece of periodic work: a ``step`` coroutine run every
``interval`` seconds (measured from the start of the last step, never less than
``MIN_DELAY_SECONDS`` apart) or at once when something calls :meth:`Service.wake`. It keeps
its last error and its failure streak.

The :class:`Supervisor` starts services in the order they were added and stops them in
reverse. A step that raises is a failure of its component: the supervisor logs it (the
traceback once per streak, then rate-limited lines), emits ``COMPONENT_FAILED``, turns its
``health_check`` unhealthy naming the component, and starts the service again after an
exponential backoff (``BACKOFF_BASE_SECONDS`` doubling up to ``BACKOFF_MAX_SECONDS``, or the
service's ``max_backoff``). COMPONENT_FAILED is emitted for the 1st, 2nd, 4th, 8th … failure
of a streak (each carries the streak), so a component that keeps failing at a short interval
is an alert, not a flood. The
first step that succeeds afterwards emits ``COMPONENT_RECOVERED``. An exception raised
while a service stops is logged, emitted and kept in ``stop_errors``: none is dropped.

A :class:`TaskSet` holds fire-and-forget tasks (a recovery run, one peer's pull): a task
that fails is logged and reported to its owner's callback; ``close`` cancels the rest and
logs what they raised.

The engine never writes its own start/stop/sleep loop: it builds services and adds them to
the node's supervisor (``engine.node``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from engine.aio import wait_event
from engine.errors import describe
from engine.events import ComponentFailed, ComponentRecovered, Payload
from engine.health import HealthCheckResult
from engine.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MIN_DELAY_SECONDS = 0.05
"""Steps of one service never start closer together than this."""
BACKOFF_BASE_SECONDS = 1.0
"""The first restart after a failure waits this long; each further failure doubles it."""
BACKOFF_MAX_SECONDS = 60.0
"""Restarts never wait longer than this."""

Step = Callable[[], Awaitable[Any]]
Emit = Callable[[Payload], Any]


@dataclass(eq=False)
class Service:
    """One component's periodic work."""

    name: str
    """The component's name in logs, events and ``/health``."""
    step: Step
    """One round of the work; raising is a failure of the component."""
    interval: float
    """Seconds from the start of one step to the start of the next (unless woken)."""
    first_delay: float = 0.0
    """Seconds before the first step (0: at once)."""
    failures: int = 0
    """Failures in a row; 0 once a step succeeds."""
    failed_total: int = 0
    """Failures since start."""
    steps: int = 0
    """Steps that succeeded since start."""
    last_error: str | None = None
    """The last failure (kept after a recovery, for the record)."""
    failing_since: float | None = None
    """Unix time of the first failure of the current streak."""
    last_ok_at: float | None = None
    """Unix time the last successful step ended."""
    wakeup: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set, it runs the next step now instead of at the end of the interval (a component
    may pass its own event)."""
    max_backoff: float | None = None
    """The longest wait before a restart after failures (None: ``BACKOFF_MAX_SECONDS``); a
    component that must notice a recovery soon (the cluster view) caps it at its interval."""
    next_delay: Callable[[], float] | None = field(default=None, repr=False)
    """When given, the seconds to wait after each step (e.g. until the soonest retry is
    due), instead of what is left of ``interval``."""

    def wake(self) -> None:
        """Run the next step now instead of at the end of the interval."""
        self.wakeup.set()

    async def run(self, succeeded: Callable[["Service"], None]) -> None:
        """Steps forever; returns only by cancellation, raises what a step raised."""
        delay = self.first_delay
        while True:
            if delay > 0:
                await wait_event(self.wakeup, delay)
            self.wakeup.clear()
            started = time.monotonic()
            await self.step()
            self.steps += 1
            self.last_ok_at = time.time()
            succeeded(self)
            left = (self.next_delay() if self.next_delay is not None
                    else self.interval - (time.monotonic() - started))
            delay = max(MIN_DELAY_SECONDS, left)

    def to_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "steps": self.steps, "failures": self.failures,
                "failed_total": self.failed_total, "last_error": self.last_error,
                "failing_since": self.failing_since, "last_ok_at": self.last_ok_at}


def backoff(streak: int) -> float:
    """Seconds before a restart after the ``streak``-th failure in a row."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, streak - 1))


class Supervisor:
    """Starts, restarts and stops one node's services; keeps their last errors."""

    def __init__(self, node: str, emit: Emit,
                 backoff_for: Callable[[int], float] = backoff) -> None:
        self.node = node
        """The node these services belong to (named in events)."""
        self.services: list[Service] = []
        """Every service, in start order."""
        self.stop_errors: list[str] = []
        """What services raised while they stopped (each also logged and emitted)."""
        self._emit = emit
        self._backoff = backoff_for
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._log = RateLimitedLog(log)

    def add(self, service: Service) -> Service:
        if any(s.name == service.name for s in self.services):
            raise ValueError(f"a service named {service.name!r} is supervised already")
        self.services.append(service)
        if self._tasks:  # added after start: runs at once
            self._start(service)
        return service

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    async def start(self) -> None:
        for service in self.services:
            self._start(service)

    def _start(self, service: Service) -> None:
        self._tasks[service.name] = asyncio.create_task(
            self._supervise(service), name=f"{service.name}:{self.node}")

    async def stop(self, names: list[str] | None = None) -> None:
        """Stop the services (``names``: only those) in reverse start order."""
        for service in reversed(self.services):
            if names is not None and service.name not in names:
                continue
            task = self._tasks.pop(service.name, None)
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - kept, logged and emitted, never dropped
                error = describe(exc)
                self.stop_errors.append(f"{service.name}: {error}")
                log.error("%s on %s failed while stopping: %s", service.name, self.node, error,
                          exc_info=exc)
                self._emit(ComponentFailed(node=self.node, component=service.name, error=error,
                                           streak=service.failures + 1,
                                           restart_in_seconds=None))

    async def _supervise(self, service: Service) -> None:
        while True:
            try:
                await service.run(self._succeeded)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the component failed: report, restart
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # it failed while stopping: stop() keeps and reports it
                wait = self._failed(service, exc)
            await asyncio.sleep(wait)

    def _failed(self, service: Service, exc: Exception) -> float:
        service.failures += 1
        service.failed_total += 1
        service.last_error = describe(exc)
        if service.failing_since is None:
            service.failing_since = time.time()
        wait = self._backoff(service.failures)
        if service.max_backoff is not None:
            wait = min(wait, service.max_backoff)
        if service.failures == 1:
            log.error("%s on %s failed: %s; restarting in %.0fs", service.name, self.node,
                      service.last_error, wait, exc_info=exc)
        else:  # keyed by the kind of failure: its message may carry counters that change
            self._log.warning(f"{service.name}:{type(exc).__name__}",
                              "%s on %s failed again (%d in a row): %s; restarting in %.0fs",
                              service.name, self.node, service.failures, service.last_error,
                              wait)
        if service.failures & (service.failures - 1) == 0:  # 1st, 2nd, 4th, 8th … of a streak
            self._emit(ComponentFailed(node=self.node, component=service.name,
                                       error=service.last_error, streak=service.failures,
                                       restart_in_seconds=round(wait, 2)))
        return wait

    def _succeeded(self, service: Service) -> None:
        if not service.failures:
            return
        failures, since = service.failures, service.failing_since or time.time()
        service.failures, service.failing_since = 0, None
        log.warning("%s on %s recovered after %d failures", service.name, self.node, failures)
        self._emit(ComponentRecovered(node=self.node, component=service.name, failures=failures,
                                      down_seconds=round(time.time() - since, 2)))

    def status(self) -> dict[str, Any]:
        return {s.name: s.to_dict() for s in self.services}

    def health_check(self) -> HealthCheckResult:
        """Unhealthy while any component's last step failed, naming each."""
        failing = [s for s in self.services if s.failures]
        if failing:
            message = "failing: " + "; ".join(
                f"{s.name} ({s.failures}x: {s.last_error})" for s in failing)
        else:
            message = f"{len(self.services)} components running"
        return HealthCheckResult(not failing, message,
                                 {"failing": [s.name for s in failing],
                                  "stop_errors": self.stop_errors[-10:], **self.status()})


class TaskSet:
    """Background tasks of one owner: failures logged and reported, cancelled on close."""

    def __init__(self, owner: str, on_error: Callable[[str, Exception], None] | None = None) -> None:
        self.owner = owner
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert isinstance(exc, Exception)
        log.error("%s: task %s failed: %s", self.owner, task.get_name(), describe(exc),
                  exc_info=exc)
        if self._on_error is not None:
            self._on_error(task.get_name(), exc)

    async def close(self) -> None:
        """Cancel every task and wait for them; what they raised is logged."""
        tasks, self._tasks = set(self._tasks), set()
        for task in tasks:
            task.remove_done_callback(self._done)
            task.cancel()
        for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True)):
            if isinstance(result, Exception):
                log.error("%s: task %s failed while stopping: %s", self.owner,
                          task.get_name(), describe(result), exc_info=result)
