"""Rich styles from a widget's component classes, for colouring Rich Text cells.

Textual's partial component style loses colours with an alpha (``$text-muted``, ``$error 70%``)
and the full one carries the widget's background, which would paint over a DataTable's cursor
and zebra stripes. ``cell_style`` takes the full, blended colours and keeps the background only
when the component class sets one itself. The cache is per widget and dropped whenever its
styles change (a theme switch), so dark and light themes both work.
"""

from __future__ import annotations

from rich.style import Style
from textual.widget import Widget


def cell_style(widget: Widget, name: str) -> Style:
    """The Rich style of ``widget``'s component class ``name``, without an inherited background."""
    full = widget.get_component_rich_style(name)
    own = widget.get_component_rich_style(name, partial=True)
    colours = Style(color=full.color if own.color is not None else None,
                    bgcolor=full.bgcolor if own.bgcolor is not None else None)
    return colours + own.without_color


class ComponentStyles:
    """Mixin for widgets that colour Rich Text with their component classes."""

    _style_cache: dict[str, Style]
    style_generation: int = 0
    """Bumped whenever the widget's styles change (cached cells are stale then)."""

    def component_style(self, name: str) -> Style:
        """``cell_style(self, name)``, cached until the widget's styles change."""
        try:
            cache = self._style_cache
        except AttributeError:
            cache = self._style_cache = {}
        style = cache.get(name)
        if style is None:
            style = cache[name] = cell_style(self, name)  # type: ignore[arg-type]
        return style

    def notify_style_update(self) -> None:
        self._style_cache = {}
        self.style_generation += 1
        super().notify_style_update()  # type: ignore[misc]
