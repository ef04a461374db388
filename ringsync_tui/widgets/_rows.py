"""Cheap in-place updates of DataTable rows.

Panes re-render twice a second. Replacing every row each time would re-measure and re-render
the whole table, so these helpers remember each row's cells and call ``update_cell`` only for
the cells that changed. Column widths are measured only when a cell grows past its column
(or when a pane asks, after its flexible column shrank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

Cells = tuple[Any, ...]


def cell_width(value: Any) -> int:
    """Cells ``value`` takes on one line."""
    if isinstance(value, Text):
        return value.cell_len
    return cell_len(str(value))


class KeyedRows:
    """The rows of a DataTable keyed by an id of the data (a transfer key, a route).

    Rows stay where they are; rows for new keys are added at the bottom, rows for keys that
    are gone are removed. With ``strict_order`` the table is rebuilt when that would not give
    the order of the data (cheap for small tables; it resets the scroll position).
    """

    def __init__(self, table: DataTable[Any], columns: Sequence[str],
                 strict_order: bool = False) -> None:
        self.table = table
        """The table the rows live in."""
        self.columns = tuple(columns)
        """Column keys, in the order of each row's cells."""
        self.strict_order = strict_order
        """Rebuild the table when its rows are not in the data's order."""
        self.cells: dict[str, Cells] = {}
        """Each row's cells as last set, in table order."""

    def sync(self, rows: Iterable[tuple[str, Cells]], remeasure: str | None = None) -> None:
        """Make the table show the rows of ``rows``, touching only what changed.

        ``remeasure`` names a column whose width must be measured again (it may have shrunk).
        """
        wanted = dict(rows)
        table = self.table
        for key in [k for k in self.cells if k not in wanted]:
            del self.cells[key]
            table.remove_row(key)
        if self.strict_order and list(wanted)[:len(self.cells)] != list(self.cells):
            table.clear()
            self.cells = {}
        for key, new in wanted.items():
            old = self.cells.get(key)
            if old is None:
                table.add_row(*new, key=key)
            else:
                update_cells(table, key, self.columns, old, new, remeasure)
                remeasure = None
            self.cells[key] = new


def update_cells(table: DataTable[Any], key: str, columns: Sequence[str], old: Cells, new: Cells,
                 remeasure: str | None = None) -> None:
    """Update the cells of row ``key`` that differ between ``old`` and ``new``."""
    if old is new and remeasure is None:
        return
    for column, before, after in zip(columns, old, new):
        if (before is not after and before != after) or column == remeasure:
            width = table.columns[ColumnKey(column)].content_width
            table.update_cell(key, column, after,
                              update_width=column == remeasure or cell_width(after) > width)


class SlotRows:
    """The rows of a DataTable by position: row ``i`` shows the ``i``-th item, whatever it is.

    Reordering the data then rewrites the cells of the rows whose item changed, and never
    rebuilds the table: its scroll position and cursor row stay where they are.
    """

    def __init__(self, table: DataTable[Any], columns: Sequence[str]) -> None:
        self.table = table
        """The table the rows live in."""
        self.columns = tuple(columns)
        """Column keys, in the order of each row's cells."""
        self.cells: list[Cells] = []
        """Each row's cells as last set, top to bottom."""

    def sync(self, rows: Iterable[Cells], remeasure: str | None = None) -> None:
        """Make row ``i`` show ``rows[i]``, touching the cells that changed only."""
        table = self.table
        new_rows = list(rows)
        while len(self.cells) > len(new_rows):
            self.cells.pop()
            table.remove_row(str(len(self.cells)))
        for index, new in enumerate(new_rows):
            key = str(index)
            if index < len(self.cells):
                update_cells(table, key, self.columns, self.cells[index], new, remeasure)
                remeasure = None
                self.cells[index] = new
            else:
                table.add_row(*new, key=key)
                self.cells.append(new)


def flex_width(table: DataTable[Any], flex: str, current: int, low: int, high: int,
               essential: Sequence[str] = (), extra: int = 0) -> int:
    """The width for column ``flex`` so the table fills its width without scrolling.

    When even ``low`` does not fit beside every other column, the columns not in
    ``essential`` are let go (they sit right of ``flex`` and scroll into view) and ``flex``
    fills what the essential ones leave. ``extra`` is the cells ``flex``'s cells add to its
    width (a gauge's percent). Returns ``current`` while the table has no size yet.
    """
    width = table.scrollable_content_region.width
    if width <= 0 or not table.columns:
        return current
    own = 2 * table.cell_padding + extra
    others = [(key.value, column.get_render_width(table))
              for key, column in table.columns.items() if key.value != flex]
    available = width - own - sum(w for _, w in others)
    if available < low and essential:
        available = width - own - sum(w for key, w in others if key in essential)
    return max(low, min(high, available))



class FlexColumn:
    """A table's one column that takes the width the other columns leave.

    A pane calls ``fit(table)`` before it renders rows (it answers the column's key when the
    width changed, so the cells get re-measured) and, after the render was laid out,
    ``settled(table)``: False when the measured columns now call for another width, so the
    pane renders again. ``pending`` says whether that check is still owed.
    """

    def __init__(self, key: str, low: int, high: int, essential: Sequence[str] = (),
                 extra: int = 0) -> None:
        self.key = key
        """The flexible column's key."""
        self.low, self.high, self.essential, self.extra = low, high, tuple(essential), extra
        self.width = low
        """The width the cells are rendered at."""
        self.pending = True
        """True until the first render has been checked against the laid-out columns."""

    def _measure(self, table: DataTable[Any]) -> int:
        return flex_width(table, self.key, self.width, self.low, self.high, self.essential,
                          self.extra)

    def fit(self, table: DataTable[Any]) -> str | None:
        """Take the width ``table`` leaves; the column key when it changed, else None."""
        width = self._measure(table)
        changed, self.width = width != self.width, width
        if changed:
            self.pending = True
        return self.key if changed else None

    def settled(self, table: DataTable[Any]) -> bool:
        """After a render: True when the width still fits what the columns measure."""
        self.pending = False
        return self._measure(table) == self.width

class CellCache:
    """Cells built for the last ``show()``, by row id, reused while their inputs are equal.

    Most nodes and transfers look the same from one snapshot to the next; building their Rich
    Text again would be most of a pane's work. Holds only the ids of the last call.
    """

    def __init__(self) -> None:
        self._cells: dict[str, tuple[Any, Cells]] = {}
        self._next: dict[str, tuple[Any, Cells]] = {}

    def cells(self, key: str, inputs: Any, build: Callable[[], Cells]) -> Cells:
        """The cells for ``key``: the last ones when ``inputs`` equal the last inputs."""
        hit = self._cells.get(key)
        cells = hit[1] if hit is not None and hit[0] == inputs else build()
        self._next[key] = (inputs, cells)
        return cells

    def done(self) -> None:
        """End a ``show()``: forget the ids it did not ask for."""
        self._cells, self._next = self._next, {}

    def clear(self) -> None:
        """Forget everything (the styles changed)."""
        self._cells = {}
        self._next = {}


def set_border_title(widget: Widget, title: str) -> None:
    """Set ``widget``'s border title only when it changes (each set repaints the widget)."""
    if widget.border_title != title:
        widget.border_title = title
