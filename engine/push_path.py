"""PushPath: the one way any component of a node pushes an artifact version to a target.

Auto sync cycles, recovery and disk-pressure runs, write-through, live snapshots and gossip
sends (a pull another node asked for) all push through ``push``. One push:

1. waits for a slot of the node's ``PushLimiter`` (urgent pushes first);
2. starts nothing if the node was paused meanwhile (``None``), and passes the target's
   circuit breaker (``Breakers.begin``; held back: ``None``, nothing tried);
3. is tracked as a transfer while the transport moves the bytes;
4. on success records the target's verification as a receipt (not for a live snapshot,
   which is never a replica) and closes the breaker;
5. on failure emits DATA_SYNC_FAILED, schedules the retry under its retry key (unless the
   caller retries by itself), feeds the breaker when the target was at fault, and hands a
   backpressure refusal to the router.

``claim`` / ``release`` go through the node's ``InFlight`` so no two components push the same
version to the same target at once; ``push_once`` claims for a single push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from pathlib import Path

from engine.daemons.breaker import Breakers
from engine.daemons.limiter import PushLimiter
from engine.daemons.retry import RetryPolicy, RetryState
from engine.errors import describe
from engine.events import DataSyncFailed, Payload
from engine.inflight import InFlight
from engine.manifest import Artifact, SyncReceipt
from engine.pause import PauseGate
from engine.transfers import TransferTracker
from engine.transport import PushRequest, TransferError
from engine.transport.registry import Transports

log = logging.getLogger(__name__)


class PushPath:
    """Every outbound push of one node."""

    def __init__(self, node: str, strategy: str, *, limiter: PushLimiter, inflight: InFlight,
                 breakers: Breakers, transfers: TransferTracker,
                 record: Callable[[SyncReceipt], object], emit: Callable[[Payload], object],
                 url_of: Callable[[str], str], on_backpressure: Callable[[str, str], object],
                 retry: RetryPolicy, pause: PauseGate | None = None) -> None:
        self.node = node
        self.strategy = strategy
        """The node's strategy, named in the events."""
        self.limiter = limiter
        self.inflight = inflight
        self.breakers = breakers
        self.transfers = transfers
        self._record = record
        self._emit = emit
        self._url_of = url_of
        self._on_backpressure = on_backpressure
        self.retry = retry
        self.pause = pause
        """While shut, a push that gets its slot starts nothing (``None``)."""
        self.retries: dict[Hashable, RetryState] = {}
        """Retry state by key (``(ident, target)`` unless the caller gave another)."""
        self.transports: Transports | None = None
        """Set once the node's session is open (``attach``)."""
        self.totals = {"pushed_files": 0, "pushed_bytes": 0, "failed": 0}
        """Pushes that arrived, their bytes sent, and failed pushes (every component)."""
        self.last_error: str | None = None

    def attach(self, transports: Transports) -> None:
        self.transports = transports

    @property
    def transport_name(self) -> str:
        return self.transports.default.name if self.transports else "-"

    # -- retry state ------------------------------------------------------------------------
    def ready(self, key: Hashable) -> bool:
        """No backoff holds ``key`` back (and retrying it can help)."""
        return RetryPolicy.ready(self.retries.get(key))

    def state(self, key: Hashable) -> RetryState | None:
        return self.retries.get(key)

    def forget(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop the retry state of keys ``keep`` rejects (their artifact is gone)."""
        for key in [k for k in self.retries if not keep(k)]:
            del self.retries[key]

    # -- pushing ----------------------------------------------------------------------------
    async def push(self, art: Artifact, target: str, reason: str, *, source_file: Path,
                   urgent: bool = False, retry: bool = True, live: bool = False,
                   retry_key: Hashable | None = None) -> bool | None:
        """Push ``art`` (its bytes in ``source_file``) to ``target``: True when the target
        verified it, False on failure (reported), None when the breaker held it back.
        ``retry=False``: a one-off push nothing retries (reported with no retry time)."""
        key = retry_key if retry_key is not None else (art.ident, target)
        state = self.retries.get(key)
        attempt = (state.attempts if state else 0) + 1
        async with self.limiter.slot(urgent):
            if self.pause is not None and self.pause.paused:
                return None  # paused while this push waited for a slot
            if not self.breakers.begin(target):
                return None  # opened while this push waited for a slot
            transport = self.transports.for_target(target) if self.transports else None
            transfer = self.transfers.start(
                direction="out", source=self.node, target=target, artifact=art.key,
                size=art.size, transport=transport.name if transport else "-",
                attempt=attempt)
            try:
                if transport is None:
                    raise TransferError("no transport yet (the node is starting)",
                                        target_fault=False)
                if not source_file.exists():
                    raise TransferError(f"{source_file.name} vanished before it was sent",
                                        target_fault=False)
                result = await transport.push(
                    PushRequest(art, source_file, target, self._url_of(target), reason,
                                "urgent" if urgent else "normal", live=live), transfer)
            except TransferError as exc:
                self.transfers.finish(transfer, error=str(exc))
                # a live snapshot is always worth another try: the database keeps changing
                self.failed(art.key, target, str(exc), exc.retryable or live, reason,
                            key if retry else None, attempt=attempt)
                if exc.backpressure:
                    self._on_backpressure(target, exc.backpressure)
                if exc.target_fault:
                    self.breakers.failure(target, str(exc))
                return False
            except asyncio.CancelledError:
                self.transfers.finish(transfer, error="cancelled")
                raise
            except Exception as exc:  # a local failure (a bug, an OSError): reported, retried
                error = f"{art.key} to {target}: {describe(exc)}"
                log.error("push %s", error, exc_info=exc)
                self.transfers.finish(transfer, error=error)
                self.failed(art.key, target, error, True, reason, key if retry else None,
                            attempt=attempt)
                return False
            finally:  # a probe that neither succeeded nor failed (cancelled, a local error)
                self.breakers.release(target)
        self.transfers.finish(transfer)
        self.breakers.success(target)
        self.retries.pop(key, None)
        if not live:
            self._record(SyncReceipt(
                art.data_type, art.path, self.node, target, result.sha256, result.size,
                result.verified_at, transport.name, origin=art.origin, root_id=result.root_id))
        self.totals["pushed_files"] += 1
        self.totals["pushed_bytes"] += result.bytes_sent
        return True

    async def push_once(self, art: Artifact, target: str, reason: str, *, source_file: Path,
                        urgent: bool = False) -> bool | None:
        """One push nothing retries, unless one of the same pair is under way (None)."""
        pair = (art.ident, target)
        if not self.inflight.claim_one(pair):
            return None
        try:
            return await self.push(art, target, reason, source_file=source_file,
                                   urgent=urgent, retry=False)
        finally:
            self.inflight.release((pair,))

    def failed(self, artifact: str, target: str, error: str, retryable: bool, reason: str,
               retry_key: Hashable | None, attempt: int = 1) -> None:
        """Count and report a failed push of ``artifact`` (its key); with a ``retry_key``
        schedule that key's next attempt (else ``attempt`` is reported)."""
        if retry_key is not None:
            state = self.retries.setdefault(retry_key, RetryState())
            wait = self.retry.record_failure(state, error, retryable)
            attempt = state.attempts
        else:
            wait = None
        self.totals["failed"] += 1
        self.last_error = error
        self._emit(DataSyncFailed(
            source=self.node, target=target, artifact=artifact, error=error, attempt=attempt,
            retry_in_seconds=None if wait is None else round(wait, 2), reason=reason,
            strategy=self.strategy))
