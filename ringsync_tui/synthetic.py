"""SyntheticSource: a made-up cluster for snapshot tests and the dashboard load benchmark.

``SyntheticSource(nodes=64, transfers=200, events_per_second=1000)`` generates a moving
cluster and an event stream at a steady rate; ``SyntheticSource.frozen()`` is a small fixed
cluster with a fixed clock and no background activity, so screenshots are identical run to run.
Actions change the synthetic state at once (pausing marks nodes paused, recovery and priority
sync emit the events a real engine would), so a key's effect can be timed on screen.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable

from ringsync_tui.model import (ArtifactRow, BandwidthRow, ClusterSnapshot, EventRow, NodeDetail,
                                NodeRow, Thresholds, TransferRow)
from ringsync_tui.source import ActionError, ClusterSource, EventListener

FROZEN_NOW = 1_800_000_000.0
"""2027-01-15 08:00:00 UTC: the clock of frozen snapshots."""
PROVIDERS = ("vast", "lambda", "runpod", "aws")
EVENT_TYPES = (("DATA_SYNC_COMPLETED", "info"), ("DATA_SYNC_STARTED", "info"),
               ("DATA_SYNC_FAILED", "error"), ("NODE_SUSPECT", "warning"))


class SyntheticSource(ClusterSource):
    """A cluster that exists only in memory."""

    def __init__(self, nodes: int = 64, transfers: int = 200, events_per_second: float = 1000.0,
                 seed: int = 7, keep_events: int = 5000, clock: Callable[[], float] | None = None,
                 animate: bool = True) -> None:
        self.rng = random.Random(seed)
        self._clock = clock
        self.animate = animate
        """False: nothing changes unless an action changes it (frozen screenshots)."""
        self.events_per_second = events_per_second
        self.thresholds = Thresholds()
        cpus = max(1, nodes // 16) if nodes > 2 else 0
        names = ["coordinator", *(f"gpu-{i:02d}" for i in range(1, nodes - cpus)),
                 *(f"cpu-{i}" for i in range(1, cpus + 1))][:max(1, nodes)]
        self.nodes: dict[str, NodeRow] = {}
        for index, name in enumerate(names):
            role = "coordinator" if index == 0 else name.split("-")[0]
            percent = float(self.rng.choice((12, 35, 48, 55, 63, 71, 74, 78))) if role == "gpu" else 20.0
            total = (64 if role == "gpu" else 512) * 2**30
            self.nodes[name] = NodeRow(
                name=name, role=role, provider=PROVIDERS[index % len(PROVIDERS)], state="up",
                used_bytes=int(total * percent / 100), total_bytes=total, percent=percent,
                pending=self.rng.randrange(0, 40) if role == "gpu" else 0,
                ephemeral=role == "gpu" and index % 3 == 0,
                strategy="ephemeral" if role == "gpu" and index % 3 == 0 else "push_from_generator")
        self.coordinator = names[0]
        self.live: list[TransferRow] = [self._transfer(i) for i in range(transfers)]
        self.recent: collections.deque[TransferRow] = collections.deque(maxlen=30)
        self.events: collections.deque[EventRow] = collections.deque(maxlen=keep_events)
        self._listeners: list[EventListener] = []
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self.emitted = 0
        """Events generated so far."""

    @classmethod
    def frozen(cls, nodes: int = 6, transfers: int = 4) -> "SyntheticSource":
        """A small fixed cluster: same screen every run (fixed clock, rates and names)."""
        source = cls(nodes=nodes, transfers=transfers, events_per_second=0, seed=3,
                     clock=lambda: FROZEN_NOW, animate=False)
        gpus = [n for n in source.nodes if n.startswith("gpu")]
        if gpus:
            source._replace(gpus[-1], state="down", last_error="ClientConnectorError: refused")
        if len(gpus) > 1:
            source._replace(gpus[0], paused=True)
        for i in range(12):
            source._emit(EVENT_TYPES[i % len(EVENT_TYPES)][0], gpus[i % len(gpus)] if gpus
                         else source.coordinator, ts=FROZEN_NOW - 60 + 5 * i)
        for t in source.live[:2]:
            source.recent.append(TransferRow(**{**t.__dict__, "key": t.key + "r",
                                                "finished": FROZEN_NOW - 30, "progress": 1.0}))
        source.recent.append(TransferRow(**{**source.live[-1].__dict__, "key": "failed",
                                            "finished": FROZEN_NOW - 10,
                                            "error": "422 sha256 mismatch"}))
        return source

    # -- the synthetic world ----------------------------------------------------------------
    def now(self) -> float:
        return self._clock() if self._clock else time.time()

    def _replace(self, name: str, **fields: object) -> None:
        self.nodes[name] = NodeRow(**{**self.nodes[name].__dict__, **fields})

    def _transfer(self, i: int) -> TransferRow:
        gpus = [n for n in self.nodes if n.startswith("gpu")] or [self.coordinator]
        source = gpus[i % len(gpus)]
        size = (1 + (i * 37) % 900) * 2**20
        return TransferRow(
            key=f"{source}:{i}", source=source, target=self.coordinator,
            artifact=f"games/hex8_2p/selfplay_{i:05d}.db", transport="http", size=size,
            progress=((i * 13) % 100) / 100, rate_bps=float(5_000_000 + (i * 7919) % 40_000_000),
            eta_seconds=float((i * 7) % 300), attempt=1 + i % 3, started=FROZEN_NOW - 100 + i)

    def _emit(self, kind: str, node: str, text: str | None = None, ts: float | None = None,
              severity: str | None = None) -> None:
        self._seq += 1
        sev = severity or dict(EVENT_TYPES).get(kind, "info")
        row = EventRow(node=node, seq=self._seq, ts=self.now() if ts is None else ts, type=kind,
                       severity=sev, text=text or f"{node} → {self.coordinator}: event {self._seq}",
                       subjects=frozenset({node, self.coordinator}))
        self.events.append(row)
        self.emitted += 1
        for listener in list(self._listeners):
            listener(row)

    async def _generate(self) -> None:
        """Emit events at ``events_per_second`` in 20 ms batches; move transfers and disks."""
        loop, carry, names = asyncio.get_running_loop(), 0.0, list(self.nodes)
        last = loop.time()
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            carry += self.events_per_second * (now - last)  # a late wake-up catches up
            last = now
            for _ in range(int(carry)):
                kind, _sev = EVENT_TYPES[self.rng.randrange(len(EVENT_TYPES))]
                self._emit(kind, names[self.rng.randrange(len(names))])
            carry -= int(carry)

    # -- ClusterSource ----------------------------------------------------------------------
    async def start(self) -> None:
        if self.animate and self.events_per_second > 0:
            self._task = asyncio.create_task(self._generate(), name="synthetic-events")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._listeners.clear()

    async def snapshot(self) -> ClusterSnapshot:
        if self.animate:
            self.live = [TransferRow(**{**t.__dict__, "progress": (t.progress + 0.01) % 1.0})
                         for t in self.live]
        bandwidth = tuple(
            BandwidthRow(node=name, host=self.coordinator, limit_mbps=100.0,
                         allocated_mbps=100.0 if n.pending else 0.0,
                         current_mbps=float((hash(name) + int(self.now())) % 90) if self.animate
                         else float(10 * (i % 9)), active_transfers=min(3, n.pending))
            for i, (name, n) in enumerate(self.nodes.items()) if n.role == "gpu")
        return ClusterSnapshot(taken_at=self.now(), coordinator=self.coordinator,
                               thresholds=self.thresholds, nodes=tuple(self.nodes.values()),
                               live=tuple(self.live), recent=tuple(reversed(self.recent)),
                               bandwidth=bandwidth)

    def recent_events(self) -> list[EventRow]:
        return list(self.events)

    def listen(self, listener: EventListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _known(self, node: str) -> None:
        if node not in self.nodes:
            raise ActionError(f"unknown node {node!r}")

    async def priority_sync(self, node: str) -> str:
        self._known(node)
        self._emit("PRIORITY_SYNC_REQUESTED", node, f"priority sync of {node} (operator_priority)")
        return f"priority sync requested on {node}"

    async def set_paused(self, node: str | None, paused: bool) -> str:
        names = [node] if node else list(self.nodes)
        for name in names:
            self._known(name)
            self._replace(name, paused=paused)
            self._emit("SYNC_PAUSED" if paused else "SYNC_RESUMED", name,
                       f"sync {'paused' if paused else 'resumed'} on {name} by dashboard",
                       severity="warning" if paused else "info")
        return f"sync {'paused' if paused else 'resumed'} on {node or f'{len(names)} nodes'}"

    async def recover(self, node: str | None) -> str:
        if node:
            self._known(node)
        self._emit("PRIORITY_SYNC_REQUESTED", node or self.coordinator,
                   f"priority sync of {node or 'the cluster'} (operator_recovery)")
        return f"recovery on {node or 'the cluster'}: 0 under-replicated, 0 pushes started"

    async def verify(self, node: str) -> str:
        self._known(node)
        self._emit("REPLICAS_VERIFIED", node, f"{node}: 12 checked, 12 matched")
        return f"verifying 12 stored copies on {node}"

    async def node_detail(self, node: str) -> NodeDetail:
        self._known(node)
        row = self.nodes[node]
        artifacts = tuple(
            ArtifactRow(key=f"games/hex8_2p/selfplay_{i:05d}.db", config_key="hex8_2p",
                        size=(i + 1) * 3 * 2**20, sha256=f"{i:02x}" * 32,
                        mtime=FROZEN_NOW - 600 + 60 * i, origin=node,
                        holders=(node, self.coordinator)[: 1 + (i % 2)])
            for i in range(6))
        transfers = tuple(t for t in self.live if node in (t.source, t.target))[:10]
        return NodeDetail(row, artifacts, len(artifacts), transfers)
