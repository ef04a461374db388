"""ClusterSource: where the dashboard gets its data and sends the operator's actions.

The app only knows this interface. ``EngineSource`` is the real one: it reads the embedded
coordinator's SyncFacade (node status as membership keeps it, the cluster-wide event stream)
and acts through the facade. ``ringsync_tui.synthetic.SyntheticSource`` feeds fixed or
generated data for snapshot tests and the load benchmark.

Every action returns the one-line confirmation the app shows as a notification, and raises
``ActionError`` with a one-line reason when it could not be done.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.facade import FacadeError, SyncFacade
from ringsync_tui.event_text import event_row
from ringsync_tui.model import ArtifactRow, ClusterSnapshot, EventRow, NodeDetail
from ringsync_tui.snapshot import build_snapshot, node_row, transfer_row


EventListener = Callable[[EventRow], None]


class ActionError(RuntimeError):
    """An operator action that could not be carried out; the message is one line."""


class ClusterSource(ABC):
    """Data in, actions out."""

    @abstractmethod
    async def start(self) -> None:
        """Open the event stream (called once, when the app mounts)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop delivering events (the app is closing)."""

    @abstractmethod
    async def snapshot(self) -> ClusterSnapshot:
        """The cluster as of now (cheap: the app calls it twice a second)."""

    @abstractmethod
    def recent_events(self) -> list[EventRow]:
        """Events already received, oldest first (bounded)."""

    @abstractmethod
    def listen(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` for each new event; returns a function that stops it."""

    def now(self) -> float:
        """The clock the panes use for ages (fixed in snapshot tests)."""
        return time.time()

    @abstractmethod
    async def priority_sync(self, node: str) -> str: ...

    @abstractmethod
    async def set_paused(self, node: str | None, paused: bool) -> str:
        """Pause or resume one node, or every node when ``node`` is None."""

    @abstractmethod
    async def recover(self, node: str | None) -> str:
        """Push now what has fewer verified copies than required (one node, or all)."""

    @abstractmethod
    async def verify(self, node: str) -> str:
        """Re-hash the node's stored copies."""

    @abstractmethod
    async def node_detail(self, node: str) -> NodeDetail: ...


class EngineSource(ClusterSource):
    """The embedded coordinator's view, through its SyncFacade."""

    def __init__(self, facade: SyncFacade, keep_events: int = 5000) -> None:
        self.facade = facade
        self.keep_events = keep_events
        self._feed: Any = None
        self._listeners: list[EventListener] = []
        self._paused: dict[str, tuple[bool, float]] = {}
        """Pauses a node confirmed, until membership brings a status taken after them."""

    async def start(self) -> None:
        self._feed = await self.facade.cluster_events(self.keep_events)
        self._feed.listen(self._deliver)

    async def stop(self) -> None:
        if self._feed is not None:
            self._feed.unlisten(self._deliver)
        self._listeners.clear()

    def _deliver(self, event: Any) -> None:
        row = event_row(event.to_dict())
        for listener in list(self._listeners):
            listener(row)

    def recent_events(self) -> list[EventRow]:
        return [event_row(e.to_dict()) for e in self._feed.recent] if self._feed else []

    def listen(self, listener: EventListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _hosts(self) -> dict[str, dict[str, Any]]:
        config = self.facade.node.config
        return {name: {"role": h.role, "provider": h.provider, "ephemeral": h.ephemeral}
                for name, h in config.hosts.items()}

    async def snapshot(self) -> ClusterSnapshot:
        status = await self.facade.get_sync_status()
        members = status.get("cluster", {})
        snap = build_snapshot(status["node"]["node"], status["node"], members, self._hosts())
        return self._with_confirmed_pauses(snap, members) if self._paused else snap

    def _with_confirmed_pauses(self, snap: ClusterSnapshot,
                               members: dict[str, Any]) -> ClusterSnapshot:
        """Show a pause the node confirmed before membership's next status shows it."""
        nodes = []
        for row in snap.nodes:
            confirmed = self._paused.get(row.name)
            seen = (members.get(row.name) or {}).get("last_seen") or 0.0
            if confirmed and row.name != snap.coordinator and seen < confirmed[1]:
                row = replace(row, paused=confirmed[0])
            elif confirmed:
                del self._paused[row.name]
            nodes.append(row)
        return replace(snap, nodes=tuple(nodes))

    async def _act(self, call: Any) -> Any:
        try:
            return await call
        except FacadeError as exc:
            raise ActionError(str(exc)) from None

    async def priority_sync(self, node: str) -> str:
        answer = await self._act(self.facade.trigger_priority_sync(
            reason="operator_priority", source_node=node))
        held = " (node is paused: it will push when resumed)" if answer.get("paused") else ""
        return f"priority sync requested on {node}{held}"

    async def set_paused(self, node: str | None, paused: bool) -> str:
        verb = "paused" if paused else "resumed"
        asked = time.time()
        if node is not None:
            call = self.facade.pause if paused else self.facade.resume
            await self._act(call(node, by="dashboard"))
            self._paused[node] = (paused, asked)
            return f"sync {verb} on {node}"
        call = self.facade.pause_cluster if paused else self.facade.resume_cluster
        answer = await self._act(call(by="dashboard"))
        failed = sorted(n for n, r in answer["nodes"].items() if r != "ok")
        for name in set(answer["nodes"]) - set(failed):
            self._paused[name] = (paused, asked)
        tail = f"; not reached: {', '.join(failed)}" if failed else ""
        return f"sync {verb} on {len(answer['nodes']) - len(failed)} nodes{tail}"

    async def recover(self, node: str | None) -> str:
        answer = await self._act(self.facade.recover(node, reason="operator_recovery",
                                                     by="dashboard"))
        where = node or "the cluster"
        failed = sorted(n for n, r in answer["nodes"].items() if "error" in r)
        tail = f"; not reached: {', '.join(failed)}" if failed else ""
        return (f"recovery on {where}: {answer['under_replicated']} under-replicated,"
                f" {answer['scheduled']} pushes started{tail}")

    async def verify(self, node: str) -> str:
        answer = await self._act(self.facade.verify(node, by="dashboard"))
        return f"verifying {answer.get('replicas', 0)} stored copies on {node}"

    async def node_detail(self, node: str) -> NodeDetail:
        status = await self.facade.get_sync_status()
        own = status["node"]
        if node == own["node"]:
            row, node_status = node_row(node, "up", own), own
        else:
            member = status.get("cluster", {}).get(node)
            if member is None:
                raise ActionError(f"unknown node {node!r}")
            node_status = member.get("status") or {}
            row = node_row(node, member.get("state", "unknown"), member.get("status"),
                           self._hosts().get(node), member.get("last_error"))
        transfers = node_status.get("transfers") or {}
        rows = [transfer_row(node, t) for t in
                [*transfers.get("in_flight", ()), *reversed(transfers.get("recent", ()))]]
        try:
            listing = await self._act(self.facade.node_artifacts(node))
        except ActionError as exc:
            return NodeDetail(row, (), 0, tuple(rows), error=str(exc))
        artifacts = tuple(
            ArtifactRow(key=f"{a['data_type']}/{a['path']}", config_key=a.get("config_key"),
                        size=int(a["size"]), sha256=a["sha256"], mtime=float(a["mtime"]),
                        origin=a["origin"],
                        holders=tuple(sorted(r["node"] for r in a.get("replicas", ())
                                             if r.get("verified_at") and r["sha256"] == a["sha256"])))
            for a in listing["artifacts"])
        return NodeDetail(row, artifacts, int(listing.get("total", len(artifacts))), tuple(rows))
