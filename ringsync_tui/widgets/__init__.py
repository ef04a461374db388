"""The dashboard's widgets. Each gets plain model values from the app (``show``/``add`` or
attributes) and tells the app things only by posting messages."""

from __future__ import annotations

from ringsync_tui.widgets.bandwidth_pane import BandwidthPane
from ringsync_tui.widgets.cluster_header import ClusterHeader
from ringsync_tui.widgets.disk_gauge import DiskGauge, render_gauge
from ringsync_tui.widgets.event_filter import EventFilter
from ringsync_tui.widgets.events_pane import EventQuery, EventsPane
from ringsync_tui.widgets.nodes_pane import NodesPane
from ringsync_tui.widgets.transfers_pane import TransfersPane

__all__ = ["BandwidthPane", "ClusterHeader", "DiskGauge", "EventFilter", "EventQuery",
           "EventsPane", "NodesPane", "TransfersPane", "render_gauge"]
