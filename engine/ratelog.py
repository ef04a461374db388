"""RateLimitedLog: the same failure logged once a window, never as a flood.

``warning(key, msg, *args)`` logs the first line for ``key`` at once; further lines with
that key within ``window`` seconds are counted, not written, and the next line after the
window says how many were held back. Keys are what makes two lines "the same" (a component
and its error, a target and its failure); at most ``max_keys`` are remembered (the oldest
are forgotten first).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_KEYS = 1024


class RateLimitedLog:
    """Rate-limited lines of one logger, by key."""

    def __init__(self, logger: logging.Logger, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.logger = logger
        self.window = window
        self._clock = clock
        self._max = max_keys
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """key -> (when its last line was written, lines held back since)."""

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Write the line unless one with ``key`` was written within the window; True if written."""
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        if held:
            msg += f" ({held} more like this in the last {self.window:.0f}s)"
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)
