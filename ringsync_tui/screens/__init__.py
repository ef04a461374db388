"""The dashboard's screens: the main screen (``screens.main``), a node's detail, the help."""

from __future__ import annotations

from ringsync_tui.screens.help import HelpScreen
from ringsync_tui.screens.node_detail import NodeDetailScreen

__all__ = ["HelpScreen", "NodeDetailScreen"]
