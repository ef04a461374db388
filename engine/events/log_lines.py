"""EventLogLines: every warning or error event also becomes a log line, rate-limited.

A headless node (``ringsync --engine-only``) is read through its log. Every event whose
severity is ``warning`` or ``error`` (a failed push, a breaker opening, a node down, a
pressure level change, a quarantined copy, a failed hook) is written as one WARNING line
``<TYPE> k=v ...``. Lines about the same thing (same type, and the same target, node,
component, level, state or reason) are written once a ``window`` (``engine.ratelog``): 31
failed pushes to one coordinator in 80 s are two lines, the second saying how many were
held back. ``COMPONENT_FAILED`` / ``COMPONENT_RECOVERED`` are logged by the supervisor
itself (with the traceback), so they are not repeated here.
"""

from __future__ import annotations

import logging

from engine.events.types import Event, EventType, Severity
from engine.ratelog import RateLimitedLog

log = logging.getLogger("engine.events")

IDENTITY_FIELDS = ("target", "node", "component", "level", "state", "reason", "hook")
"""Payload fields that say what a line is about (its rate-limit key)."""
LOGGED_ELSEWHERE = frozenset({EventType.COMPONENT_FAILED, EventType.COMPONENT_RECOVERED})
MAX_LINE = 400


class EventLogLines:
    """A bus listener (``EventBus.listen``) writing warning and error events to the log."""

    def __init__(self, window: float = 60.0) -> None:
        self.lines = RateLimitedLog(log, window=window)

    def __call__(self, event: Event) -> None:
        if event.severity is Severity.INFO or event.type in LOGGED_ELSEWHERE:
            return
        payload = event.payload.to_dict()
        key = "|".join([event.type.value, *(str(payload.get(f)) for f in IDENTITY_FIELDS)])
        text = " ".join(f"{k}={v}" for k, v in payload.items() if v not in (None, [], {}))
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "..."
        self.lines.warning(key, "%s %s", event.type.value, text)
