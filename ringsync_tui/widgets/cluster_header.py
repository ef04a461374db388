"""The header line: the cluster at a glance, the selection the actions apply to, the time.

    ringsync · coordinator coord · 6 nodes: 4 up · 1 suspect · 1 down · 3 transfers
      · ALL SYNC PAUSED · selected: gpu-1 · 14:03:22

(one line; on a narrow terminal a shorter form of the same facts).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

from ringsync_tui.format import clock
from ringsync_tui.model import ClusterSnapshot
from ringsync_tui.widgets._styles import ComponentStyles


class ClusterHeader(ComponentStyles, Static):
    """One line about the whole cluster."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "cluster-header--title", "cluster-header--up", "cluster-header--suspect",
        "cluster-header--down", "cluster-header--paused", "cluster-header--some-paused",
        "cluster-header--selected", "cluster-header--muted",
    }
    """
    | Class | Description |
    | :- | :- |
    | `cluster-header--title` | "ringsync". |
    | `cluster-header--up`, `--suspect`, `--down` | Node counts (muted when zero). |
    | `cluster-header--paused` | The ALL SYNC PAUSED marker (meant to be loud). |
    | `cluster-header--some-paused` | "N paused" when some nodes are paused. |
    | `cluster-header--selected` | The selected node. |
    | `cluster-header--muted` | Separators, zero counts, "none (cluster)". |
    """

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__("ringsync", name=name, id=id, classes=classes, markup=False)
        self.snapshot: ClusterSnapshot | None = None
        """The snapshot shown last."""
        self.selected: str | None = None
        """The selected node shown last (None: the whole cluster)."""
        self.now: float = 0.0
        """The time shown last (the source's clock)."""
        self._shown: Text | None = None

    def show(self, snapshot: ClusterSnapshot, selected: str | None, now: float) -> None:
        """Show ``snapshot``'s counts, the ``selected`` node and the time ``now``."""
        self.snapshot, self.selected, self.now = snapshot, selected, now
        line = self.line(self.size.width or 10_000)
        if line != self._shown:  # an update repaints, even with the same text
            self._shown = line
            self.update(line, layout=False)

    def line(self, width: int) -> Text:
        """The header as Text: the longest of its forms that fits ``width`` cells.

        Shorter forms drop labels and zero counts first; the paused marker, the selection and
        the time stay in every form.
        """
        text = self._line(0)
        for level in (1, 2):
            if text.cell_len <= width:
                break
            text = self._line(level)
        return text

    def _line(self, level: int) -> Text:
        """Level 0: the full line; 1: fewer words; 2: no title, zero counts dropped."""
        style = self.component_style
        muted = style("cluster-header--muted")
        sep = (" · ", muted)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        snapshot = self.snapshot
        if snapshot is None or level < 2:
            text.append("ringsync", style("cluster-header--title"))
        if snapshot is None:
            return text
        counts = snapshot.counts()
        if level < 2:
            text.append_tokens([sep])
        text.append_tokens([("coordinator " if level == 0 else "", muted),
                            (snapshot.coordinator, ""), sep])
        if level < 2:
            text.append(f"{len(snapshot.nodes)} nodes" + (":" if level == 0 else ""))
        first = True
        for state in ("up", "suspect", "down", "unknown"):
            if not counts[state] and (state == "unknown" or level == 2):
                continue
            count_style = (style(f"cluster-header--{state}") if counts[state]
                           and state != "unknown" else muted)
            if level == 0 and not first:
                text.append(" · ", muted)
            elif level < 2 or not first:
                text.append(" ")
            first = False
            text.append(f"{counts[state]} {state}", count_style)
        text.append_tokens([sep, (f"{counts['transfers']} "
                                  + ("transfers" if level < 2 else "xfer"), "")])
        if snapshot.all_paused:
            marker = " ALL SYNC PAUSED " if level < 2 else " ALL PAUSED "
            text.append_tokens([sep, (marker, style("cluster-header--paused"))])
        else:
            paused = sum(1 for n in snapshot.nodes if n.paused)
            if paused:
                text.append_tokens([sep, (f"{paused} paused",
                                          style("cluster-header--some-paused"))])
        text.append_tokens([sep, ("selected: " if level == 0 else "sel: ", muted)])
        if self.selected is None:
            text.append("none (cluster)" if level < 2 else "none", muted)
        else:
            text.append(self.selected, style("cluster-header--selected"))
        text.append_tokens([sep, (clock(self.now), "")])
        return text

    def on_resize(self, event: events.Resize) -> None:
        if self.snapshot is not None:
            self._shown = self.line(event.size.width)
            self.update(self._shown, layout=False)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.snapshot is not None:
            self._shown = self.line(self.size.width or 10_000)
            self.update(self._shown, layout=False)
