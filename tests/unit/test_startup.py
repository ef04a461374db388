"""StartupChecks: a step that fails (a full disk) is reported and retried, in order."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

from engine.startup import StartupChecks


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database or disk is full")
        return "id"


def test_a_failing_step_is_reported_once_retried_and_blocks_the_next() -> None:
    incarnation = Flaky(failures=2)
    emitted: list = []
    reconciled: list = []
    node = SimpleNamespace(
        name="cpu-1", manifest=SimpleNamespace(new_incarnation=incarnation),
        events=SimpleNamespace(emit=emitted.append), data=None,
        copies=SimpleNamespace(reconcile=lambda: reconciled.append(1) or {}))
    checks = StartupChecks(node.name, node.data, node.manifest, node.copies,
                           node.events.emit)
    checks.steps[1] = ("interrupted deletions", lambda: None)
    assert not checks.run() and not checks.run()
    health = checks.health_check()
    assert not health.is_healthy and "new incarnation failed" in health.message
    assert health.details["pending"][0] == "new incarnation"
    assert len(emitted) == 1 and emitted[0].reason == "startup"  # the same error once
    assert reconciled == []  # never before the steps ahead of it
    assert checks.run() and checks.done and reconciled == [1]
    assert checks.health_check().is_healthy and incarnation.calls == 3
