"""engine.daemons.retry: exponential backoff with jitter, permanent failures, readiness."""

from __future__ import annotations

import random
import time

import pytest

from engine.daemons.retry import RetryPolicy, RetryState

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_delay_within_half_ceiling_and_ceiling(seed: int) -> None:
    base, cap = 0.5, 30.0
    policy = RetryPolicy(base, cap, random.Random(seed))
    for attempts in range(1, 15):
        ceiling = min(cap, base * 2 ** (attempts - 1))
        for _ in range(50):
            d = policy.delay(attempts)
            assert ceiling / 2 <= d <= ceiling, (attempts, d)


def test_ceiling_grows_exponentially_until_the_cap() -> None:
    policy = RetryPolicy(1.0, 20.0, random.Random(7))
    maxima = []
    for attempts in range(1, 9):
        maxima.append(max(policy.delay(attempts) for _ in range(400)))
    # ceilings 1, 2, 4, 8, 16, 20, 20, 20: the observed maxima approach them from below
    for got, ceiling in zip(maxima, [1, 2, 4, 8, 16, 20, 20, 20]):
        assert 0.9 * ceiling <= got <= ceiling
    assert all(b >= a for a, b in zip(maxima[:5], maxima[1:5]))
    assert maxima[1] > maxima[0] * 1.5 and maxima[4] > maxima[3] * 1.5


def test_cap_respected_for_huge_attempt_counts() -> None:
    policy = RetryPolicy(2.0, 60.0, random.Random(3))
    for attempts in (20, 100, 1000):
        for _ in range(20):
            assert 30.0 <= policy.delay(attempts) <= 60.0


def test_attempt_zero_is_treated_like_the_first() -> None:
    policy = RetryPolicy(4.0, 100.0, random.Random(5))
    for _ in range(20):
        assert 2.0 <= policy.delay(0) <= 4.0


def test_seeded_policies_are_reproducible() -> None:
    a = RetryPolicy(1.0, 10.0, random.Random(11))
    b = RetryPolicy(1.0, 10.0, random.Random(11))
    assert [a.delay(n) for n in range(1, 10)] == [b.delay(n) for n in range(1, 10)]


def test_record_failure_retryable_schedules_next_attempt() -> None:
    policy = RetryPolicy(1.0, 8.0, random.Random(1))
    state = RetryState()
    assert RetryPolicy.ready(state)
    before = time.monotonic()
    wait = policy.record_failure(state, "connection reset", retryable=True)
    after = time.monotonic()
    assert wait is not None and 0.5 <= wait <= 1.0
    assert state.attempts == 1 and state.last_error == "connection reset"
    assert state.permanent is False
    assert before + wait <= state.next_at <= after + wait
    wait2 = policy.record_failure(state, "timeout", retryable=True)
    assert wait2 is not None and 1.0 <= wait2 <= 2.0
    assert state.attempts == 2 and state.last_error == "timeout"
    for _ in range(10):
        policy.record_failure(state, "again", retryable=True)
    assert state.attempts == 12
    assert state.next_at - time.monotonic() <= 8.0


def test_record_failure_non_retryable_is_permanent() -> None:
    policy = RetryPolicy(1.0, 8.0, random.Random(1))
    state = RetryState()
    assert policy.record_failure(state, "target holds different bytes", retryable=False) is None
    assert state.permanent is True
    assert state.attempts == 1
    assert state.last_error == "target holds different bytes"
    assert not RetryPolicy.ready(state)
    assert not RetryPolicy.ready(state, now=time.monotonic() + 1e9)  # never again


def test_ready_respects_next_at() -> None:
    assert RetryPolicy.ready(None)
    state = RetryState(attempts=1, next_at=100.0)
    assert not RetryPolicy.ready(state, now=99.999)
    assert RetryPolicy.ready(state, now=100.0)
    assert RetryPolicy.ready(state, now=150.0)
    # without an explicit `now` it uses the monotonic clock
    state = RetryState(attempts=1, next_at=time.monotonic() + 60)
    assert not RetryPolicy.ready(state)
    state = RetryState(attempts=1, next_at=time.monotonic() - 1)
    assert RetryPolicy.ready(state)


def test_ready_after_recorded_failure() -> None:
    policy = RetryPolicy(10.0, 10.0, random.Random(2))
    state = RetryState()
    wait = policy.record_failure(state, "x", retryable=True)
    assert wait is not None
    now = time.monotonic()
    assert not RetryPolicy.ready(state, now=now)
    assert RetryPolicy.ready(state, now=state.next_at)
    assert RetryPolicy.ready(state, now=now + 10.0 + 1)
