"""What the dashboard shows, as plain immutable values.

A ``ClusterSnapshot`` is built from node status (``/status`` answers, as the coordinator's
membership keeps them) and an ``EventRow`` from each event of the cluster-wide stream. Widgets
receive these values as attributes and never ask the engine anything themselves, so a snapshot
test can feed them fixed values and get the same screen every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATE_ORDER = {"down": 0, "suspect": 1, "unknown": 2, "up": 3}
"""How the nodes pane ranks states: trouble first."""
PRESSURE_ORDER = {"cleanup": 0, "urgent": 1, "push": 2, "ok": 3}
"""How the nodes pane ranks disk pressure: fullest band first."""


@dataclass(frozen=True)
class Thresholds:
    """The cluster's disk-pressure thresholds (percent of a node's capacity)."""

    push: float = 50.0
    """At or above this a node pushes its finished artifacts."""
    urgent: float = 70.0
    """At or above this it pushes with urgent priority."""
    cleanup: float = 75.0
    """At or above this it deletes artifacts that have enough verified copies elsewhere."""
    min_copies: int = 2
    """Verified copies on other nodes an artifact needs before its source may be deleted."""

    def band(self, percent: float) -> str:
        """``ok``, ``push``, ``urgent`` or ``cleanup`` for a disk usage."""
        if percent >= self.cleanup:
            return "cleanup"
        if percent >= self.urgent:
            return "urgent"
        if percent >= self.push:
            return "push"
        return "ok"


@dataclass(frozen=True)
class ScrubRow:
    """Where a node's scrub of its stored copies is, and what it found since start."""

    passes: int = 0
    """Full passes completed."""
    position: int = 0
    """Copies checked in the current pass."""
    copies: int = 0
    """Copies the current pass covers."""
    rotted: int = 0
    """Copies found not matching (or missing), quarantined and asked for again."""
    rate_bytes_per_second: int = 0


@dataclass(frozen=True)
class NodeRow:
    """One node as the nodes pane shows it."""

    name: str
    role: str
    provider: str
    state: str
    """``up``, ``suspect``, ``down`` or ``unknown`` (never answered yet)."""
    used_bytes: int = 0
    total_bytes: int = 0
    percent: float = 0.0
    """Disk usage against the node's capacity (its quota when it has one)."""
    pending: int = 0
    """Pushes the node still has to make."""
    pending_bytes: int = 0
    paused: bool = False
    ephemeral: bool = False
    strategy: str = ""
    last_error: str | None = None
    backpressure: str | None = None
    """Why the node announces backpressure (``disk``, ``queue``); None when it takes syncs."""
    open_breakers: tuple[str, ...] = ()
    """Targets this node's circuit breaker holds back (open or half-open)."""
    scrub: ScrubRow | None = None
    """The background scrub's progress and findings (None: the node did not say)."""

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)

    def sort_key(self, thresholds: Thresholds) -> tuple[Any, ...]:
        """Trouble on top: down, suspect, fullest disk band, paused, fuller, then by name."""
        return (STATE_ORDER.get(self.state, 2), PRESSURE_ORDER[thresholds.band(self.percent)],
                not self.paused, -self.percent, self.name)


@dataclass(frozen=True)
class TransferRow:
    """One transfer, live or finished, as its sender reports it."""

    key: str
    """Unique across the cluster: ``<source>:<id>``."""
    source: str
    target: str
    artifact: str
    transport: str
    size: int
    progress: float
    """0..1, counting bytes that were already at the target (a resume)."""
    rate_bps: float
    eta_seconds: float | None
    attempt: int
    started: float
    finished: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class BandwidthRow:
    """One sender's budget towards one host (the sender's ``/bandwidth/status`` entry)."""

    node: str
    host: str
    limit_mbps: float
    allocated_mbps: float
    current_mbps: float
    active_transfers: int

    @property
    def key(self) -> str:
        return f"{self.node}->{self.host}"


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything but the event stream, as of ``taken_at``."""

    taken_at: float
    coordinator: str
    thresholds: Thresholds
    nodes: tuple[NodeRow, ...]
    live: tuple[TransferRow, ...] = ()
    """Transfers in flight, oldest first."""
    recent: tuple[TransferRow, ...] = ()
    """Finished and failed transfers, newest first."""
    bandwidth: tuple[BandwidthRow, ...] = ()

    def node(self, name: str) -> NodeRow | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def all_paused(self) -> bool:
        """True when every node that answers is paused."""
        answering = [n for n in self.nodes if n.state in ("up", "suspect")]
        return bool(answering) and all(n.paused for n in answering)

    def counts(self) -> dict[str, int]:
        """Nodes per state, plus live transfers."""
        counts = {state: 0 for state in STATE_ORDER}
        for n in self.nodes:
            counts[n.state] = counts.get(n.state, 0) + 1
        counts["transfers"] = len(self.live)
        return counts


@dataclass(frozen=True)
class EventRow:
    """One event of the cluster-wide stream, ready to print."""

    node: str
    seq: int
    ts: float
    type: str
    severity: str
    """``info``, ``warning`` or ``error``."""
    text: str
    """A one-line description of the payload."""
    subjects: frozenset[str] = field(default_factory=frozenset)
    """Every node the event is about (emitter, source, target, ...), for the node filter."""


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact a node knows, with who holds verified copies (node detail screen)."""

    key: str
    config_key: str | None
    size: int
    sha256: str
    mtime: float
    origin: str
    holders: tuple[str, ...]
    """Nodes with a verified copy whose hash matches the artifact's."""


@dataclass(frozen=True)
class NodeDetail:
    """What the node detail screen shows."""

    node: NodeRow
    artifacts: tuple[ArtifactRow, ...]
    total_artifacts: int
    transfers: tuple[TransferRow, ...]
    """The node's live and recent transfers, as sender or receiver."""
    error: str | None = None
    """Why the artifacts could not be fetched (the node is down, ...)."""
