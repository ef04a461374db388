"""Every key of the dashboard, pressed in a Pilot against a real cluster.

The coordinator's engine is embedded in the test's loop (as ``ringsync`` embeds it); the GPU
and CPU nodes are their own processes. Each test asserts the key's effect in the engine (files
that moved, a node's own ``/status``, its event log) and in the panes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ringsync_tui.app import RingsyncApp
from ringsync_tui.screens.help import HelpScreen
from ringsync_tui.screens.node_detail import NodeDetailScreen
from ringsync_tui.source import EngineSource
from ringsync_tui.widgets import EventsPane, NodesPane
from tests.support.cluster import Cluster, embedded_node, until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]

SIZE = (140, 44)


@asynccontextmanager
async def dashboard(cluster: Cluster) -> AsyncIterator[tuple[RingsyncApp, object]]:
    async with embedded_node(cluster, "coord") as node:
        app = RingsyncApp(EngineSource(node.facade))
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.snapshot is not None
                        and all(n.state == "up" for n in app.snapshot.nodes), 15, "all nodes up")
            yield app, pilot


async def select(app: RingsyncApp, pilot, name: str) -> None:
    """Move the nodes pane's cursor until ``name`` is the selected node."""
    pane = app.main.query_one(NodesPane)
    pane.focus()
    for _ in range(3 * len(app.snapshot.nodes)):
        if app.main.selected == name:
            return
        at_bottom = pane.selected is not None and pane.cursor_row >= len(pane.names) - 1
        await pilot.press("up" if at_bottom else "down")
        if at_bottom:  # back to the top, then down again
            for _ in range(len(pane.names)):
                await pilot.press("up")
    raise AssertionError(f"could not select {name}; selected {app.main.selected}")


def notified(app: RingsyncApp, text: str) -> bool:
    return any(text in str(n.message) for n in app._notifications)


def shown_events(app: RingsyncApp) -> list:
    return list(app.main.query_one(EventsPane).visible_rows())


def write_artifact(cluster: Cluster, node: str, name: str, size: int = 48_000) -> Path:
    path = cluster.data_root(node) / "npz" / "hex8_2p" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def slow_cluster(make_cluster) -> Cluster:
    """GPU nodes whose interval is far too long to explain a prompt push."""
    return make_cluster(gpus=2, cpus=1, interval=600, skip=("coord",))


async def test_p_makes_the_selected_gpu_node_push_now(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        artifact = write_artifact(slow_cluster, "gpu-2", "pressed-p.npz")
        await asyncio.sleep(0.6)  # finished: idle longer than finished_after
        await select(app, pilot, "gpu-2")
        await pilot.press("p")
        rel = "npz/hex8_2p/pressed-p.npz"
        target = await until(lambda: slow_cluster.stored("coord", "gpu-2", rel), 10,
                             "gpu-2 to push after p")
        assert sha(target) == sha(artifact)
        requested = slow_cluster.events("gpu-2", "PRIORITY_SYNC_REQUESTED")
        assert requested and requested[-1]["payload"]["reason"] == "operator_priority"
        await until(lambda: notified(app, "priority sync requested on gpu-2"), 5, "notification")
        await until(lambda: any(r.type == "PRIORITY_SYNC_REQUESTED" and r.node == "gpu-2"
                                for r in shown_events(app)), 10, "the event in the events pane")


async def test_space_pauses_all_sync_and_stops_new_transfers(make_cluster) -> None:
    cluster = make_cluster(gpus=2, interval=0.3, skip=("coord",))
    async with dashboard(cluster) as (app, pilot):
        await pilot.press("space")
        await until(lambda: all(cluster.status(n)["paused"] for n in ("gpu-1", "gpu-2")), 5,
                    "every node paused")
        await until(lambda: app.snapshot.all_paused, 3, "the panes to show the pause")
        assert "PAUSED" in str(app.main.query_one("#header").render())
        write_artifact(cluster, "gpu-1", "while-paused.npz")
        await asyncio.sleep(2.0)  # several 0.3 s cycles
        rel = "npz/hex8_2p/while-paused.npz"
        assert not cluster.stored("coord", "gpu-1", rel), "a paused cluster started a transfer"
        assert not cluster.status("gpu-1")["transfers"]["in_flight"]
        await pilot.press("space")
        await until(lambda: cluster.stored("coord", "gpu-1", rel), 10, "the push after resuming")
        assert not any(cluster.status(n)["paused"] for n in ("gpu-1", "gpu-2"))


async def test_shift_p_pauses_only_the_selected_node(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        await select(app, pilot, "gpu-1")
        await pilot.press("P")
        await until(lambda: slow_cluster.status("gpu-1")["paused"], 5, "gpu-1 paused")
        assert not slow_cluster.status("gpu-2")["paused"]
        await until(lambda: app.snapshot.node("gpu-1").paused, 3, "the nodes pane to show it")
        await select(app, pilot, "gpu-1")  # paused nodes sort differently: find it again
        await pilot.press("P")
        await until(lambda: not slow_cluster.status("gpu-1")["paused"], 5, "gpu-1 resumed")


async def test_r_brings_an_artifact_up_to_the_required_copies(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        artifact = write_artifact(slow_cluster, "gpu-1", "few-copies.npz")
        await asyncio.sleep(0.6)
        await app.source.priority_sync("gpu-1")  # one copy: on the coordinator
        rel = "npz/hex8_2p/few-copies.npz"
        await until(lambda: slow_cluster.stored("coord", "gpu-1", rel), 10, "the first copy")
        holders = lambda: [n for n in ("coord", "gpu-2", "cpu-1")  # noqa: E731
                           if slow_cluster.stored(n, "gpu-1", rel)]
        assert holders() == ["coord"]
        await pilot.press("r")  # nothing selected: the whole cluster
        await until(lambda: len(holders()) >= 2, 15, "a second verified copy")
        assert all(sha(slow_cluster.stored(n, "gpu-1", rel)) == sha(artifact) for n in holders())
        await until(lambda: notified(app, "recovery on the cluster"), 5, "notification")


async def test_v_verifies_the_selected_nodes_copies(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        write_artifact(slow_cluster, "gpu-1", "to-verify.npz")
        await asyncio.sleep(0.6)
        await app.source.priority_sync("gpu-1")
        await until(lambda: slow_cluster.stored("coord", "gpu-1", "npz/hex8_2p/to-verify.npz"),
                    10, "a copy on the coordinator")
        await select(app, pilot, "coord")
        await pilot.press("v")
        await until(lambda: any(r.type == "REPLICAS_VERIFIED" and r.node == "coord"
                                for r in shown_events(app)), 10, "the verification's event")
        await until(lambda: notified(app, "verifying"), 5, "notification")


async def test_slash_filters_events_and_enter_opens_the_node_detail(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        write_artifact(slow_cluster, "gpu-1", "detail.npz")
        await asyncio.sleep(0.6)
        await select(app, pilot, "gpu-1")
        await pilot.press("p")
        await until(lambda: any(r.type == "DATA_SYNC_COMPLETED" for r in shown_events(app)), 10,
                    "a completed sync in the events pane")
        await pilot.press("slash")
        await pilot.press(*"type:priority")
        await pilot.press("enter")
        await pilot.pause()
        rows = shown_events(app)
        assert rows and all("PRIORITY" in r.type for r in rows)
        await pilot.press("escape")
        await select(app, pilot, "gpu-1")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, NodeDetailScreen), 5, "the detail screen")
        assert app.screen.node == "gpu-1"
        await until(lambda: app.screen.detail is not None
                    and any(a.key.endswith("detail.npz") for a in app.screen.detail.artifacts),
                    10, "gpu-1's artifacts on the detail screen")
        await pilot.press("escape")
        assert not isinstance(app.screen, NodeDetailScreen)


async def test_question_mark_helps_and_q_quits(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), 5, "the help screen")
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await until(lambda: not app.is_running, 5, "the app to exit")


async def test_a_stopped_node_goes_down_and_comes_back(slow_cluster: Cluster) -> None:
    async with dashboard(slow_cluster) as (app, pilot):
        slow_cluster.stop_node("gpu-2")
        await until(lambda: app.snapshot.node("gpu-2").state == "down", 10, "gpu-2 down")
        assert any(r.type == "NODE_SUSPECT" and "gpu-2" in r.subjects for r in shown_events(app))
        top = app.main.query_one(NodesPane)
        assert top.get_row_at(0)[0].plain.startswith("gpu-2") or "gpu-2" in str(top.get_row_at(0)[0])
        slow_cluster.start_node("gpu-2")
        await until(lambda: app.snapshot.node("gpu-2").state == "up", 20, "gpu-2 up again")
        await until(lambda: any(r.type == "NODE_RECOVERED" and "gpu-2" in r.subjects
                                for r in shown_events(app)), 10, "NODE_RECOVERED shown")
