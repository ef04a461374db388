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
from dataclasses import dataclass, field
from pathlib import Path

from engine.daemons.breaker import Breakers
from engine.daemons.limiter import PushLimiter
from engine.daemons.retry import RetryPolicy, RetryState
from engine.errors import describe
from engine.events import DataSyncFailed, Payload
from engine.inflight import InFlight
from engine.manifest import Artifact, SyncReceipt
from engine.pause import PauseGate
from engine.transfers import Transfer, TransferTracker
from engine.transport import PushRequest, PushResult, Transport, TransferError
from engine.transport.base import batches
from engine.transport.registry import Transports

log = logging.getLogger(__name__)


BATCH_LINGER_SECONDS = 0.05
"""How long a batch's leader waits for the rest of its cycle's pushes before it asks for a
slot (files keep joining while it waits for one)."""

BATCH_MAX_FILES = 1000
BATCH_MAX_BYTES = 256 * 1024 * 1024
"""A batch closes at this many files or bytes (a bigger file goes alone)."""


@dataclass
class _Push:
    """One push on its way: what to send and how to report it."""

    art: Artifact
    source_file: Path
    reason: str
    retry_key: Hashable | None
    """Where a failure schedules the retry (None: nothing retries it)."""
    attempt: int
    live: bool
    outcome: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop()
                                    .create_future())
    """A batched push's end (True, False, None), set by the batch's leader."""


@dataclass
class _Batch:
    """The pushes to one target going in one batch."""

    members: list[_Push] = field(default_factory=list)
    size: int = 0

    def full(self, more: int) -> bool:
        return bool(self.members) and (len(self.members) >= BATCH_MAX_FILES
                                       or self.size + more > BATCH_MAX_BYTES)

    def add(self, one: _Push) -> None:
        self.members.append(one)
        self.size += one.art.size


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
        self._open: dict[tuple[str, bool], _Batch] = {}
        """The batch still taking files, by (target, urgent)."""
        self._batch_tasks: set[asyncio.Task] = set()

    def attach(self, transports: Transports) -> None:
        self.transports = transports

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
        ``retry=False``: a one-off push nothing retries (reported with no retry time).
        To a target whose transport batches, the push joins that target's next batch."""
        key = retry_key if retry_key is not None else (art.ident, target)
        state = self.retries.get(key)
        one = _Push(art, source_file, reason, key if retry else None,
                    (state.attempts if state else 0) + 1, live)
        transport = self.transports.for_target(target) if self.transports else None
        if batches(transport, target) and not live:
            return await self._batched(transport, target, urgent, one)
        async with self.limiter.slot(urgent):
            if self.pause is not None and self.pause.paused:
                return None  # paused while this push waited for a slot
            if not self.breakers.begin(target):
                return None  # opened while this push waited for a slot
            transfer = self._start(one, target, transport)
            try:
                try:
                    if transport is None:
                        raise TransferError("no transport yet (the node is starting)",
                                            target_fault=False)
                    outcome: PushResult | Exception = await transport.push(
                        self._request(one, target, urgent), transfer)
                except Exception as exc:  # a TransferError, or a local failure
                    outcome = exc
                return self._settle(one, target, transfer, outcome)
            except asyncio.CancelledError:
                self.transfers.finish(transfer, error="cancelled")
                raise
            finally:  # a probe that neither succeeded nor failed (cancelled, a local error)
                self.breakers.release(target)

    def _start(self, one: _Push, target: str, transport: Transport | None) -> Transfer:
        return self.transfers.start(
            direction="out", source=self.node, target=target, artifact=one.art.key,
            size=one.art.size, transport=transport.name if transport else "-",
            attempt=one.attempt)

    def _request(self, one: _Push, target: str, urgent: bool) -> PushRequest:
        if not one.source_file.exists():
            raise TransferError(f"{one.source_file.name} vanished before it was sent",
                                target_fault=False)
        return PushRequest(one.art, one.source_file, target, self._url_of(target), one.reason,
                           "urgent" if urgent else "normal", live=one.live)

    def _settle(self, one: _Push, target: str, transfer: Transfer,
                outcome: PushResult | Exception) -> bool:
        """Record how one push ended: a receipt, or a reported failure with its retry."""
        art = one.art
        if isinstance(outcome, TransferError):
            self.transfers.finish(transfer, error=str(outcome))
            # a live snapshot is always worth another try: the database keeps changing
            self.failed(art.key, target, str(outcome), outcome.retryable or one.live,
                        one.reason, one.retry_key, attempt=one.attempt)
            if outcome.backpressure:
                self._on_backpressure(target, outcome.backpressure)
            if outcome.target_fault:
                self.breakers.failure(target, str(outcome))
            return False
        if isinstance(outcome, Exception):  # a local failure (a bug, an OSError): retried
            error = f"{art.key} to {target}: {describe(outcome)}"
            log.error("push %s", error, exc_info=outcome)
            self.transfers.finish(transfer, error=error)
            self.failed(art.key, target, error, True, one.reason, one.retry_key,
                        attempt=one.attempt)
            return False
        self.transfers.finish(transfer)
        self.breakers.success(target)
        if one.retry_key is not None:
            self.retries.pop(one.retry_key, None)
        if not one.live:
            self._record(SyncReceipt(
                art.data_type, art.path, self.node, target, outcome.sha256, outcome.size,
                outcome.verified_at, transfer.transport, origin=art.origin,
                root_id=outcome.root_id))
        self.totals["pushed_files"] += 1
        self.totals["pushed_bytes"] += outcome.bytes_sent
        return True

    # -- batches ----------------------------------------------------------------------------
    async def _batched(self, transport: Transport, target: str, urgent: bool,
                       one: _Push) -> bool | None:
        """Join the open batch to ``target``, or open one: the pushes that arrive while
        its runner waits for a slot go together. Cancelling one push cancels only its
        wait; the batch goes on (``close`` stops it)."""
        lane = (target, urgent)
        batch = self._open.get(lane)
        if batch is None or batch.full(one.art.size):
            batch = self._open[lane] = _Batch()
            task = asyncio.create_task(self._run_lane(transport, target, urgent, lane, batch),
                                       name=f"push batch to {target}")
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)
        batch.add(one)
        return await asyncio.shield(one.outcome)

    async def _run_lane(self, transport: Transport, target: str, urgent: bool,
                        lane: tuple[str, bool], batch: _Batch) -> None:
        try:
            await asyncio.sleep(BATCH_LINGER_SECONDS)  # the rest of a cycle's pushes join
            async with self.limiter.slot(urgent):
                if self._open.get(lane) is batch:
                    del self._open[lane]
                members = list(batch.members)
                if (self.pause is not None and self.pause.paused) or \
                        not self.breakers.begin(target):
                    for m in members:
                        m.outcome.set_result(None)
                    return
                try:
                    await self._run_batch(transport, target, urgent, members)
                finally:
                    self.breakers.release(target)
        finally:
            if self._open.get(lane) is batch:
                del self._open[lane]
            for m in batch.members:  # stopped (``close``): so is every push waiting on it
                if not m.outcome.done():
                    m.outcome.cancel()

    async def close(self) -> None:
        """Stop the batches under way (the node is stopping)."""
        tasks = list(self._batch_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_batch(self, transport: Transport, target: str, urgent: bool,
                         members: list[_Push]) -> None:
        transfers = [self._start(m, target, transport) for m in members]
        ready: list[int] = []
        requests: list[PushRequest] = []
        outcomes: dict[int, PushResult | Exception] = {}
        for i, m in enumerate(members):
            try:
                requests.append(self._request(m, target, urgent))
                ready.append(i)
            except TransferError as exc:
                outcomes[i] = exc
        try:
            if requests:
                done = await transport.push_batch(requests, [transfers[i] for i in ready])
                outcomes.update(zip(ready, done))
        except asyncio.CancelledError:
            for t in transfers:
                self.transfers.finish(t, error="cancelled")
            raise
        except Exception as exc:  # a local failure: every file of the batch failed with it
            outcomes.update((i, exc) for i in ready)
        for i, m in enumerate(members):
            m.outcome.set_result(self._settle(m, target, transfers[i], outcomes[i]))

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
