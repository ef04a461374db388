"""Disk usage as a bar with the cluster's pressure thresholds marked on it.

``render_gauge`` draws the bar as Rich Text (the nodes pane puts it in a table cell);
``DiskGauge`` is the same bar as a widget (the node detail screen).

    ██████████│██░││░░░░  63%        (20 cells: marks at 50, 70 and 75 %)

The fill takes the colour of the band the usage is in (ok, push, urgent, cleanup); the push,
urgent and cleanup thresholds are marked in the empty part and, drawn over the fill's colour,
in the filled part too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual.widget import Widget

from ringsync_tui.model import Thresholds
from ringsync_tui.widgets._styles import ComponentStyles

FILL = "█"
"""A used cell."""
EMPTY = "░"
"""A free cell."""
MARK = "│"
"""A threshold's cell."""
BANDS = ("ok", "push", "urgent", "cleanup")
"""The bands a usage falls in (``Thresholds.band``), lowest first."""
LABEL_WIDTH = 5
"""Cells the percent after the bar takes (`` 100%``)."""


def threshold_cells(thresholds: Thresholds, width: int) -> set[int]:
    """The cells of a ``width``-cell bar that mark the push, urgent and cleanup thresholds.

    Cell ``i`` covers ``[i, i+1) * 100 / width`` percent; a threshold is marked in the cell it
    starts (so a bar filled exactly to a threshold ends right before its mark).
    """
    if width <= 0:
        return set()
    return {min(width - 1, max(0, int(value * width / 100 + 1e-9)))
            for value in (thresholds.push, thresholds.urgent, thresholds.cleanup)}


def render_gauge(percent: float, thresholds: Thresholds, width: int,
                 styles: Mapping[str, Style]) -> Text:
    """A bar ``width`` cells wide filled to ``percent``, then the percent (5 cells).

    ``styles`` maps each band (``ok``, ``push``, ``urgent``, ``cleanup``) to the fill's style,
    ``mark`` to the threshold marks' and ``empty`` to the free cells'. A mark inside the fill
    is drawn in the mark's colour on the band's colour.
    """
    width = max(0, width)
    band = thresholds.band(percent)
    fill_style = styles.get(band, Style())
    mark_style = styles.get("mark", Style())
    empty_style = styles.get("empty", Style())
    filled_mark_style = Style(color=mark_style.color, bgcolor=fill_style.color, bold=True)
    filled = min(width, max(0, int(percent * width / 100 + 0.5)))
    marks = threshold_cells(thresholds, width)
    text = Text(no_wrap=True, overflow="crop", end="")
    run: list[str] = []
    run_style: Style | None = None
    for cell in range(width):
        if cell < filled:
            char, style = (MARK, filled_mark_style) if cell in marks else (FILL, fill_style)
        else:
            char, style = (MARK, mark_style) if cell in marks else (EMPTY, empty_style)
        if style is not run_style and run:
            text.append("".join(run), run_style)
            run = []
        run_style = style
        run.append(char)
    if run:
        text.append("".join(run), run_style)
    text.append(f" {min(999, max(0, round(percent))):>3d}%", fill_style)
    return text


class DiskGauge(ComponentStyles, Widget):
    """One node's disk usage as a gauge filling the widget's width (one line)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "disk-gauge--ok", "disk-gauge--push", "disk-gauge--urgent", "disk-gauge--cleanup",
        "disk-gauge--mark", "disk-gauge--empty",
    }
    """
    | Class | Description |
    | :- | :- |
    | `disk-gauge--ok` | The fill below the push threshold. |
    | `disk-gauge--push` | The fill from the push threshold. |
    | `disk-gauge--urgent` | The fill from the urgent threshold. |
    | `disk-gauge--cleanup` | The fill from the cleanup threshold. |
    | `disk-gauge--mark` | The threshold marks. |
    | `disk-gauge--empty` | The free part of the bar. |
    """

    percent: reactive[float] = reactive(0.0)
    """Disk usage in percent of the node's capacity."""
    thresholds: reactive[Thresholds] = reactive(Thresholds)
    """The cluster's thresholds, marked on the bar."""

    def __init__(self, percent: float = 0.0, thresholds: Thresholds | None = None, *,
                 name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.set_reactive(DiskGauge.percent, percent)
        self.set_reactive(DiskGauge.thresholds, thresholds or Thresholds())

    def gauge_styles(self) -> dict[str, Style]:
        """The styles ``render_gauge`` takes, from this widget's component classes."""
        return {part: self.component_style(f"disk-gauge--{part}")
                for part in (*BANDS, "mark", "empty")}

    def render(self) -> RenderResult:
        width = max(1, self.size.width - LABEL_WIDTH)
        return render_gauge(self.percent, self.thresholds, width, self.gauge_styles())
