"""Child processes that die with the node.

A node that is SIGKILLed cannot stop its children; on Linux each child asks the kernel to
send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so no rsync or generator goes on
writing into a data root whose node is gone. (The signal follows the thread that forked:
start children from the event loop's thread, not from a worker thread.)
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):  # not Linux: the node's own cleanup still runs
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``/``asyncio`` children (None where unsupported)."""
    return _die_with_parent if sys.platform == "linux" else None
