"""TransferTracker: the node's live and recently finished transfers, for /status.

Both directions are tracked: pushes this node makes and uploads it receives.
Finished transfers are kept in a bounded ring so memory never grows.
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Transfer:
    """One artifact moving between two nodes."""

    id: int
    direction: str
    """``"out"`` for a push this node makes, ``"in"`` for an upload it receives."""
    source: str
    target: str
    artifact: str
    """``<data_type>/<path>``."""
    size: int
    transport: str
    attempt: int = 1
    offset: int = 0
    """Bytes that were already at the target when this attempt began (resume)."""
    done: int = 0
    """Bytes moved in this attempt."""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None

    def progress(self) -> float:
        return 1.0 if self.size == 0 else min(1.0, (self.offset + self.done) / self.size)

    def rate(self) -> float:
        """Bytes per second over this attempt."""
        elapsed = (self.finished or time.time()) - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate()
        remaining = self.size - self.offset - self.done
        return {
            "id": self.id, "direction": self.direction, "source": self.source,
            "target": self.target, "artifact": self.artifact, "size": self.size,
            "transport": self.transport, "attempt": self.attempt, "offset": self.offset,
            "done": self.done, "progress": round(self.progress(), 4),
            "rate_bps": round(rate, 1),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 and not self.finished else None,
            "started": self.started, "finished": self.finished, "error": self.error,
        }


class TransferTracker:
    """Live transfers plus the last ``keep`` finished ones."""

    def __init__(self, keep: int = 50) -> None:
        self._ids = itertools.count(1)
        self.live: dict[int, Transfer] = {}
        """Transfers in flight, by id."""
        self.recent: collections.deque[Transfer] = collections.deque(maxlen=keep)
        """Finished transfers, newest last; failed ones carry ``error``."""

    def start(self, **fields: Any) -> Transfer:
        transfer = Transfer(id=next(self._ids), **fields)
        self.live[transfer.id] = transfer
        return transfer

    def finish(self, transfer: Transfer, error: str | None = None) -> None:
        transfer.finished = time.time()
        transfer.error = error
        self.live.pop(transfer.id, None)
        self.recent.append(transfer)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {"in_flight": [t.to_dict() for t in self.live.values()],
                "recent": [t.to_dict() for t in self.recent]}
