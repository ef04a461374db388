"""EventBus: numbers events, appends them to the node's JSONL log, fans them out.

Subscribers are bounded queues: a consumer that falls too far behind is cut off
(its stream ends and it resumes with ``since=``) rather than growing memory.
In-process listeners (router, daemons) are plain callables run synchronously.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.events.types import Event, EventType, Payload

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


class Subscription:
    """A live feed of events for one consumer (an SSE client, the dashboard)."""

    def __init__(self, bus: "EventBus", maxsize: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        """Events in order; ``None`` means the feed ended (closed or overflowed)."""
        self.overflowed = False
        """True when the consumer fell behind and the feed was cut."""

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    async def get(self) -> Event | None:
        return await self.queue.get()


class EventBus:
    """One per node. ``emit`` is synchronous and cheap; it never blocks the loop."""

    def __init__(self, node: str, log_path: Path | None = None, memory: int = 2048) -> None:
        self.node = node
        """The name stamped on every event."""
        self.log_path = log_path
        """The JSONL log (append-only), or None for a bus kept in memory only."""
        self._recent: collections.deque[Event] = collections.deque(maxlen=memory)
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[tuple[EventType | None, Listener]] = []
        self.last_seq = self._last_logged_seq()
        """Sequence number of the newest event (0 before the first)."""
        self.log_errors = 0
        """Events that could not be written to the log (a full disk); they were delivered."""
        self.log_id = self._log_id()
        """Names this numbering: a node whose log starts over gets a new id, so followers
        know to start from 1 again instead of waiting for numbers they have already seen."""
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None

    def _last_logged_seq(self) -> int:
        """The newest sequence number in the log, reading backwards until a whole line parses."""
        if not self.log_path or not self.log_path.exists():
            return 0
        with open(self.log_path, "rb") as fh:
            end = fh.seek(0, 2)
            block, tail = 65536, b""
            while end > 0:
                start = max(0, end - block)
                fh.seek(start)
                tail = fh.read(end - start) + tail
                end = start
                lines = tail.splitlines()
                complete = lines if start == 0 else lines[1:]  # the first may be cut
                for line in reversed(complete):
                    try:
                        return int(json.loads(line)["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
        return 0

    def _log_id(self) -> str:
        if self.log_path is None:
            return uuid.uuid4().hex
        id_path = self.log_path.with_suffix(".id")
        if self.log_path.exists() and id_path.exists():
            return id_path.read_text().strip()
        log_id = uuid.uuid4().hex
        id_path.write_text(log_id + "\n")
        return log_id

    def emit(self, payload: Payload) -> Event:
        """Number, log and deliver one event."""
        self.last_seq += 1
        event = Event(self.last_seq, time.time(), self.node, payload)
        self._recent.append(event)
        if self._log:
            try:
                self._log.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
                self._log.flush()
            except OSError as exc:  # a full disk: the event still reaches every listener
                self.log_errors += 1
                if self.log_errors == 1 or self.log_errors % 1000 == 0:
                    log.error("cannot write event log of %s (%d events unwritten): %s",
                              self.node, self.log_errors, exc)
        for wanted, listener in list(self._listeners):
            if wanted is None or wanted == event.type:
                try:
                    listener(event)
                except Exception:  # a broken listener must not stop the emitter
                    log.exception("event listener %r failed on %s", listener, event.type.value)
        for sub in list(self._subscriptions):
            if sub.queue.qsize() >= sub.queue.maxsize - 1:
                # Cut it off with the last free slot: what it received stays gap-free, so
                # it resumes with since=<last seq it saw> and misses nothing.
                sub.overflowed = True
                self._subscriptions.discard(sub)
                sub.queue.put_nowait(None)
            else:
                sub.queue.put_nowait(event)
        return event

    def listen(self, listener: Listener, event_type: EventType | None = None) -> None:
        """Call ``listener`` for every event (or every event of one type)."""
        self._listeners.append((event_type, listener))

    def subscribe(self, maxsize: int = 1024) -> Subscription:
        sub = Subscription(self, max(2, maxsize))
        self._subscriptions.add(sub)
        return sub

    def since(self, seq: int) -> Iterator[Event]:
        """Events with sequence number > ``seq``, oldest first (from memory or the log)."""
        if self._recent and (seq >= self._recent[0].seq - 1 or not self.log_path):
            yield from (e for e in list(self._recent) if e.seq > seq)
            return
        if not self.log_path or not self.log_path.exists():
            return
        upto = self.last_seq
        with open(self.log_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    data = json.loads(line)
                    if seq < int(data["seq"]) <= upto:
                        yield Event.from_dict(data)
                except ValueError:
                    continue

    def recent(self, limit: int = 100) -> list[Event]:
        return list(self._recent)[-limit:]

    def end_streams(self) -> None:
        """End every live feed (shutdown): consumers see ``None`` and stop."""
        for sub in list(self._subscriptions):
            self._subscriptions.discard(sub)
            sub.queue.put_nowait(None)  # a subscribed queue always has a free slot (see emit)

    def close(self) -> None:
        self.end_streams()
        if self._log:
            self._log.close()
            self._log = None
