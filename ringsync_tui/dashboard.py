"""Run the dashboard with the coordinator's engine embedded in the same asyncio loop.

    ringsync                                   the coordinator of the default config
    ringsync tui --config FILE [--node NAME]   NAME defaults to the config's coordinator
    ringsync demo                              the demo cluster, through ``demo_view``

The node starts first (its API, membership and daemons), then the app runs until the
operator quits or SIGTERM arrives; the node is then stopped the same graceful way as a
headless one. While the app owns the terminal, logging goes to a file.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.aio import wait_event
from engine.config import ClusterConfig, ConfigError, load_config
from engine.manifest.store import ManifestSchemaError
from engine.rootlock import RootInUse
from engine.main import log_to_file

if TYPE_CHECKING:
    from engine.demo.run import DemoView
    from engine.node import Node


def pick_coordinator(config: ClusterConfig, name: str | None, source: Path) -> str:
    """The node the dashboard embeds; raises ConfigError naming the problem in one line."""
    name = name or config.coordinator.name
    if name not in config.hosts:
        raise ConfigError(f"{name!r} is not a host in this config (hosts: {', '.join(config.hosts)})",
                          file=str(source), field="--node")
    if config.host(name).role != "coordinator":
        raise ConfigError(f"the dashboard runs on the coordinator ({config.coordinator.name});"
                          f" {name} is a {config.host(name).role} node: run it with --engine-only",
                          file=str(source), field="--node")
    return name


async def show(node: "Node", theme: str, stop: asyncio.Event | None = None,
               duration: float | None = None) -> None:
    """Run the dashboard over ``node`` until the operator quits, ``stop`` is set or
    ``duration`` seconds pass."""
    from ringsync_tui.app import RingsyncApp
    from ringsync_tui.source import EngineSource

    app = RingsyncApp(EngineSource(node.facade), theme=theme)
    stop = stop or asyncio.Event()

    async def close_when_stopped() -> None:
        if duration is None:
            await stop.wait()
        else:
            await wait_event(stop, duration)
        app.exit()

    watcher = asyncio.create_task(close_when_stopped(), name="dashboard-stop")
    try:
        await app.run_async()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def demo_view(theme: str) -> "DemoView":
    """What ``ringsync demo`` shows the cluster with."""
    async def view(node: "Node", stop: asyncio.Event, duration: float | None) -> None:
        await show(node, theme, stop, duration)
    return view


async def run_embedded(config: ClusterConfig, name: str, theme: str) -> None:
    from engine.node import Node

    node = Node(config, name)
    await node.start()
    log_to_file(node.data.state / "dashboard.log")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await show(node, theme, stop)
    finally:
        await node.stop()


def run_dashboard(config_path: Path, node: str | None, theme: str) -> int:
    """Entry point of ``ringsync`` / ``ringsync tui``; returns the exit code."""
    try:
        config = load_config(config_path)
        name = pick_coordinator(config, node, config_path)
    except ConfigError as exc:
        print(f"ringsync: config error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_embedded(config, name, theme))
    except (OSError, RootInUse, ManifestSchemaError) as exc:
        print(f"ringsync: cannot start node {name}: {exc}", file=sys.stderr)
        return 1
    return 0
