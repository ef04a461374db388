"""Screenshots of the main, node detail and help screens at fixed terminal sizes.

The data is a frozen SyntheticSource: fixed names, rates, sizes and clock (and the clock is
printed in UTC), so the SVGs are the same on every run. Update them after a deliberate
visual change with ``make test PYTEST_ARGS="tests/tui/test_snapshots.py --snapshot-update"``
and look at the report.
"""

from __future__ import annotations

import time

import pytest

from ringsync_tui.app import RingsyncApp
from ringsync_tui.synthetic import SyntheticSource
from ringsync_tui.widgets import NodesPane

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def frozen_app() -> RingsyncApp:
    return RingsyncApp(SyntheticSource.frozen(), refresh_seconds=3600)


async def settle(pilot) -> None:
    """Wait for the first poll to reach the screen."""
    app = pilot.app
    for _ in range(100):
        if app.snapshot is not None:
            break
        await pilot.pause(0.02)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (140, 42)])
def test_main_screen(snap_compare, size) -> None:
    assert snap_compare(frozen_app(), terminal_size=size, run_before=settle)


def test_node_detail_screen(snap_compare) -> None:
    async def open_detail(pilot) -> None:
        await settle(pilot)
        pilot.app.main.query_one(NodesPane).focus()
        await pilot.press("down", "enter")
        for _ in range(100):
            if getattr(pilot.app.screen, "detail", None) is not None:
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(frozen_app(), terminal_size=(120, 36), run_before=open_detail)


def test_help_screen(snap_compare) -> None:
    async def open_help(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(frozen_app(), terminal_size=(100, 36), run_before=open_help)


def test_light_theme_and_no_color(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = RingsyncApp(SyntheticSource.frozen(), theme="textual-light", refresh_seconds=3600)
    assert app.no_color
    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)
