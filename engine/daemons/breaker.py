"""Circuit breakers: one per target node, shared by every outbound transfer of this node.

    closed     transfers flow; ``failure_threshold`` consecutive failures open it
    open       no transfer starts to the target until ``reset_seconds`` have passed
    half_open  one probe is let through: success closes the breaker, failure re-opens it
               with the wait doubled (up to ``MAX_BACKOFF_FACTOR`` x ``reset_seconds``)

Per-(artifact, target) backoff (``engine.daemons.retry``) spaces the retries of one file;
the breaker stops a node from spending its transfer slots on a target that fails every
file (a dead host, a full disk, a bad token). Each state change is a
CIRCUIT_BREAKER_CHANGED event; each failure that feeds it is already an event of its own
(DATA_SYNC_FAILED, or a gossip exchange's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.events import CircuitBreakerChanged, EventBus

MAX_BACKOFF_FACTOR = 8
"""An open breaker whose probes keep failing waits at most this many reset periods."""


@dataclass
class Breaker:
    """The breaker of one target."""

    target: str
    state: str = "closed"
    """``closed``, ``open`` or ``half_open``."""
    failures: int = 0
    """Consecutive failures (reset by a success)."""
    opened_at: float = 0.0
    """Monotonic time the breaker last opened."""
    wait: float = 0.0
    """Seconds the breaker stays open before letting a probe through."""
    probing: bool = False
    """A half-open probe is under way: no second transfer starts until it ends."""
    last_error: str | None = None

    def to_dict(self, now: float) -> dict[str, Any]:
        retry = max(0.0, self.opened_at + self.wait - now) if self.state == "open" else None
        return {"state": self.state, "failures": self.failures, "last_error": self.last_error,
                "retry_in_seconds": None if retry is None else round(retry, 2)}


class Breakers:
    """Every target's breaker, created on first use."""

    def __init__(self, node: str, events: EventBus, failure_threshold: int,
                 reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.events = events
        self.failure_threshold = failure_threshold
        """Consecutive failures that open a breaker."""
        self.reset_seconds = reset_seconds
        """How long a breaker first stays open."""
        self.clock = clock
        self._breakers: dict[str, Breaker] = {}

    def get(self, target: str) -> Breaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = Breaker(target)
        return breaker

    def state(self, target: str) -> str:
        """The target's state now (an open breaker whose wait is over reads ``half_open``)."""
        breaker = self._breakers.get(target)
        if breaker is None:
            return "closed"
        if breaker.state == "open" and self.clock() >= breaker.opened_at + breaker.wait:
            self._change(breaker, "half_open", None)
        return breaker.state

    def allow(self, target: str) -> bool:
        """May a transfer to ``target`` start now? (Routing asks; it does not reserve.)"""
        state = self.state(target)
        return state == "closed" or (state == "half_open" and not self.get(target).probing)

    def begin(self, target: str) -> bool:
        """A transfer to ``target`` starts: False when the breaker refuses it; in half-open
        state the first caller becomes the probe."""
        if not self.allow(target):
            return False
        breaker = self.get(target)
        if breaker.state == "half_open":
            breaker.probing = True
        return True

    def release(self, target: str) -> None:
        """A transfer begun with ``begin`` ended without telling anything about the target
        (cancelled, or the source was the problem): a half-open breaker may probe again."""
        breaker = self._breakers.get(target)
        if breaker is not None:
            breaker.probing = False

    def success(self, target: str) -> None:
        breaker = self.get(target)
        breaker.failures, breaker.probing, breaker.last_error = 0, False, None
        if breaker.state != "closed":
            breaker.wait = 0.0
            self._change(breaker, "closed", None)

    def failure(self, target: str, error: str) -> None:
        breaker = self.get(target)
        breaker.failures += 1
        breaker.last_error = error
        if breaker.state == "half_open":
            breaker.probing = False
            breaker.wait = min(breaker.wait * 2 or self.reset_seconds,
                               self.reset_seconds * MAX_BACKOFF_FACTOR)
            self._open(breaker, error)
        elif breaker.state == "closed" and breaker.failures >= self.failure_threshold:
            breaker.wait = self.reset_seconds
            self._open(breaker, error)

    def _open(self, breaker: Breaker, error: str) -> None:
        breaker.opened_at = self.clock()
        self._change(breaker, "open", error)

    def _change(self, breaker: Breaker, state: str, error: str | None) -> None:
        previous, breaker.state = breaker.state, state
        self.events.emit(CircuitBreakerChanged(
            node=self.node, target=breaker.target, state=state, previous=previous,
            failures=breaker.failures,
            retry_in_seconds=round(breaker.wait, 2) if state == "open" else None, error=error))

    def open_targets(self) -> list[str]:
        return sorted(t for t in self._breakers if self.state(t) != "closed")

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {target: b.to_dict(now) for target, b in sorted(self._breakers.items())
                if b.state != "closed" or b.failures}
