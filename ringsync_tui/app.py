"""RingsyncApp: the operator dashboard.

The app owns a ClusterSource (the embedded engine's facade, or synthetic data) and moves data
one way: a poll worker takes a snapshot twice a second and hands it to the main screen; events
from the source are batched and handed over ten times a second. Keys become actions on the
source, each run in a worker and confirmed with a notification; the effect shows up in the panes
through the same data flow (the source reflects a confirmed pause at once).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine.resources import styles_dir
from ringsync_tui.cli import THEMES
from ringsync_tui.model import ClusterSnapshot, EventRow
from ringsync_tui.screens.help import HelpScreen
from ringsync_tui.screens.main import MainScreen
from ringsync_tui.screens.node_detail import NodeDetailScreen
from ringsync_tui.source import ActionError, ClusterSource

REFRESH_SECONDS = 0.5
"""How often the panes are refreshed from the source."""
EVENT_FLUSH_SECONDS = 0.1
"""How often new events are handed to the events pane (in one batch)."""

KEYS: list[tuple[str, str, str, str]] = [
    # key, action, footer label, description (help screen and command palette)
    ("p", "priority_sync", "Priority", "priority sync of the selected node (operator_priority)"),
    ("space", "toggle_pause_all", "Pause all", "pause / resume all sync in the cluster"),
    ("P", "toggle_pause_node", "Pause node", "pause / resume sync on the selected node"),
    ("r", "recover", "Recover", "push now every artifact with fewer verified copies than required"
                                " (the selected node, or the whole cluster when none is selected)"),
    ("v", "verify", "Verify", "re-hash the selected node's stored copies"),
    ("slash", "filter_events", "Filter", "filter events (type:X node:X sev:warning words)"),
    ("enter", "open_node", "Details", "the selected node's artifacts, replicas and transfers"),
    ("escape", "clear_selection", "Clear", "clear the selection (actions apply to the cluster)"),
    ("t", "toggle_theme", "Theme", "switch between the dark and the light theme"),
    ("question_mark", "help", "Help", "this help"),
    ("q", "quit", "Quit", "quit the dashboard (the embedded engine stops cleanly)"),
]


class RingsyncApp(App[None]):
    """The ringsync dashboard over one ClusterSource."""

    CSS_PATH = [styles_dir() / "dashboard.tcss", styles_dir() / "app.tcss"]
    TITLE = "ringsync"
    BINDINGS = [Binding(key, action, label, show=key not in ("escape", "t"))
                for key, action, label, _ in KEYS]

    def __init__(self, source: ClusterSource, theme: str = "textual-dark",
                 refresh_seconds: float = REFRESH_SECONDS, keep_events: int = 5000) -> None:
        super().__init__()
        self.source = source
        """Where data comes from and actions go."""
        self.refresh_seconds = refresh_seconds
        self.snapshot: ClusterSnapshot | None = None
        """The newest snapshot (None until the first poll answers)."""
        self._pending: collections.deque[EventRow] = collections.deque(maxlen=keep_events)
        self._polling = False
        self._poll_again = False
        self._cluster_paused: bool | None = None
        """What the last ``space`` asked for, until a snapshot shows it (presses in quick
        succession toggle from the intent, not from a snapshot that has not caught up)."""
        self._unlisten: Any = None
        self.theme = theme

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def main(self) -> MainScreen:
        return self.get_screen("main")  # type: ignore[return-value]

    async def on_mount(self) -> None:
        self.install_screen(MainScreen(), "main")
        await self.push_screen("main")
        await self.source.start()
        self.main.add_events(self.source.recent_events())
        self._unlisten = self.source.listen(self._pending.append)
        self.set_interval(self.refresh_seconds, self.poll)
        self.set_interval(EVENT_FLUSH_SECONDS, self._flush_events)
        self.poll()

    async def on_unmount(self) -> None:
        if self._unlisten:
            self._unlisten()
        await self.source.stop()

    # -- data down --------------------------------------------------------------------------
    def poll(self) -> None:
        """Refresh the panes from a new snapshot. One poll runs at a time; a request made
        while one runs is served right after it (an action's effect never waits a period)."""
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self.run_worker(self._poll(), group="poll", exit_on_error=False)

    async def _poll(self) -> None:
        try:
            while True:
                self._poll_again = False
                self.snapshot = await self.source.snapshot()
                if self._cluster_paused == self.snapshot.all_paused:
                    self._cluster_paused = None  # the panes agree with the last space press
                self.main.show(self.snapshot, self.source.now())
                if not self._poll_again:
                    break
        finally:
            self._polling = False

    def _flush_events(self) -> None:
        if self._pending:
            rows = list(self._pending)
            self._pending.clear()
            self.main.add_events(rows)

    # -- actions ----------------------------------------------------------------------------
    def _target(self) -> str | None:
        """The node an action applies to: the detail screen's, else the selected one."""
        if isinstance(self.screen, NodeDetailScreen):
            return self.screen.node
        return self.main.selected

    def _need_node(self) -> str | None:
        node = self._target()
        if node is None:
            self.notify("Select a node first (↑/↓ or click a row).", severity="warning")
        return node

    def _act(self, call: Any) -> None:
        async def run() -> None:
            try:
                message = await call
            except ActionError as exc:
                self.notify(str(exc), title="Failed", severity="error")
                return
            self.notify(message)
            self.poll()
        self.run_worker(run(), group="actions", exit_on_error=False)

    def action_priority_sync(self) -> None:
        if node := self._need_node():
            self._act(self.source.priority_sync(node))

    def action_toggle_pause_all(self) -> None:
        paused = (self._cluster_paused if self._cluster_paused is not None
                  else bool(self.snapshot and self.snapshot.all_paused))
        self._cluster_paused = not paused
        self._act(self.source.set_paused(None, not paused))

    def action_toggle_pause_node(self) -> None:
        if node := self._need_node():
            row = self.snapshot.node(node) if self.snapshot else None
            self._act(self.source.set_paused(node, not (row and row.paused)))

    def action_recover(self) -> None:
        self._act(self.source.recover(self._target()))

    def action_verify(self) -> None:
        if node := self._need_node():
            self._act(self.source.verify(node))

    def action_filter_events(self) -> None:
        if self.screen is self.main:
            self.main.open_filter()

    def action_open_node(self) -> None:
        if self.screen is self.main and (node := self._need_node()):
            self.open_node(node)

    def action_clear_selection(self) -> None:
        if self.screen is self.main:
            self.main.nodes.action_clear_selection()

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[(THEMES.index(self.theme) + 1) % 2] if self.theme in THEMES else THEMES[0]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen([(key, text) for key, _a, _l, text in KEYS]))

    def open_node(self, node: str) -> None:
        self.push_screen(NodeDetailScreen(node, self.source))

    def on_main_screen_open_node(self, message: MainScreen.OpenNode) -> None:
        self.open_node(message.node)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for _key, action, label, text in KEYS:
            if action not in ("quit", "help"):
                yield SystemCommand(label, text, getattr(self, f"action_{action}"))
