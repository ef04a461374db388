"""The bandwidth pane: each sender's budget towards each host, and its recent throughput.

One row per ``BandwidthRow`` (``node→host``): how much of the limit is allocated to running
transfers (a bar), current and limit in MB/s, active transfers, and a sparkline of the last
samples of current throughput scaled to the limit. Each ``show()`` adds one sample per route;
a route's history is forgotten after it was missing from ``forget_after`` snapshots in a row.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from ringsync_tui.format import block_bar, sparkline
from ringsync_tui.model import BandwidthRow, ClusterSnapshot
from ringsync_tui.widgets._rows import (CellCache, Cells, FlexColumn, KeyedRows,
                                        set_border_title)
from ringsync_tui.widgets._styles import ComponentStyles

COLUMNS = (("route", "route"), ("rate", "MB/s"), ("history", "history"),
           ("allocated", "allocated"), ("active", "act"))
"""(key, label) of each column, left to right (allocation and active transfers last: a
narrow pane scrolls them out of view first). ``MB/s`` is current/limit."""
BAR_WIDTH = 10
"""Cells of the allocation bar."""
MIN_SPARK = 8
"""The narrowest throughput sparkline (samples)."""


class BandwidthPane(ComponentStyles, DataTable[object]):
    """Per-route bandwidth budgets with a throughput history."""

    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {
        "bandwidth-pane--bar", "bandwidth-pane--bar-full", "bandwidth-pane--bar-empty",
        "bandwidth-pane--spark", "bandwidth-pane--muted",
    }
    """
    | Class | Description |
    | :- | :- |
    | `bandwidth-pane--bar` | The allocated part of the bar. |
    | `bandwidth-pane--bar-full` | The allocated part when the whole limit is allocated. |
    | `bandwidth-pane--bar-empty` | The unallocated part of the bar. |
    | `bandwidth-pane--spark` | The throughput sparkline. |
    | `bandwidth-pane--muted` | Idle routes' numbers, "unlimited". |
    """

    def __init__(self, *, history: int = 30, forget_after: int = 5, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(cursor_type="row", show_cursor=False, name=name, id=id,
                         classes=classes)
        self.history_length = history
        """Samples of throughput kept per route."""
        self.forget_after = forget_after
        """Snapshots in a row a route may be missing from before its history is dropped."""
        self.history: dict[str, deque[float]] = {}
        """Recent ``current_mbps`` samples per route key, oldest first."""
        self.snapshot: ClusterSnapshot | None = None
        """The snapshot shown last."""
        self._missing: dict[str, int] = {}
        self._spark = FlexColumn("history", MIN_SPARK, max(MIN_SPARK, history), ("route", "rate"))
        self._rows: KeyedRows | None = None
        self._cache = CellCache()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self._rows = KeyedRows(self, [key for key, _ in COLUMNS], strict_order=True)
        self.border_title = "Bandwidth"
        if self.snapshot is not None:
            self._render_rows(self.snapshot)

    def show(self, snapshot: ClusterSnapshot) -> None:
        """Add one throughput sample per route of ``snapshot`` and show its routes."""
        self.snapshot = snapshot
        present = set()
        for row in snapshot.bandwidth:
            present.add(row.key)
            samples = self.history.get(row.key)
            if samples is None:
                samples = self.history[row.key] = deque(maxlen=self.history_length)
            samples.append(row.current_mbps)
            self._missing[row.key] = 0
        for key in [k for k in self.history if k not in present]:
            self._missing[key] = self._missing.get(key, 0) + 1
            if self._missing[key] >= self.forget_after:
                del self.history[key], self._missing[key]
        active = sum(row.active_transfers for row in snapshot.bandwidth)
        set_border_title(self, f"Bandwidth · {len(snapshot.bandwidth)} routes · {active} active")
        self._render_rows(snapshot)

    def _render_rows(self, snapshot: ClusterSnapshot) -> None:
        if self._rows is None:
            return
        remeasure = self._spark.fit(self)
        width = self._spark.width
        generation, cache = self.style_generation, self._cache
        self._rows.sync(((row.key, cache.cells(
            row.key, (row, tuple(self.history.get(row.key, ())), width, generation),
            lambda row=row: self._cells(row))) for row in snapshot.bandwidth),
            remeasure=remeasure)
        cache.done()
        if self._spark.pending:
            self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        """Re-render when the columns' measured widths call for another sparkline width."""
        if not self._spark.settled(self) and self.snapshot is not None:
            self._render_rows(self.snapshot)

    def _cells(self, row: BandwidthRow) -> Cells:
        style = self.component_style
        muted = style("bandwidth-pane--muted")
        if row.limit_mbps > 0:
            fraction = row.allocated_mbps / row.limit_mbps
            done, rest = block_bar(fraction, BAR_WIDTH)
            bar = Text(done, style("bandwidth-pane--bar-full" if fraction >= 0.999
                                   else "bandwidth-pane--bar"), no_wrap=True, end="")
            bar.append(rest, style("bandwidth-pane--bar-empty"))
            limit = f"{row.limit_mbps:.0f}"
        else:
            bar = Text("unlimited".ljust(BAR_WIDTH), muted, end="")
            limit = "∞"
        rate = Text(f"{row.current_mbps:.1f}/{limit}", muted if row.current_mbps == 0 else "",
                    justify="right", end="")
        active = Text(str(row.active_transfers), muted if row.active_transfers == 0 else "",
                      justify="right", end="")
        spark = Text(sparkline(self.history.get(row.key, ()), row.limit_mbps, self._spark.width),
                     style("bandwidth-pane--spark"), no_wrap=True, end="")
        return (f"{row.node}→{row.host}", rate, spark, bar, active)

    def on_resize(self, _event: events.Resize) -> None:
        self._refit()
