"""The dashboard's widgets and screens, each in a tiny app fed hand-made model values.

No engine and no network: the widgets only ever see ``ringsync_tui.model`` values, and the
detail screen gets a small fake ClusterSource defined here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable, Static

from engine.resources import styles_dir
from ringsync_tui.format import clock
from ringsync_tui.model import (ArtifactRow, BandwidthRow, ClusterSnapshot, EventRow,
                                NodeDetail, NodeRow, ScrubRow, Thresholds, TransferRow)
from ringsync_tui.screens.help import HelpScreen
from ringsync_tui.screens.node_detail import NodeDetailScreen
from ringsync_tui.snapshot import sorted_nodes
from ringsync_tui.source import ActionError, ClusterSource
from ringsync_tui.widgets import (BandwidthPane, ClusterHeader, DiskGauge, EventFilter,
                                  EventQuery, EventsPane, NodesPane, TransfersPane,
                                  render_gauge)

pytestmark = pytest.mark.timeout(60)

NOW = 1_800_000_000.0
GIB = 2**30
THRESHOLDS = Thresholds()
SIZE = (100, 30)


# -- hand-made values -------------------------------------------------------------------------
def node(name: str, state: str = "up", percent: float = 20.0, **kw: Any) -> NodeRow:
    total = 100 * GIB
    return NodeRow(name=name, role=kw.pop("role", "gpu"), provider=kw.pop("provider", "aws"),
                   state=state, used_bytes=int(total * percent / 100), total_bytes=total,
                   percent=percent, **kw)


def snapshot(nodes: list[NodeRow], live: tuple[TransferRow, ...] = (),
             recent: tuple[TransferRow, ...] = (),
             bandwidth: tuple[BandwidthRow, ...] = ()) -> ClusterSnapshot:
    return ClusterSnapshot(taken_at=NOW, coordinator="coord", thresholds=THRESHOLDS,
                           nodes=tuple(nodes), live=live, recent=recent, bandwidth=bandwidth)


def transfer(n: int, progress: float = 0.5, finished: float | None = None,
             error: str | None = None, artifact: str | None = None) -> TransferRow:
    return TransferRow(key=f"gpu-1:{n}", source="gpu-1", target="coord",
                       artifact=artifact or f"npz/hex8_2p/file_{n:03d}.npz", transport="http",
                       size=10 * 2**20, progress=progress, rate_bps=5e6, eta_seconds=3.0,
                       attempt=1, started=NOW - 10 + n, finished=finished, error=error)


def event(seq: int, type: str = "DATA_SYNC_COMPLETED", node: str = "gpu-1",
          severity: str = "info", text: str = "", subjects: tuple[str, ...] = ()) -> EventRow:
    return EventRow(node=node, seq=seq, ts=NOW + seq, type=type, severity=severity,
                    text=text or f"event {seq}", subjects=frozenset({node, *subjects}))


def route(node: str, host: str, current: float, limit: float = 100.0) -> BandwidthRow:
    return BandwidthRow(node=node, host=host, limit_mbps=limit, allocated_mbps=limit / 2,
                        current_mbps=current, active_transfers=1)


# -- the test app -----------------------------------------------------------------------------
class WidgetApp(App[None]):
    """Hosts the widgets under test with the dashboard's stylesheet; records their messages."""

    CSS_PATH = str(styles_dir() / "dashboard.tcss")

    def __init__(self, *widgets: Widget) -> None:
        super().__init__()
        self._widgets = widgets
        self.messages: list[tuple[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield from self._widgets

    def on_nodes_pane_selected(self, message: NodesPane.Selected) -> None:
        self.messages.append(("selected", message.node))

    def on_nodes_pane_opened(self, message: NodesPane.Opened) -> None:
        self.messages.append(("opened", message.node))

    def on_event_filter_applied(self, message: EventFilter.Applied) -> None:
        self.messages.append(("applied", message.text))

    def on_event_filter_closed(self, _message: EventFilter.Closed) -> None:
        self.messages.append(("closed", None))


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def plain(renderable: Any, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def style_at(text: Text, index: int) -> Style:
    style = Style()
    for span in text.spans:
        if span.start <= index < span.end:
            style += span.style if isinstance(span.style, Style) else Style.parse(span.style)
    return style


# -- disk gauge -------------------------------------------------------------------------------
STYLES = {"ok": Style(color="green"), "push": Style(color="yellow"),
          "urgent": Style(color="magenta"), "cleanup": Style(color="red"),
          "mark": Style(color="white"), "empty": Style(color="bright_black")}


def test_render_gauge_marks_the_thresholds_in_the_empty_and_the_filled_part() -> None:
    text = render_gauge(63, THRESHOLDS, 20, STYLES)
    # 20 cells: push (50) at cell 10, urgent (70) at 14, cleanup (75) at 15; 63 % fills 13.
    assert text.plain == "█" * 10 + "│" + "██" + "░" + "││" + "░" * 4 + "  63%"
    assert style_at(text, 0) == STYLES["push"]
    assert style_at(text, 10).bgcolor == STYLES["push"].color  # a mark inside the fill
    assert style_at(text, 10).color == STYLES["mark"].color
    assert style_at(text, 13) == STYLES["empty"]
    assert style_at(text, 14) == STYLES["mark"] and style_at(text, 15) == STYLES["mark"]
    assert style_at(text, 21) == STYLES["push"]  # the percent


@pytest.mark.parametrize("percent, band", [(10, "ok"), (50, "push"), (72, "urgent"),
                                           (75, "cleanup"), (100, "cleanup")])
def test_render_gauge_colours_the_fill_by_band(percent: float, band: str) -> None:
    text = render_gauge(percent, THRESHOLDS, 40, STYLES)
    assert len(text.plain) == 45
    assert style_at(text, 0) == STYLES[band]
    assert text.plain.count("█") + text.plain.count("│") >= round(percent * 40 / 100)


def test_render_gauge_follows_the_cluster_thresholds() -> None:
    text = render_gauge(0, Thresholds(push=20, urgent=40, cleanup=60), 10, STYLES)
    assert text.plain[:10] == "░░│░│░│░░░"


async def test_disk_gauge_widget_renders_with_its_component_classes() -> None:
    gauge = DiskGauge(80, THRESHOLDS)
    app = WidgetApp(gauge)
    async with app.run_test(size=(45, 5)):
        rendered = gauge.render()
        assert isinstance(rendered, Text) and rendered.plain.endswith(" 80%")
        assert len(rendered.plain) == 45
        cleanup = gauge.component_style("disk-gauge--cleanup")
        assert cleanup.color is not None and style_at(rendered, 0) == cleanup
        gauge.percent = 30
        assert style_at(gauge.render(), 0) == gauge.component_style("disk-gauge--ok")


# -- nodes pane -------------------------------------------------------------------------------
def cluster(**changes: NodeRow) -> list[NodeRow]:
    nodes = {"coord": node("coord", role="coordinator"), "gpu-1": node("gpu-1", percent=55),
             "gpu-2": node("gpu-2", "down", 30), "gpu-3": node("gpu-3", "suspect", 10),
             "gpu-4": node("gpu-4", percent=80, ephemeral=True),
             "cpu-1": node("cpu-1", percent=20, paused=True, role="cpu")}
    nodes.update(changes)
    return list(nodes.values())


async def test_nodes_pane_puts_trouble_on_top() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        await pilot.pause()
        assert pane.names == ["gpu-2", "gpu-3", "gpu-4", "gpu-1", "cpu-1", "coord"]
        assert pane.names == [n.name for n in sorted_nodes(snapshot(cluster()))]
        first = pane.get_row_at(0)
        assert first[0].plain == "gpu-2" and first[1].plain == "down"
        assert first[1].style == pane.component_style("nodes-pane--down")
        assert pane.get_row_at(2)[0].plain == "gpu-4 eph"  # ephemeral marked
        assert pane.get_row_at(4)[5].plain == "paused"
        assert pane.get_row_at(0)[2].plain.endswith(" 30%")  # the disk gauge
        assert app.messages == []
        pane.show(snapshot(cluster(**{"gpu-4": node("gpu-4", percent=80, ephemeral=True,
                                                     backpressure="disk")})))
        await pilot.pause()
        state = pane.get_row_at(2)[1]
        assert state.plain == "up bp:disk"  # it takes urgent syncs only


async def test_nodes_pane_selection_starts_empty_arrow_selects_escape_clears() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        pane.focus()
        await pilot.pause()
        assert pane.selected is None and not pane.show_cursor
        await pilot.press("enter")  # nothing selected: nothing to open
        await pilot.press("down")
        assert pane.selected == "gpu-2" and pane.show_cursor
        await pilot.press("down", "j")
        assert pane.selected == "gpu-4"
        await pilot.press("k")
        assert pane.selected == "gpu-3"
        await pilot.press("enter")
        await pilot.press("escape")
        await pilot.pause()
        assert pane.selected is None and not pane.show_cursor
        assert app.messages == [("selected", "gpu-2"), ("selected", "gpu-3"),
                                ("selected", "gpu-4"), ("selected", "gpu-3"),
                                ("opened", "gpu-3"), ("selected", None)]
        await pilot.press("escape")  # nothing selected: no message
        await pilot.pause()
        assert app.messages[-1] == ("selected", None) and len(app.messages) == 6


async def test_nodes_pane_click_selects_and_a_second_click_opens() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        await pilot.pause()
        # Border (1 line) and header (1 line) above the first row: row 2 is at y=4.
        await pilot.click(NodesPane, offset=(3, 4))
        await pilot.pause()
        assert pane.selected == pane.names[2] == "gpu-4"
        await pilot.click(NodesPane, offset=(3, 4))
        await pilot.pause()
        assert app.messages == [("selected", "gpu-4"), ("opened", "gpu-4")]


async def test_nodes_pane_keeps_the_cursor_on_the_selected_node_across_a_reorder() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        pane.focus()
        await pilot.press("down", "down", "down", "down")
        assert pane.selected == "gpu-1" and pane.cursor_row == 3
        # gpu-2 comes back and empties its disk, gpu-1 fills up: the rows reorder.
        pane.show(snapshot(cluster(**{"gpu-2": node("gpu-2", percent=5),
                                      "gpu-1": node("gpu-1", percent=90)})))
        await pilot.pause()
        assert pane.names == ["gpu-3", "gpu-1", "gpu-4", "cpu-1", "coord", "gpu-2"]
        assert pane.selected == "gpu-1" and pane.cursor_row == 1
        assert pane.node_at(pane.cursor_row) == "gpu-1"
        assert app.messages[-1] == ("selected", "gpu-1") and len(app.messages) == 4
        await pilot.press("down")
        assert pane.selected == "gpu-4"


async def test_nodes_pane_clears_the_selection_when_the_node_goes_away() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        pane.focus()
        await pilot.press("down")
        assert pane.selected == "gpu-2"
        pane.show(snapshot([n for n in cluster() if n.name != "gpu-2"]))
        await pilot.pause()
        assert pane.selected is None and not pane.show_cursor
        assert app.messages == [("selected", "gpu-2"), ("selected", None)]


async def test_nodes_pane_updates_cells_in_place() -> None:
    pane = NodesPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.show(snapshot(cluster()))
        await pilot.pause()
        calls: list[str] = []
        for name in ("add_row", "remove_row", "clear", "update_cell"):
            original = getattr(pane, name)
            setattr(pane, name, lambda *a, _o=original, _n=name, **k: (calls.append(_n),
                                                                       _o(*a, **k))[1])
        pane.show(snapshot(cluster()))  # nothing changed: nothing touched
        assert calls == []
        pane.show(snapshot(cluster(**{"gpu-4": node("gpu-4", percent=81, ephemeral=True)})))
        assert calls == ["update_cell", "update_cell"]  # its gauge and free space
        assert pane.get_row_at(2)[2].plain.endswith(" 81%")


# -- transfers pane ---------------------------------------------------------------------------
async def test_transfers_pane_updates_in_place_and_removes_finished_rows() -> None:
    pane = TransfersPane()
    app = WidgetApp(pane)
    long_name = "npz/hex8_2p/" + "deep/" * 20 + "the_file_name.npz"
    async with app.run_test(size=SIZE) as pilot:
        one, two = transfer(1, 0.25), transfer(2, 0.5, artifact=long_name)
        pane.show(snapshot(cluster(), live=(one, two)), NOW)
        await pilot.pause()
        live = pane.live_table
        assert [k.value for k in live.rows] == [one.key, two.key]
        assert live.get_row(one.key)[3].plain.endswith(" 25%")
        artifact = live.get_row(two.key)[1]
        assert artifact.startswith("…") and artifact.endswith("the_file_name.npz")
        calls: list[str] = []
        for name in ("add_row", "remove_row", "clear"):
            original = getattr(live, name)
            setattr(live, name, lambda *a, _o=original, _n=name, **k: (calls.append(_n),
                                                                       _o(*a, **k))[1])
        three = transfer(3, 0.0)
        done = transfer(2, 1.0, finished=NOW - 1)
        failed = transfer(4, 0.3, finished=NOW - 2, error="422 sha256 mismatch")
        pane.show(snapshot(cluster(), live=(transfer(1, 0.75), three),
                           recent=(done, failed)), NOW)
        await pilot.pause()
        assert calls == ["remove_row", "add_row"]  # one finished, one new; the rest in place
        assert [k.value for k in live.rows] == [one.key, three.key]
        assert live.get_row_index(one.key) == 0
        assert live.get_row(one.key)[3].plain.endswith(" 75%")
        recent = pane.recent_table
        assert recent.row_count == 2
        first, second = recent.get_row_at(0), recent.get_row_at(1)
        assert first[0] == clock(NOW - 1) and first[1] == "gpu-1 → coord"
        assert first[3].plain == "ok"
        assert first[3].style == pane.component_style("transfers-pane--ok")
        assert second[3].plain == "422 sha256 mismatch"
        assert second[3].style == pane.component_style("transfers-pane--error")
        assert second[3].style != first[3].style
        assert pane.border_title == "Transfers · 2 live · 2 recent"


async def test_transfers_pane_copes_with_200_live_transfers() -> None:
    pane = TransfersPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        batch = tuple(transfer(i, i / 200) for i in range(200))
        pane.show(snapshot(cluster(), live=batch), NOW)
        await pilot.pause()
        assert pane.live_table.row_count == 200
        moved = tuple(transfer(i, min(1.0, i / 200 + 0.01)) for i in range(5, 205))
        pane.show(snapshot(cluster(), live=moved), NOW)
        await pilot.pause()
        keys = [k.value for k in pane.live_table.rows]
        assert keys == [t.key for t in moved]


# -- bandwidth pane ---------------------------------------------------------------------------
async def test_bandwidth_history_is_bounded_and_vanished_routes_are_dropped() -> None:
    pane = BandwidthPane(history=5, forget_after=3)
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        for i in range(10):
            pane.show(snapshot(cluster(), bandwidth=(route("gpu-1", "coord", 10.0 * i),
                                                     route("gpu-2", "coord", 100.0))))
        await pilot.pause()
        assert list(pane.history["gpu-1->coord"]) == [50.0, 60.0, 70.0, 80.0, 90.0]
        assert pane.row_count == 2
        spark = pane.get_row("gpu-2->coord")[2].plain
        assert spark.endswith("█████") and set(spark) <= {" ", "█"}
        assert pane.get_row("gpu-1->coord")[0] == "gpu-1→coord"
        for _ in range(2):
            pane.show(snapshot(cluster(), bandwidth=(route("gpu-1", "coord", 1.0),)))
        await pilot.pause()
        assert pane.row_count == 1 and [k.value for k in pane.rows] == ["gpu-1->coord"]
        assert "gpu-2->coord" in pane.history  # missing twice: kept a little longer
        pane.show(snapshot(cluster(), bandwidth=(route("gpu-1", "coord", 1.0),)))
        assert set(pane.history) == {"gpu-1->coord"}
        assert len(pane.history["gpu-1->coord"]) == 5


# -- events pane ------------------------------------------------------------------------------
async def test_events_pane_is_bounded_by_keep() -> None:
    pane = EventsPane(keep=100)
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE):
        for start in range(0, 250, 50):
            pane.add(event(i) for i in range(start, start + 50))
        assert pane.event_count == 100 and pane.line_count == 100
        assert [r.seq for r in pane.visible_rows()] == list(range(150, 250))
        assert pane.border_title == "Events · 100"


async def test_events_pane_follows_the_bottom() -> None:
    pane = EventsPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add(event(i) for i in range(50))
        await pilot.pause()
        height = pane.scrollable_content_region.height
        assert pane.rows_in_view()[-1].seq == 49 and len(pane.rows_in_view()) == height
        pane.add([event(50), event(51)])
        await pilot.pause()
        assert pane.scroll_y == pane.max_scroll_y
        assert pane.rows_in_view()[-1].seq == 51


async def test_events_pane_keeps_following_when_a_long_line_brings_a_scrollbar() -> None:
    """A line wider than the pane adds a horizontal scrollbar, one row less for lines: the
    view, at the bottom until then, must stay at the bottom (CI at 80x24 saw it stick)."""
    pane = EventsPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add(event(i) for i in range(50))
        await pilot.pause()
        height = pane.scrollable_content_region.height
        pane.add([event(50, text="x" * 300)])
        await pilot.pause()
        assert pane.scrollable_content_region.height < height  # the scrollbar took a row
        pane.add([event(51), event(52)])
        await pilot.pause()
        assert pane.rows_in_view()[-1].seq == 52


async def test_events_pane_holds_still_when_scrolled_up() -> None:
    pane = EventsPane(keep=1000)
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add(event(i) for i in range(100))
        await pilot.pause()
        pane.scroll_to(y=40, animate=False, immediate=True)
        await pilot.pause()
        before = [r.seq for r in pane.rows_in_view()]
        assert before[0] == 40
        pane.add(event(i) for i in range(100, 150))
        await pilot.pause()
        assert [r.seq for r in pane.rows_in_view()] == before
        assert pane.scroll_y == 40


async def test_events_pane_holds_still_while_old_events_are_trimmed() -> None:
    pane = EventsPane(keep=100)
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add(event(i) for i in range(100))
        await pilot.pause()
        pane.scroll_to(y=50, animate=False, immediate=True)
        await pilot.pause()
        before = [r.seq for r in pane.rows_in_view()]
        assert before[0] == 50
        for start in range(100, 130, 10):  # 30 events: the 30 oldest go
            pane.add(event(i) for i in range(start, start + 10))
            await pilot.pause()
        assert pane.event_count == 100
        assert [r.seq for r in pane.rows_in_view()] == before
        assert pane.scroll_y == 20
        # Back at the bottom it follows again.
        pane.scroll_end(animate=False, immediate=True)
        pane.add([event(500)])
        await pilot.pause()
        assert pane.rows_in_view()[-1].seq == 500


def filter_rows() -> list[EventRow]:
    return [
        event(1, "DATA_SYNC_COMPLETED", "gpu-1", subjects=("coord",)),
        event(2, "DATA_SYNC_FAILED", "gpu-2", "error", "connection refused",
              subjects=("coord",)),
        event(3, "NODE_SUSPECT", "coord", "warning", "gpu-3 missed 2 checks",
              subjects=("gpu-3",)),
        event(4, "PRIORITY_SYNC_REQUESTED", "gpu-1"),
        event(5, "BACKPRESSURE_ACTIVATED", "gpu-10", "warning", "disk 80%"),
    ]


@pytest.mark.parametrize("text, seqs", [
    ("", [1, 2, 3, 4, 5]),
    ("type:sync", [1, 2, 4]),
    ("type:SYNC_F", [2]),
    ("node:gpu-3", [3]),
    ("node:coord", [1, 2, 3]),
    ("node:gpu-1", [1, 4]),  # exact: not gpu-10
    ("sev:warning", [2, 3, 5]),
    ("sev:error", [2]),
    ("sev:warn", [2, 3, 5]),
    ("gpu-3", [3]),  # a subject node (and in the text)
    ("refused", [2]),  # the text
    ("priority", [4]),  # the type
    ("type:sync sev:error", [2]),  # every term must match
    ("node:", [1, 2, 3, 4, 5]),  # a term being typed
])
def test_event_query(text: str, seqs: list[int]) -> None:
    query = EventQuery.parse(text)
    assert [r.seq for r in filter_rows() if query.matches(r)] == seqs


async def test_events_pane_filters_by_type_node_severity_and_word() -> None:
    pane = EventsPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add(filter_rows())
        pane.set_filter("node:gpu-3")
        assert pane.filter_text == "node:gpu-3"
        assert [r.seq for r in pane.visible_rows()] == [3]
        assert pane.border_title == "Events · 1 of 5 · filter: node:gpu-3"
        pane.add([event(6, "NODE_DOWN", "coord", "error", "gpu-3 is down", ("gpu-3",)),
                  event(7)])
        assert [r.seq for r in pane.visible_rows()] == [3, 6]
        pane.set_filter("sev:error")
        assert [r.seq for r in pane.visible_rows()] == [2, 6]
        pane.set_filter("")
        assert pane.line_count == 7 and pane.border_title == "Events · 7"
        await pilot.pause()


async def test_events_pane_line_format_and_colours() -> None:
    pane = EventsPane()
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        pane.add([event(1, "DATA_SYNC_FAILED", "gpu-2", "error", "refused\nagain")])
        await pilot.pause()
        strip = pane.render_line(0)
        line = strip.text.rstrip()
        assert line.startswith(f"{clock(NOW + 1)} gpu-2 DATA_SYNC_FAILED refused again")
        text_segment = next(s for s in strip if "refused" in s.text)
        type_segment = next(s for s in strip if "DATA_SYNC_FAILED" in s.text)
        error = pane.component_style("events-pane--error")
        assert text_segment.style.color == error.color
        assert type_segment.style.color == pane.component_style("events-pane--type").color
        assert type_segment.style.color != error.color


async def test_events_pane_stays_cheap_at_a_thousand_events_a_second() -> None:
    pane = EventsPane(keep=5000)
    app = WidgetApp(pane)
    async with app.run_test(size=SIZE) as pilot:
        batches = [[event(b * 500 + i) for i in range(500)] for b in range(20)]
        started = time.perf_counter()
        for batch in batches:  # 10 s of events at 1000/s
            pane.add(batch)
        assert time.perf_counter() - started < 1.0  # measured: about 0.03 s
        await pilot.pause()
        assert pane.event_count == 5000 and pane.line_count == 5000
        assert pane.rows_in_view()[-1].seq == 9999


# -- event filter -----------------------------------------------------------------------------
async def test_event_filter_applies_as_typed_and_closes_on_escape() -> None:
    box = EventFilter()
    app = WidgetApp(box)
    async with app.run_test(size=SIZE) as pilot:
        assert box.styles.display == "none"  # hidden until the app opens it
        box.add_class("-open")
        await pilot.pause()
        assert box.styles.display == "block"
        assert "type:" in box.placeholder and "node:" in box.placeholder
        box.focus()
        await pilot.press(*"sev:e")
        await pilot.press("enter", "escape")
        await pilot.pause()
        applied = [text for kind, text in app.messages if kind == "applied"]
        assert applied == ["s", "se", "sev", "sev:", "sev:e", "sev:e"]
        assert app.messages[-1] == ("closed", None)


# -- header -----------------------------------------------------------------------------------
async def test_cluster_header_counts_pause_and_selection() -> None:
    header = ClusterHeader()
    app = WidgetApp(header)
    async with app.run_test(size=(160, 5)) as pilot:
        header.show(snapshot(cluster()), None, NOW)
        await pilot.pause()
        line = header.line(160)
        assert line.plain == ("ringsync · coordinator coord · 6 nodes: 4 up · 1 suspect"
                              f" · 1 down · 0 transfers · 1 paused · selected: none (cluster)"
                              f" · {clock(NOW)}")
        paused = [n.__class__(**{**n.__dict__, "paused": True}) for n in cluster()]
        header.show(snapshot(paused), "gpu-1", NOW)
        line = header.line(160)
        assert "ALL SYNC PAUSED" in line.plain and "selected: gpu-1" in line.plain
        start = line.plain.index("ALL SYNC PAUSED")
        loud = style_at(line, start)
        assert loud == header.component_style("cluster-header--paused")
        assert loud.bgcolor is not None and loud.bold
        short = header.line(80)
        assert short.cell_len <= 80
        assert "ALL PAUSED" in short.plain and clock(NOW) in short.plain
        assert "sel: gpu-1" in short.plain
        assert "PAUSED" in str(header.render())


# -- help screen ------------------------------------------------------------------------------
async def test_help_screen_lists_the_keys_and_closes() -> None:
    keys = [("p", "priority sync of the selected node"), ("question_mark", "this help"),
            ("space", "pause everything")]
    app = WidgetApp()
    async with app.run_test(size=(100, 40)) as pilot:
        for close in ("escape", "question_mark", "q"):
            await app.push_screen(HelpScreen(keys))
            await pilot.pause()
            shown = plain(app.screen.query_one("#help-keys", Static).content, 96)
            assert "priority sync of the selected node" in shown
            assert "this help" in shown and "pause everything" in shown
            assert any(line.strip().startswith("?") for line in shown.splitlines())
            syntax = plain(app.screen.query_one("#help-filter", Static).content, 96)
            assert "type:X" in syntax and "node:X" in syntax and "sev:X" in syntax
            assert "ctrl+p" in str(app.screen.query_one("#help-mouse", Static).content)
            await pilot.press(close)
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen), close


# -- node detail screen -----------------------------------------------------------------------
class FakeSource(ClusterSource):
    """Serves one node's detail (or fails) and a snapshot for the thresholds."""

    def __init__(self, detail: NodeDetail | None = None, error: str | None = None) -> None:
        self.detail = detail
        self.error = error
        self.calls = 0

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(taken_at=NOW, coordinator="coord",
                               thresholds=Thresholds(min_copies=2), nodes=())

    def recent_events(self) -> list[EventRow]:
        return []

    def listen(self, listener: Any) -> Callable[[], None]:
        return lambda: None

    async def priority_sync(self, node: str) -> str:
        return ""

    async def set_paused(self, node: str | None, paused: bool) -> str:
        return ""

    async def recover(self, node: str | None) -> str:
        return ""

    async def verify(self, node: str) -> str:
        return ""

    async def node_detail(self, node: str) -> NodeDetail:
        self.calls += 1
        if self.error:
            raise ActionError(self.error)
        assert self.detail is not None
        return self.detail


def artifact(name: str, holders: tuple[str, ...]) -> ArtifactRow:
    return ArtifactRow(key=f"npz/hex8_2p/{name}", config_key="hex8_2p", size=5 * 2**20,
                       sha256="ab" * 32, mtime=NOW, origin="gpu-1", holders=holders)


async def test_node_detail_screen_shows_the_node() -> None:
    detail = NodeDetail(
        node=node("gpu-1", percent=63, pending=3, paused=True, strategy="push_from_generator",
                  backpressure="queue", open_breakers=("coord",),
                  scrub=ScrubRow(passes=2, position=5, copies=9, rotted=1,
                                 rate_bytes_per_second=4 * 2**20)),
        artifacts=(artifact("safe.npz", ("coord", "cpu-1", "gpu-1")),
                   artifact("thin.npz", ("coord", "gpu-1")),
                   artifact("alone.npz", ("gpu-1",))),
        total_artifacts=10,
        transfers=(transfer(1, 0.4), transfer(2, 1.0, finished=NOW - 5, error="refused")))
    app = WidgetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = NodeDetailScreen("gpu-1", FakeSource(detail))
        await app.push_screen(screen)
        await until(lambda: screen.detail is not None, what="the detail")
        await pilot.pause()
        assert screen.node == "gpu-1" and screen.error is None
        title = str(screen.query_one("#detail-title", Static).content)
        assert "gpu-1" in title and "paused" in title and "3 pending" in title
        assert "push_from_generator" in title
        assert "backpressure (queue): urgent syncs only" in title
        assert "breaker open to coord" in title
        assert "scrub pass 3 5/9 at 4.0 MiB/s" in title
        assert "1 rotted copies quarantined" in title
        gauge = screen.query_one(DiskGauge)
        assert gauge.percent == 63 and gauge.render().plain.endswith(" 63%")
        assert "37.0 GiB free" in str(screen.query_one("#detail-space", Static).content)
        artifacts = screen.query_one("#detail-artifacts", DataTable)
        assert artifacts.border_title == "Artifacts · 3 of 10"
        copies = [artifacts.get_row_at(i)[2] for i in range(3)]
        assert [c.plain for c in copies] == ["2/2 ✓", "1/2 !", "0/2 !"]
        assert copies[0].style == screen.component_style("node-detail--ok")
        assert copies[2].style == screen.component_style("node-detail--error")
        assert artifacts.get_row_at(0)[3].plain == "coord, cpu-1, gpu-1"
        assert artifacts.get_row_at(0)[6].plain == "abababababab"
        transfers = screen.query_one("#detail-transfers", DataTable)
        assert transfers.row_count == 2
        assert transfers.get_row_at(0)[0] == "gpu-1 → coord"
        assert transfers.get_row_at(0)[2].plain.endswith(" 40%")
        assert transfers.get_row_at(1)[2].plain == "failed"
        assert transfers.get_row_at(1)[4].plain == "refused"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, NodeDetailScreen)


async def test_node_detail_screen_shows_a_failed_load() -> None:
    source = FakeSource(error="unknown node 'gpu-9'")
    app = WidgetApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = NodeDetailScreen("gpu-9", source)
        await app.push_screen(screen)
        await until(lambda: screen.error is not None, what="the error")
        await pilot.pause()
        line = screen.query_one("#detail-error", Static)
        assert line.display and "unknown node 'gpu-9'" in str(line.content)
        assert any("unknown node" in str(n.message) for n in app._notifications)
        screen.load()  # the same failure again: shown, not notified twice
        await until(lambda: source.calls >= 2, what="a second load")
        await pilot.pause()
        assert sum("unknown node" in str(n.message) for n in app._notifications) == 1
        await pilot.press("backspace")
        await pilot.pause()
        assert not isinstance(app.screen, NodeDetailScreen)
