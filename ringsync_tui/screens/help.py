"""HelpScreen: the dashboard's keys, the event filter syntax, mouse and command palette."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Static

from ringsync_tui.widgets._styles import ComponentStyles

FILTER_SYNTAX: tuple[tuple[str, str], ...] = (
    ("type:X", "the event type contains X (case-insensitive), e.g. type:sync"),
    ("node:X", "the event is about node X (emitter, source or target), e.g. node:gpu-1"),
    ("sev:X", "severity X or worse: sev:warning (warnings and errors), sev:error"),
    ("word", "the type contains it, it names a node of the event, or the text contains it"),
)
"""The events filter's terms (space-separated; every term must match)."""
MOUSE = ("Mouse: click a node to select it, click it again to open it; the wheel scrolls the"
         " pane under the pointer. ctrl+p opens the command palette (every action, searchable).")
"""The line about the mouse and the command palette."""


class HelpScreen(ComponentStyles, ModalScreen[None]):
    """A modal list of the keys the app gives it, plus the filter syntax."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=True),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]
    """
    | Key(s) | Description |
    | :- | :- |
    | escape, ?, q | Close the help. |
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"help-screen--key", "help-screen--heading"}
    """
    | Class | Description |
    | :- | :- |
    | `help-screen--key` | A key, or a filter term. |
    | `help-screen--heading` | The section headings. |
    """

    def __init__(self, keys: list[tuple[str, str]], *, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.keys = list(keys)
        """(key, description) pairs, in the order shown."""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Static(id="help-keys", markup=False)
            yield Static(id="help-filter", markup=False)
            yield Static(MOUSE, id="help-mouse", markup=False)

    def on_mount(self) -> None:
        self.query_one("#help-dialog").border_title = "ringsync · help"
        self.query_one("#help-keys", Static).update(self._table("Keys", [
            (format_key(key), text) for key, text in self.keys]))
        self.query_one("#help-filter", Static).update(self._table(
            "Event filter (/): space-separated terms, all must match", list(FILTER_SYNTAX)))

    def _table(self, heading: str, rows: list[tuple[str, str]]) -> Group:
        """A heading over a two-column grid (descriptions wrap under themselves)."""
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(style=self.component_style("help-screen--key"), no_wrap=True)
        grid.add_column(ratio=1)
        for key, description in rows:
            grid.add_row(key, description)
        return Group(Text(heading, self.component_style("help-screen--heading")), grid)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
