"""SyncPushDaemon's levels: thresholds from config, hysteresis on the way down."""

from __future__ import annotations

import pytest

from engine.config.schema import PushThresholds
from engine.daemons.push import pressure_level

T = PushThresholds()


@pytest.mark.parametrize(("percent", "level"), [
    (0.0, "normal"), (49.99, "normal"), (50.0, "push"), (69.9, "push"), (70.0, "urgent"),
    (74.99, "urgent"), (75.0, "cleanup"), (120.0, "cleanup")])
def test_levels_rise_at_their_thresholds(percent: float, level: str) -> None:
    assert pressure_level(percent, T) == level


@pytest.mark.parametrize(("percent", "current", "level"), [
    (49.0, "push", "push"), (47.9, "push", "normal"), (73.5, "cleanup", "cleanup"),
    (72.9, "cleanup", "urgent"), (40.0, "cleanup", "normal"), (71.0, "push", "urgent")])
def test_levels_fall_only_clearly_below_their_threshold(percent: float, current: str,
                                                       level: str) -> None:
    assert pressure_level(percent, T, current) == level


def test_thresholds_come_from_config() -> None:
    custom = PushThresholds(push_percent=30, urgent_percent=40, cleanup_percent=45)
    assert pressure_level(35, custom) == "push" and pressure_level(46, custom) == "cleanup"
