"""The event filter box: what the operator types filters the events pane as they type.

Hidden until the app shows it (add the class ``-open``, or set ``display``); the syntax is the
events pane's (``ringsync_tui.widgets.events_pane``).
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input

PLACEHOLDER = "filter events: type:SYNC node:gpu-1 sev:warning word … (enter: keep, esc: close)"
"""What the empty box says."""


class EventFilter(Input):
    """A one-line filter for the events pane."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close filter", show=False),
    ]
    """
    | Key(s) | Description |
    | :- | :- |
    | escape | Close the box (posts `EventFilter.Closed`; the filter stays). |
    """

    class Applied(Message):
        """The filter text changed or was submitted."""

        def __init__(self, text: str, box: EventFilter | None = None) -> None:
            super().__init__()
            self.text = text
            """The filter as typed."""
            self.box = box
            """The filter box."""

        @property
        def control(self) -> EventFilter | None:
            return self.box

    class Closed(Message):
        """The operator closed the box (escape)."""

        def __init__(self, box: EventFilter | None = None) -> None:
            super().__init__()
            self.box = box
            """The filter box."""

        @property
        def control(self) -> EventFilter | None:
            return self.box

    def __init__(self, value: str = "", *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(value, placeholder=PLACEHOLDER, name=name, id=id, classes=classes)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input is self:
            self.post_message(self.Applied(event.value, self))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input is self:
            self.post_message(self.Applied(event.value, self))

    def action_close(self) -> None:
        """Tell the app to close the box."""
        self.post_message(self.Closed(self))
