"""Exponential backoff with full jitter, per (artifact, target)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass
class RetryState:
    attempts: int = 0
    """Failed attempts so far."""
    next_at: float = 0.0
    """Monotonic time before which no new attempt starts."""
    last_error: str = ""
    permanent: bool = False
    """True when retrying cannot help (e.g. the target holds different bytes)."""


class RetryPolicy:
    """``delay(n)`` grows as base·2^(n-1) up to ``cap``, drawn from [delay/2, delay]."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def delay(self, attempts: int) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, attempts - 1)))
        return self.rng.uniform(ceiling / 2, ceiling)

    def record_failure(self, state: RetryState, error: str, retryable: bool) -> float | None:
        """Update ``state``; returns seconds until the next attempt, or None for never."""
        state.attempts += 1
        state.last_error = error
        if not retryable:
            state.permanent = True
            return None
        wait = self.delay(state.attempts)
        state.next_at = time.monotonic() + wait
        return wait

    @staticmethod
    def ready(state: RetryState | None, now: float | None = None) -> bool:
        if state is None:
            return True
        return not state.permanent and (time.monotonic() if now is None else now) >= state.next_at
