"""The transfers pane: transfers in flight, and below them the ones that just ended.

Live rows are keyed by ``TransferRow.key`` and updated in place; a transfer that ends leaves
the live table and shows up in the recent one (newest first). Artifacts are cut on the left so
the file name stays readable; the artifact column takes the width the other columns leave.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Span, Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from ringsync_tui.format import (block_bar, clock, human_bytes, human_duration, human_rate,
                                 truncate_left, truncate_right)
from ringsync_tui.model import ClusterSnapshot, TransferRow
from ringsync_tui.widgets._rows import (CellCache, Cells, FlexColumn, KeyedRows, SlotRows,
                                        set_border_title)
from ringsync_tui.widgets._styles import ComponentStyles

LIVE_COLUMNS = (("route", "route"), ("artifact", "artifact"), ("transport", "via"),
                ("progress", "progress"), ("rate", "rate"), ("eta", "eta"),
                ("attempt", "try"))
"""(key, label) of the live table's columns."""
RECENT_COLUMNS = (("finished", "finished"), ("route", "route"), ("artifact", "artifact"),
                  ("result", "result"), ("size", "size"))
"""(key, label) of the recent table's columns."""
BAR_WIDTH = 10
"""Cells of a live transfer's progress bar."""
MIN_ARTIFACT = 16
"""The artifact column's narrowest width."""
MAX_ARTIFACT = 60
"""The artifact column's widest width."""
MAX_ERROR = 60
"""An error in the recent table is cut to this many cells."""


def route(transfer: TransferRow) -> str:
    """``source → target``."""
    return f"{transfer.source} → {transfer.target}"


class TransfersPane(ComponentStyles, Vertical):
    """Live transfers (``#transfers-live``) above recent ones (``#transfers-recent``)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "transfers-pane--bar", "transfers-pane--bar-empty", "transfers-pane--ok",
        "transfers-pane--error", "transfers-pane--retry", "transfers-pane--muted",
    }
    """
    | Class | Description |
    | :- | :- |
    | `transfers-pane--bar` | The done part of a progress bar. |
    | `transfers-pane--bar-empty` | The rest of a progress bar. |
    | `transfers-pane--ok` | "ok" of a transfer that completed. |
    | `transfers-pane--error` | The error of a transfer that failed. |
    | `transfers-pane--retry` | The attempt number from the second attempt on. |
    | `transfers-pane--muted` | Elapsed time shown where no ETA is known, and the like. |
    """

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.snapshot: ClusterSnapshot | None = None
        """The snapshot shown last."""
        self.now: float = 0.0
        """The time ``snapshot`` was shown at (the source's clock)."""
        self._artifact = FlexColumn("artifact", MIN_ARTIFACT, MAX_ARTIFACT)
        """The artifact column takes what the live table's other columns leave."""
        self._live: KeyedRows | None = None
        self._recent: SlotRows | None = None
        self._cache = CellCache()
        self.border_title = "Transfers"

    def compose(self) -> ComposeResult:
        yield DataTable(id="transfers-live", cursor_type="row", show_cursor=False)
        yield DataTable(id="transfers-recent", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        live = self.live_table
        recent = self.recent_table
        for key, label in LIVE_COLUMNS:
            live.add_column(label, key=key)
        for key, label in RECENT_COLUMNS:
            recent.add_column(label, key=key)
        self._live = KeyedRows(live, [key for key, _ in LIVE_COLUMNS])
        self._recent = SlotRows(recent, [key for key, _ in RECENT_COLUMNS])
        if self.snapshot is not None:
            self.show(self.snapshot, self.now)

    @property
    def live_table(self) -> DataTable[object]:
        """The table of transfers in flight (rows keyed by ``TransferRow.key``)."""
        return self.query_one("#transfers-live", DataTable)

    @property
    def recent_table(self) -> DataTable[object]:
        """The table of finished and failed transfers, newest first."""
        return self.query_one("#transfers-recent", DataTable)

    def show(self, snapshot: ClusterSnapshot, now: float) -> None:
        """Show ``snapshot``'s live and recent transfers; ``now`` dates the elapsed times."""
        self.snapshot, self.now = snapshot, now
        set_border_title(self, f"Transfers · {len(snapshot.live):,} live"
                               f" · {len(snapshot.recent):,} recent")
        if self._live is None or self._recent is None:
            return
        remeasure = self._artifact.fit(self.live_table)
        width = self._artifact.width
        generation, cache = self.style_generation, self._cache
        self._live.sync(((t.key, cache.cells(
            t.key, (t, width, now if t.eta_seconds is None else None, generation),
            lambda t=t: self._live_cells(t, now))) for t in snapshot.live), remeasure=remeasure)
        self._recent.sync([cache.cells("recent:" + t.key, (t, width, generation),
                                       lambda t=t: self._recent_cells(t))
                           for t in snapshot.recent], remeasure=remeasure)
        cache.done()
        if self._artifact.pending:
            self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        """Re-show when the columns' measured widths call for another artifact width."""
        if not self._artifact.settled(self.live_table) and self.snapshot is not None:
            self.show(self.snapshot, self.now)

    def _progress(self, transfer: TransferRow) -> Text:
        done, rest = block_bar(transfer.progress, BAR_WIDTH)
        percent = f" {min(100, max(0, int(transfer.progress * 100))):>3d}%"
        return Text(done + rest + percent, no_wrap=True, end="", spans=[
            Span(0, len(done), self.component_style("transfers-pane--bar")),
            Span(len(done), BAR_WIDTH, self.component_style("transfers-pane--bar-empty"))])

    def _live_cells(self, transfer: TransferRow, now: float) -> Cells:
        style = self.component_style
        if transfer.eta_seconds is not None:
            eta = Text(human_duration(transfer.eta_seconds), justify="right", end="")
        else:  # no estimate yet: how long it has been running
            eta = Text("+" + human_duration(now - transfer.started),
                       style("transfers-pane--muted"), justify="right", end="")
        attempt = Text(str(transfer.attempt),
                       style("transfers-pane--retry") if transfer.attempt > 1 else "",
                       justify="right", end="")
        return (route(transfer), truncate_left(transfer.artifact, self._artifact.width),
                transfer.transport, self._progress(transfer),
                Text(human_rate(transfer.rate_bps), justify="right", end=""), eta, attempt)

    def _recent_cells(self, transfer: TransferRow) -> Cells:
        style = self.component_style
        if transfer.error:
            result = Text(truncate_right(" ".join(transfer.error.split()), MAX_ERROR),
                          style("transfers-pane--error"), end="")
        else:
            result = Text("ok", style("transfers-pane--ok"), end="")
        finished = clock(transfer.finished) if transfer.finished is not None else "-"
        return (finished, route(transfer), truncate_left(transfer.artifact, self._artifact.width),
                result, Text(human_bytes(transfer.size), justify="right", end=""))

    def on_resize(self, _event: events.Resize) -> None:
        self.call_after_refresh(self._refit)
