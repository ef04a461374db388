"""The one transport interface every way of moving bytes implements.

A transport pushes one artifact's bytes to one target and returns what the target
says it verified. It never decides *what* to move (the daemons and router do) and
never records anything (the caller records the receipt from the result).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.health import HealthCheckResult
from engine.manifest import Artifact
from engine.transfers import Transfer


@dataclass(frozen=True)
class PushRequest:
    """Move ``artifact`` (whose bytes are in ``source_file``) to ``target``."""

    artifact: Artifact
    source_file: Path
    """The bytes to send: the artifact itself or its consistent snapshot."""
    target: str
    """Target node name."""
    target_url: str
    """Target node's base URL."""
    reason: str
    urgency: str = "normal"
    live: bool = False
    """A live snapshot of a database still being written: the target keeps it apart from
    its artifacts (never a replica, never counted), replacing the previous one."""


@dataclass(frozen=True)
class PushResult:
    """What the target vouched for after hashing the bytes it stored."""

    target: str
    sha256: str
    size: int
    verified_at: float
    already_present: bool
    bytes_sent: int
    root_id: str | None = None
    """The target's data root id, as it answered."""


class TransferError(Exception):
    """A push that did not end with a verified copy at the target."""

    def __init__(self, message: str, *, retryable: bool = True, target_fault: bool = True,
                 backpressure: str | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        """False when trying again cannot help (conflict, bad token, refused path)."""
        self.target_fault = target_fault
        """True when the target failed (unreachable, timed out, 5xx): it feeds the target's
        circuit breaker. False when the file or this node was the problem."""
        self.backpressure = backpressure
        """The target refused under backpressure (``disk`` or ``queue``): hold normal pushes
        to it until it releases."""
        self.unreachable = unreachable
        """No connection to the target could be made at all (refused, no route, connect
        timeout): another way to it may still work (``transport: auto``)."""


class Transport(Protocol):
    name: str
    """Short name shown in transfers and receipts (``http``, ``rsync``, ``torrent``)."""

    async def push(self, request: PushRequest, transfer: Transfer) -> PushResult:
        """Send the bytes, updating ``transfer`` as they go; raise TransferError on failure."""
        ...

    def health_check(self) -> HealthCheckResult:
        """Whether this transport can move bytes (each transport is a health component)."""
        ...


class BatchingTransport(Transport, Protocol):
    """A transport that can also move many files to one target in one go."""

    async def push_batch(self, requests: list[PushRequest],
                         transfers: list[Transfer]) -> list[PushResult | TransferError]:
        """Push ``requests`` (one target), one outcome per request in order; a failed file
        fails only itself."""
        ...

    def batches_to(self, target: str) -> bool:
        """Pushes to ``target`` go in batches now."""
        ...


class BatchRunner(Protocol):
    """What carries a batching transport's batches (``BatchRsync``)."""

    async def push(self, requests: list[PushRequest],
                   transfers: list[Transfer]) -> list[PushResult | TransferError]: ...


def batches(transport: Transport | None, target: str) -> bool:
    """``transport`` pushes to ``target`` in batches now (``BatchingTransport``)."""
    return callable(getattr(transport, "push_batch", None)) and \
        transport.batches_to(target)  # type: ignore[union-attr]


UNHEALTHY_AFTER = 20
"""Failed pushes in a row (to any targets) after which a transport reports unhealthy."""


class PushRecord:
    """A transport's pushes and failures, and its health from them: unhealthy after
    ``UNHEALTHY_AFTER`` target failures in a row (to any targets), which means this node
    cannot move bytes that way at all (its network, its token, its keys), not one dead
    target."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.totals = {"pushes": 0, "failed": 0, "consecutive_failures": 0}
        self.last_error: str | None = None
        self.last_success_at: float | None = None

    async def run(self, push: Awaitable[PushResult]) -> PushResult:
        """Await one push, counting how it ended."""
        try:
            result = await push
        except TransferError as exc:
            self.note(exc)
            raise
        self.note(result)
        return result

    def note(self, outcome: PushResult | TransferError) -> None:
        """Count one push's end (a batch notes each of its files)."""
        if isinstance(outcome, TransferError):
            self.totals["failed"] += 1
            if outcome.target_fault:
                self.totals["consecutive_failures"] += 1
            self.last_error = str(outcome)
            return
        self.totals["pushes"] += 1
        self.totals["consecutive_failures"] = 0
        self.last_success_at = time.time()

    def health_check(self, **details: Any) -> HealthCheckResult:
        failing = self.totals["consecutive_failures"] >= UNHEALTHY_AFTER
        message = (f"{self.totals['consecutive_failures']} {self.name} pushes failed in a row:"
                   f" {self.last_error}" if failing else f"{self.name} transport working")
        return HealthCheckResult(not failing, message, {
            **self.totals, "last_error": self.last_error,
            "last_success_at": self.last_success_at, **details})
