"""MainScreen: nodes, bandwidth, transfers and events of the whole cluster on one screen.

The screen owns the layout and routes its widgets' messages: a node selection updates the
header, opening a node asks the app for the detail screen, the event filter re-filters the
events pane. Data comes down from the app through ``show()`` and ``add_events()``.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from ringsync_tui.model import ClusterSnapshot, EventRow
from ringsync_tui.widgets import (BandwidthPane, ClusterHeader, EventFilter, EventsPane, NodesPane,
                                  TransfersPane)


class MainScreen(Screen[None]):
    """The dashboard's home screen."""

    AUTO_FOCUS = "NodesPane"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    class OpenNode(Message):
        """The operator asked for a node's detail screen."""

        def __init__(self, node: str) -> None:
            super().__init__()
            self.node = node

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: ClusterSnapshot | None = None
        """The last snapshot shown."""
        self.now: float = 0.0
        """The time the last snapshot was shown at (the source's clock)."""
        # The panes are held from construction, so data handed down while the app is
        # closing (a poll or an event batch in flight) lands in them harmlessly.
        self.header = ClusterHeader(id="header")
        self.nodes = NodesPane(id="nodes")
        self.bandwidth = BandwidthPane(id="bandwidth")
        self.transfers = TransfersPane(id="transfers")
        self.events = EventsPane(id="events")

    def compose(self) -> ComposeResult:
        yield self.header
        with Horizontal(id="top"):
            yield self.nodes
            yield self.bandwidth
        yield self.transfers
        with Vertical(id="event-area"):
            yield EventFilter(id="event-filter")
            yield self.events
        yield Footer()

    # -- data down --------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        """The selected node, or None for the whole cluster."""
        return self.nodes.selected

    def show(self, snapshot: ClusterSnapshot, now: float) -> None:
        self.snapshot, self.now = snapshot, now
        self.nodes.show(snapshot)
        self.bandwidth.show(snapshot)
        self.transfers.show(snapshot, now)
        self._show_header()

    def add_events(self, rows: Iterable[EventRow]) -> None:
        self.events.add(rows)

    def _show_header(self) -> None:
        if self.snapshot is not None:
            self.header.show(self.snapshot, self.selected, self.now)

    # -- filter -----------------------------------------------------------------------------
    def open_filter(self) -> None:
        box = self.query_one(EventFilter)
        box.add_class("-open")
        box.value = self.events.filter_text
        box.focus()

    def on_event_filter_applied(self, message: EventFilter.Applied) -> None:
        self.events.set_filter(message.text)

    def on_event_filter_closed(self, _message: EventFilter.Closed) -> None:
        self.query_one(EventFilter).remove_class("-open")
        self.nodes.focus()

    # -- messages up ------------------------------------------------------------------------
    def on_nodes_pane_selected(self, _message: NodesPane.Selected) -> None:
        self._show_header()

    def on_nodes_pane_opened(self, message: NodesPane.Opened) -> None:
        self.post_message(self.OpenNode(message.node))
