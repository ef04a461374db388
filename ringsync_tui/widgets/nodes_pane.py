"""The nodes pane: one row per node, trouble on top, and the operator's node selection.

Rows follow ``sorted_nodes`` (down, suspect, fullest disk band, paused, fuller disk, name).
The pane starts with no node selected, which means "the whole cluster" to the app's actions.
The first cursor key (up/down/j/k) or a click on a row selects a node and shows the cursor;
moving the cursor selects another; ``escape`` clears the selection and hides the cursor. When
rows reorder the cursor follows the selected node, so an action never lands on a node the
operator did not pick. A node marked ``eph`` is ephemeral (it may go away for good); a state
of ``up bp:disk`` (or ``bp:queue``) means the node announces backpressure: it takes urgent
syncs only.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from ringsync_tui.format import human_bytes
from ringsync_tui.model import ClusterSnapshot, NodeRow, Thresholds
from ringsync_tui.snapshot import sorted_nodes
from ringsync_tui.widgets._rows import CellCache, Cells, FlexColumn, SlotRows
from ringsync_tui.widgets._styles import ComponentStyles
from ringsync_tui.widgets.disk_gauge import BANDS, LABEL_WIDTH, render_gauge

COLUMNS = (("node", "node"), ("state", "state"), ("disk", "disk"), ("free", "free"),
           ("pending", "pending"), ("paused", "paused"), ("role", "role"),
           ("provider", "provider"))
"""(key, label) of each column, left to right: role and provider last, so a narrow pane
scrolls them out of view before anything about the node's health."""
ESSENTIAL = ("node", "state", "free", "pending", "paused")
"""The columns the disk gauge leaves room for on a narrow pane."""
MIN_GAUGE = 10
"""The disk gauge's narrowest bar (cells)."""
MAX_GAUGE = 50
"""The disk gauge's widest bar (cells)."""


class NodesPane(ComponentStyles, DataTable[object]):
    """The cluster's nodes; the selected one (or none) is what the app's actions apply to."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("escape", "clear_selection", "Clear selection", show=False),
    ]
    """
    | Key(s) | Description |
    | :- | :- |
    | up, down, j, k | Select a node (the first press selects the top row). |
    | enter | Open the selected node (posts `NodesPane.Opened`). |
    | escape | Clear the selection (the whole cluster). |
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {
        "nodes-pane--up", "nodes-pane--suspect", "nodes-pane--down", "nodes-pane--unknown",
        "nodes-pane--ok", "nodes-pane--push", "nodes-pane--urgent", "nodes-pane--cleanup",
        "nodes-pane--mark", "nodes-pane--empty", "nodes-pane--paused",
        "nodes-pane--ephemeral", "nodes-pane--muted",
    }
    """
    | Class | Description |
    | :- | :- |
    | `nodes-pane--up`, `--suspect`, `--down`, `--unknown` | The state column. |
    | `nodes-pane--ok`, `--push`, `--urgent`, `--cleanup` | The disk gauge's fill per band. |
    | `nodes-pane--mark`, `--empty` | The gauge's threshold marks and free part. |
    | `nodes-pane--paused` | The paused column. |
    | `nodes-pane--ephemeral` | The `eph` marker after an ephemeral node's name. |
    | `nodes-pane--muted` | Values that carry no news (no pending pushes, no data). |
    """

    class _NodeMessage(Message):
        def __init__(self, node: str | None, pane: NodesPane | None = None) -> None:
            super().__init__()
            self.node = node
            """The node the message is about (None: no node, the whole cluster)."""
            self.pane = pane
            """The pane the node is in."""

        @property
        def control(self) -> NodesPane | None:
            return self.pane

    class Selected(_NodeMessage):
        """The selected node changed (None: no node, the actions apply to the cluster)."""

    class Opened(_NodeMessage):
        """The operator asked to open the selected node (enter, or a click on it)."""

        node: str

    def __init__(self, *, zebra_stripes: bool = False, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(cursor_type="row", show_cursor=False, zebra_stripes=zebra_stripes,
                         cursor_foreground_priority="renderable", name=name, id=id,
                         classes=classes)
        self.snapshot: ClusterSnapshot | None = None
        """The snapshot shown last."""
        self.names: list[str] = []
        """The node shown in each row, top to bottom."""
        self._selected: str | None = None
        self._updating = False
        self._gauge = FlexColumn("disk", MIN_GAUGE, MAX_GAUGE, ESSENTIAL, extra=LABEL_WIDTH)
        self._rows: SlotRows | None = None
        self._cache = CellCache()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self._rows = SlotRows(self, [key for key, _ in COLUMNS])
        if self.snapshot is not None:
            self.show(self.snapshot)

    # -- data down --------------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        """The selected node, or None (the whole cluster)."""
        return self._selected

    def node_at(self, row: int) -> str | None:
        """The node shown in row ``row`` (None when there is no such row)."""
        return self.names[row] if 0 <= row < len(self.names) else None

    def show(self, snapshot: ClusterSnapshot) -> None:
        """Show ``snapshot``'s nodes, keeping the cursor on the selected node."""
        self.snapshot = snapshot
        if self._rows is None:  # not mounted yet: on_mount shows it
            return
        rows = sorted_nodes(snapshot)
        remeasure = self._gauge.fit(self)
        gauge_width = self._gauge.width
        count_changed = len(self._rows.cells) != len(rows)
        self._updating = True
        try:
            self.names = [row.name for row in rows]
            cache, generation, thresholds = self._cache, self.style_generation, snapshot.thresholds
            self._rows.sync([cache.cells(row.name, (row, thresholds, gauge_width, generation),
                                         lambda row=row: self._cells(row, thresholds))
                             for row in rows], remeasure=remeasure)
            cache.done()
            if self._selected is not None and self._selected in self.names:
                index = self.names.index(self._selected)
                if self.cursor_row != index:
                    self.move_cursor(row=index)
        finally:
            self._updating = False
        if self._selected is not None and self._selected not in self.names:
            self.action_clear_selection()
        if count_changed or self._gauge.pending:
            self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        """Re-show when the columns' measured widths call for another gauge width."""
        if not self._gauge.settled(self) and self.snapshot is not None:
            self.show(self.snapshot)

    def _cells(self, node: NodeRow, thresholds: Thresholds) -> Cells:
        style = self.component_style
        name = Text(node.name, no_wrap=True, end="")
        if node.ephemeral:
            name.append(" eph", style("nodes-pane--ephemeral"))
        state_class = node.state if node.state in ("up", "suspect", "down") else "unknown"
        state = Text(node.state, style("nodes-pane--" + state_class), end="")
        if node.backpressure and node.state == "up":  # holds normal syncs: senders go elsewhere
            state.append(f" bp:{node.backpressure}", style("nodes-pane--suspect"))
        muted = style("nodes-pane--muted")
        if node.total_bytes > 0:
            disk = render_gauge(node.percent, thresholds, self._gauge.width,
                                {part: style("nodes-pane--" + part)
                                 for part in (*BANDS, "mark", "empty")})
            free = Text(human_bytes(node.free_bytes), justify="right", end="")
        else:
            disk = Text("-", muted, end="")
            free = Text("-", muted, justify="right", end="")
        pending = Text(str(node.pending), muted if node.pending == 0 else "", justify="right",
                       end="")
        paused = Text("paused", style("nodes-pane--paused"), end="") if node.paused else Text("")
        return (name, state, disk, free, pending, paused, node.role, node.provider)

    def on_resize(self, _event: events.Resize) -> None:
        self._refit()

    # -- selection --------------------------------------------------------------------------
    def _select_cursor_row(self) -> None:
        """Make the node under the (shown) cursor the selection; post Selected if it changed."""
        if self._updating or not self.show_cursor:
            return
        node = self.node_at(self.cursor_row)
        if node is not None and node != self._selected:
            self._selected = node
            self.post_message(self.Selected(node, self))

    def _start_selection(self, row: int) -> None:
        self._updating = True
        try:
            self.cursor_coordinate = Coordinate(row, 0)
            self.show_cursor = True
        finally:
            self._updating = False
        self._select_cursor_row()

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        self._select_cursor_row()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._select_cursor_row()

    def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        if self._selected is not None:
            self.post_message(self.Opened(self._selected, self))

    def action_cursor_down(self) -> None:
        if not self.show_cursor:
            if self.row_count:
                self._start_selection(0)
            return
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if not self.show_cursor:
            if self.row_count:
                self._start_selection(0)
            return
        super().action_cursor_up()

    def action_clear_selection(self) -> None:
        """Select no node (the whole cluster) and hide the cursor."""
        self.show_cursor = False
        if self._selected is not None:
            self._selected = None
            self.post_message(self.Selected(None, self))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_selection":
            return self._selected is not None  # else escape goes on to the screen and app
        if action == "select_cursor":
            return self.show_cursor  # else enter goes on (the app says "select a node first")
        return True

    async def _on_click(self, event: events.Click) -> None:
        # Runs before DataTable's own click handler, which only acts on a shown cursor.
        if not self.show_cursor:
            row = event.style.meta.get("row")
            if isinstance(row, int) and 0 <= row < self.row_count:
                event.prevent_default()
                event.stop()
                self._start_selection(row)
