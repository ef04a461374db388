"""How long a transfer may go without moving a byte, in either direction, before it is
given up as stalled.

A partitioned or vanished host sends no FIN and no RST: without a bound, the receiver
would hold its upload slot and the sender its transfer slot until TCP gives up (about
15 minutes of retransmissions). Both ends use the same bound:

- the receiver ends an upload whose body brings no byte for this long (``engine/server/body.py``:
  408, the partial kept for a resume);
- the sender ends a push whose target takes no byte for this long (``engine/transport/http.py``:
  a retryable failure that feeds the target's breaker).

Time a node spends on its own work (reading the file, waiting for its bandwidth allocation,
hashing the part a resume starts from) is not idle time. Bytes are drawn from the bandwidth
bucket a 64 KiB piece at a time, just before each piece is sent, so a sender waiting for its
share never leaves the receiver silent for long (``bandwidth.GRANT_BYTES``).
"""

from __future__ import annotations

import os

UPLOAD_IDLE_SECONDS = 30.0
"""The default bound (overridable with the environment variable
``RINGSYNC_UPLOAD_IDLE_SECONDS``)."""

IDLE_ENV = "RINGSYNC_UPLOAD_IDLE_SECONDS"

RESUME_HASH_BYTES_PER_SECOND = 50_000_000
"""A receiver hashes the part it holds of a resumed upload before it reads a byte of the rest
(it must, to verify the whole). The sender's first piece of a resume may wait that long on top
of the idle bound: ``offset`` / this rate, a slow disk's (a 30 GB partial: 10 minutes)."""


def first_piece_grace(offset: int) -> float:
    """Extra seconds the first piece of an upload resumed at ``offset`` may take."""
    return offset / RESUME_HASH_BYTES_PER_SECOND


def upload_idle_seconds() -> float:
    """``UPLOAD_IDLE_SECONDS``, or ``$RINGSYNC_UPLOAD_IDLE_SECONDS`` when set to a positive
    number (read at each call, so a test can set it per node)."""
    raw = os.environ.get(IDLE_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return UPLOAD_IDLE_SECONDS
        if value > 0:
            return value
    return UPLOAD_IDLE_SECONDS
