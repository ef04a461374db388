"""The events pane: the cluster-wide event stream, newest at the bottom, filterable.

Each line reads ``HH:MM:SS node TYPE text``, the text coloured by severity. The pane keeps
the last ``keep`` events (5000 by default) and draws only the lines in view (Textual's Line
API), so a thousand events a second cost an append each.

Follow mode: while the view is at the bottom it stays there as events arrive. Once the
operator scrolls up the view does not move: the lines under their eyes stay put, even while
the oldest events are dropped from the top (press ``end`` to follow again).

Filter syntax (``set_filter``; the ``/`` box): space-separated terms, every term must match.

    type:X      the event type contains X (case-insensitive): ``type:sync``
    node:X      the event is about node X (emitter, source, target, ...): ``node:gpu-1``
    sev:X       severity X or worse: ``sev:warning`` (warnings and errors), ``sev:error``
    word        the type contains it, it names a node of the event, or the text contains it
                (case-insensitive)
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ringsync_tui.format import clock
from ringsync_tui.model import EventRow
from ringsync_tui.widgets._styles import ComponentStyles

SEVERITIES = ("info", "warning", "error")
"""Severities, mildest first."""
MAX_NODE_WIDTH = 16
"""The node column grows to the longest node name up to this many cells."""
MAX_TYPE_WIDTH = 24
"""The type column grows to the longest type up to this many cells."""

_control = re.compile(r"[\x00-\x1f\x7f]").sub


def _severity_rank(name: str) -> int:
    try:
        return SEVERITIES.index(name)
    except ValueError:
        return 0


@dataclass(frozen=True)
class EventQuery:
    """A parsed filter (see the module docstring); the empty query matches everything."""

    text: str = ""
    """The filter as typed."""
    tests: tuple[Callable[[EventRow], bool], ...] = ()

    @classmethod
    def parse(cls, text: str) -> EventQuery:
        tests: list[Callable[[EventRow], bool]] = []
        for term in text.split():
            key, sep, value = term.partition(":")
            key = key.lower()
            if sep and key in ("type", "node", "sev"):
                if not value:
                    continue  # still being typed
                if key == "type":
                    tests.append(lambda row, v=value.lower(): v in row.type.lower())
                elif key == "node":
                    tests.append(lambda row, v=value: v in row.subjects)
                else:
                    level = next((s for s in SEVERITIES if s.startswith(value.lower())), None)
                    if level is None:
                        tests.append(lambda row, v=value.lower(): row.severity.lower() == v)
                    else:
                        rank = SEVERITIES.index(level)
                        tests.append(lambda row, r=rank: _severity_rank(row.severity) >= r)
            else:
                word = term.lower()
                tests.append(lambda row, w=word, t=term: (
                    w in row.type.lower() or t in row.subjects or w in row.text.lower()))
        return cls(text, tuple(tests))

    def matches(self, row: EventRow) -> bool:
        """Whether ``row`` passes every term."""
        return all(test(row) for test in self.tests)


class EventsPane(ComponentStyles, ScrollView, can_focus=True):
    """The event stream, drawn line by line from a bounded buffer."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "events-pane--time", "events-pane--node", "events-pane--type",
        "events-pane--info", "events-pane--warning", "events-pane--error",
    }
    """
    | Class | Description |
    | :- | :- |
    | `events-pane--time` | The clock time. |
    | `events-pane--node` | The emitting node. |
    | `events-pane--type` | The event type. |
    | `events-pane--info` | The text of an info event. |
    | `events-pane--warning` | The text of a warning. |
    | `events-pane--error` | The text of an error. |
    """

    def __init__(self, keep: int = 5000, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.keep = keep
        """Events kept (the oldest are dropped beyond it)."""
        self._events: deque[EventRow] = deque()
        self._query = EventQuery()
        # The rows that pass the filter are _shown[_head:]; _first is the absolute number of
        # _shown[_head] since the filter was set, the key of the line cache.
        self._shown: list[EventRow] = []
        self._head = 0
        self._first = 0
        self._node_width = 4
        self._type_width = 4
        self._text_width = 0
        self._follow = True
        self._line_cache: LRUCache[int, Strip] = LRUCache(1024)
        self._update_title()

    # -- data down --------------------------------------------------------------------------
    @property
    def filter_text(self) -> str:
        """The filter in force, as typed ("" for none)."""
        return self._query.text

    @property
    def event_count(self) -> int:
        """Events held (at most ``keep``)."""
        return len(self._events)

    @property
    def line_count(self) -> int:
        """Events that pass the filter (the lines of the view)."""
        return len(self._shown) - self._head

    def visible_rows(self) -> Iterator[EventRow]:
        """The events that pass the filter, oldest first."""
        return iter(self._shown[self._head:])

    def rows_in_view(self) -> list[EventRow]:
        """The events on screen now, top to bottom."""
        top = self._head + self.scroll_offset.y
        return self._shown[top:top + self.scrollable_content_region.height]

    def add(self, rows: Iterable[EventRow]) -> None:
        """Append ``rows`` (oldest first) and drop the oldest events beyond ``keep``."""
        at_bottom = self._at_bottom()
        matches = self._query.matches
        shown = self._shown
        widths_before = (self._node_width, self._type_width)
        appended = 0
        for row in rows:
            self._events.append(row)
            if matches(row):
                shown.append(row)
                appended += 1
                self._measure(row)
        if not appended and len(self._events) <= self.keep:
            self._update_title()
            return
        trimmed = 0
        events_, keep = self._events, max(0, self.keep)
        while len(events_) > keep:
            old = events_.popleft()
            if self._head < len(shown) and shown[self._head] is old:
                self._head += 1
                trimmed += 1
        self._first += trimmed
        if self._head > 1024 and self._head * 2 > len(shown):
            del shown[:self._head]
            self._head = 0
        if (self._node_width, self._type_width) != widths_before:
            self._line_cache.clear()
        self._update_virtual_size()
        if at_bottom:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif trimmed:
            # Keep the same events under the operator's eyes.
            self.scroll_to(y=max(0.0, self.scroll_y - trimmed), animate=False, immediate=True,
                           force=True)
        self.refresh()
        self._update_title()

    def set_filter(self, text: str) -> None:
        """Show only the events that match ``text`` (see the module docstring)."""
        if text == self._query.text:
            return
        self._query = query = EventQuery.parse(text)
        self._shown = [row for row in self._events if query.matches(row)]
        self._head = 0
        self._first = 0
        self._text_width = 0
        for row in self._shown:
            self._measure(row)
        self._line_cache.clear()
        self._update_virtual_size()
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.refresh()
        self._update_title()

    def clear(self) -> None:
        """Drop every event."""
        self._events.clear()
        self._shown = []
        self._head = self._first = self._text_width = 0
        self._line_cache.clear()
        self._update_virtual_size()
        self.refresh()
        self._update_title()

    # -- internals --------------------------------------------------------------------------
    def _measure(self, row: EventRow) -> None:
        if len(row.node) > self._node_width:
            self._node_width = min(MAX_NODE_WIDTH, len(row.node))
        if len(row.type) > self._type_width:
            self._type_width = min(MAX_TYPE_WIDTH, len(row.type))
        if len(row.text) > self._text_width:
            self._text_width = len(row.text)

    def _line_width(self) -> int:
        return 8 + 1 + self._node_width + 1 + self._type_width + 1 + self._text_width

    def _update_virtual_size(self) -> None:
        self.virtual_size = Size(self._line_width(), self.line_count)

    def _at_bottom(self) -> bool:
        """Whether new events should scroll the view: it was left at the newest line.

        Kept as state (``watch_scroll_y``), not read off the position: a layout change such
        as a long line bringing the horizontal scrollbar moves the bottom away from a view
        that did not move, and that view must go on following."""
        return self._follow and not self.is_vertical_scrollbar_grabbed

    def _update_title(self) -> None:
        total = len(self._events)
        if self._query.tests:
            self.border_title = (f"Events · {self.line_count:,} of {total:,}"
                                 f" · filter: {self._query.text}")
        else:
            self.border_title = f"Events · {total:,}"

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = round(new_value) >= self.max_scroll_y

    def on_resize(self, _event: events.Resize) -> None:
        if self._follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line_cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not 0 <= index < self.line_count:
            return Strip.blank(width, base)
        key = self._first + index
        strip = self._line_cache.get(key)
        if strip is None:
            strip = self._line_cache[key] = self._render_event(self._shown[self._head + index],
                                                               base)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _render_event(self, row: EventRow, base: Style) -> Strip:
        style = self.component_style
        node = row.node[:self._node_width].ljust(self._node_width)
        kind = row.type[:self._type_width].ljust(self._type_width)
        severity = row.severity if row.severity in SEVERITIES else "info"
        text = _control(" ", row.text)
        space = Segment(" ", base)
        segments = [
            Segment(clock(row.ts), base + style("events-pane--time")), space,
            Segment(node, base + style("events-pane--node")), space,
            Segment(kind, base + style("events-pane--type")), space,
            Segment(text, base + style(f"events-pane--{severity}")),
        ]
        return Strip(segments)
