"""Is a received SQLite database sound? Checked before the copy is published or counted.

``check_database`` opens the file read-only and immutable (``file:…?mode=ro&immutable=1``:
no locks taken, no -wal/-shm file created next to it) and runs ``PRAGMA integrity_check``
on a file of at most ``integrity_max_bytes``, else the cheaper ``PRAGMA quick_check``. Only
the single answer ``ok`` passes; a file SQLite cannot read as a database fails too. A copy
that fails goes to ``DataRoot.quarantine_file``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from engine.errors import describe


PROGRESS_OPS = 10_000
"""SQLite VM steps between looks at the cancel flag."""


@dataclass(frozen=True)
class CheckResult:
    """What one check of one file said."""

    check: str
    """``integrity_check`` or ``quick_check``."""
    ok: bool
    first_line: str
    """``ok``, the first line SQLite answered, or the error that stopped it."""

    def describe(self) -> str:
        return f"PRAGMA {self.check} {'passed' if self.ok else 'failed'}: {self.first_line}"


def readonly_uri(path: Path) -> str:
    """The URI that opens ``path`` without locks or sidecar files (the file must not change)."""
    return f"file:{quote(str(path))}?mode=ro&immutable=1"


def check_database(path: Path, integrity_max_bytes: int,
                   cancel: threading.Event | None = None) -> CheckResult:
    """Check one database file that nobody is writing (blocking: run it in a worker thread).

    ``cancel`` set from another thread interrupts a long check (the result is then a failure).
    """
    check = "integrity_check" if path.stat().st_size <= integrity_max_bytes else "quick_check"
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True)
        try:
            if cancel is not None:
                conn.set_progress_handler(lambda: int(cancel.is_set()), PROGRESS_OPS)
            rows = conn.execute(f"PRAGMA {check}").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:  # e.g. "file is not a database", "database disk image is malformed"
        return CheckResult(check, False, describe(exc))
    if not rows:
        return CheckResult(check, False, "no answer")
    lines = [ln.strip() for ln in str(rows[0][0]).splitlines()]
    first = next((ln for ln in lines if ln and not ln.startswith("***")), lines[0] if lines else "")
    return CheckResult(check, rows == [("ok",)], first)


async def check_database_async(path: Path, integrity_max_bytes: int) -> CheckResult:
    """``check_database`` in a worker thread; a cancelled caller stops the check too."""
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(check_database, path, integrity_max_bytes, cancel)
    except asyncio.CancelledError:
        cancel.set()
        raise
