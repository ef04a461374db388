"""PauseGate: whether an operator has paused sync on this node.

While it is shut no new transfer starts anywhere on the node: auto sync cycles, recovery
and pressure pushes, live snapshots, gossip pulls and sends. Transfers already running
finish. Opening it again runs the listeners (auto sync runs a cycle at once).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.events import Payload, SyncPaused, SyncResumed


class PauseGate:
    """One node's pause switch; every component that starts transfers reads ``paused``."""

    def __init__(self, node: str, emit: Callable[[Payload], object]) -> None:
        self.node = node
        self._emit = emit
        self._paused = False
        self._on_resume: list[Callable[[], None]] = []

    @property
    def paused(self) -> bool:
        """True while no new transfer may start."""
        return self._paused

    def on_resume(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the gate opens again."""
        self._on_resume.append(listener)

    def set(self, paused: bool, by: str) -> bool:
        """Shut or open the gate on ``by``'s request; a change is a SYNC_PAUSED or
        SYNC_RESUMED event. Returns whether anything changed."""
        if paused == self._paused:
            return False
        self._paused = paused
        self._emit((SyncPaused if paused else SyncResumed)(node=self.node, requested_by=by))
        if not paused:
            for listener in self._on_resume:
                listener()
        return True
