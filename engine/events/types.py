"""Event types and their payloads: exactly one payload schema per type.

A payload is a frozen dataclass whose class names its event type, so an event
cannot be emitted with a shape other than its type's. Events travel as JSON
envelopes ``{"seq", "ts", "node", "type", "payload"}`` (JSONL log, SSE stream).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class EventType(str, enum.Enum):
    DATA_SYNC_STARTED = "DATA_SYNC_STARTED"
    DATA_SYNC_COMPLETED = "DATA_SYNC_COMPLETED"
    DATA_SYNC_FAILED = "DATA_SYNC_FAILED"
    NODE_SUSPECT = "NODE_SUSPECT"
    NODE_DOWN = "NODE_DOWN"
    NODE_RECOVERED = "NODE_RECOVERED"
    BACKPRESSURE_ACTIVATED = "BACKPRESSURE_ACTIVATED"
    BACKPRESSURE_RELEASED = "BACKPRESSURE_RELEASED"
    MODEL_PROMOTED = "MODEL_PROMOTED"
    MODEL_DISTRIBUTED = "MODEL_DISTRIBUTED"
    SYNC_PAUSED = "SYNC_PAUSED"
    SYNC_RESUMED = "SYNC_RESUMED"
    PRIORITY_SYNC_REQUESTED = "PRIORITY_SYNC_REQUESTED"
    REPLICAS_VERIFIED = "REPLICAS_VERIFIED"
    REPLICA_QUARANTINED = "REPLICA_QUARANTINED"
    DISK_PRESSURE_CHANGED = "DISK_PRESSURE_CHANGED"
    ARTIFACT_DELETED = "ARTIFACT_DELETED"
    CLEANUP_COMPLETED = "CLEANUP_COMPLETED"
    ARTIFACT_SAFE = "ARTIFACT_SAFE"
    CIRCUIT_BREAKER_CHANGED = "CIRCUIT_BREAKER_CHANGED"
    HOOK_FAILED = "HOOK_FAILED"
    COMPONENT_FAILED = "COMPONENT_FAILED"
    COMPONENT_RECOVERED = "COMPONENT_RECOVERED"


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Payload:
    """Base of every payload; subclasses set ``event_type`` and ``severity``."""

    event_type: ClassVar[EventType]
    severity: ClassVar[Severity] = Severity.INFO

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataSyncStarted(Payload):
    """A sync cycle began moving ``files`` artifacts from ``source``."""

    event_type: ClassVar[EventType] = EventType.DATA_SYNC_STARTED
    source: str
    targets: list[str]
    files: int
    bytes: int
    reason: str
    urgency: str = "normal"
    strategy: str = "push_from_generator"


@dataclass(frozen=True)
class DataSyncCompleted(Payload):
    """Artifacts arrived verified at ``target`` (emitted by sender per cycle and by receiver per file)."""

    event_type: ClassVar[EventType] = EventType.DATA_SYNC_COMPLETED
    source: str
    target: str
    files: int
    bytes: int
    artifacts: list[str]
    reason: str
    urgency: str = "normal"
    strategy: str = "push_from_generator"
    seconds: float = 0.0


@dataclass(frozen=True)
class DataSyncFailed(Payload):
    """One artifact failed to reach ``target``; ``retry_in_seconds`` is None when no retry is planned."""

    event_type: ClassVar[EventType] = EventType.DATA_SYNC_FAILED
    severity: ClassVar[Severity] = Severity.ERROR
    source: str
    target: str
    artifact: str
    error: str
    attempt: int
    retry_in_seconds: float | None
    reason: str
    strategy: str = "push_from_generator"


@dataclass(frozen=True)
class NodeSuspect(Payload):
    """A node missed a status check."""

    event_type: ClassVar[EventType] = EventType.NODE_SUSPECT
    severity: ClassVar[Severity] = Severity.WARNING
    node: str
    misses: int
    error: str


@dataclass(frozen=True)
class NodeDown(Payload):
    """A node missed enough status checks to be treated as gone."""

    event_type: ClassVar[EventType] = EventType.NODE_DOWN
    severity: ClassVar[Severity] = Severity.ERROR
    node: str
    misses: int
    error: str


@dataclass(frozen=True)
class NodeRecovered(Payload):
    """A node that was down answers again."""

    event_type: ClassVar[EventType] = EventType.NODE_RECOVERED
    node: str
    down_seconds: float


@dataclass(frozen=True)
class BackpressureActivated(Payload):
    """A node asks senders to hold non-urgent syncs to it."""

    event_type: ClassVar[EventType] = EventType.BACKPRESSURE_ACTIVATED
    severity: ClassVar[Severity] = Severity.WARNING
    node: str
    disk_percent: float
    queue_depth: int
    reason: str


@dataclass(frozen=True)
class BackpressureReleased(Payload):
    """A node accepts normal syncs again."""

    event_type: ClassVar[EventType] = EventType.BACKPRESSURE_RELEASED
    node: str
    disk_percent: float
    queue_depth: int


@dataclass(frozen=True)
class ModelPromoted(Payload):
    """Training promoted a checkpoint that must reach every GPU node."""

    event_type: ClassVar[EventType] = EventType.MODEL_PROMOTED
    path: str
    sha256: str
    size: int
    config_key: str


@dataclass(frozen=True)
class ModelDistributed(Payload):
    """A promoted model is verified on ``nodes``."""

    event_type: ClassVar[EventType] = EventType.MODEL_DISTRIBUTED
    path: str
    sha256: str
    nodes: list[str]
    transport: str
    seconds: float


@dataclass(frozen=True)
class SyncPaused(Payload):
    """Sync stopped starting new transfers on ``node``."""

    event_type: ClassVar[EventType] = EventType.SYNC_PAUSED
    severity: ClassVar[Severity] = Severity.WARNING
    node: str
    requested_by: str


@dataclass(frozen=True)
class SyncResumed(Payload):
    """Sync on ``node`` runs again."""

    event_type: ClassVar[EventType] = EventType.SYNC_RESUMED
    node: str
    requested_by: str


@dataclass(frozen=True)
class PrioritySyncRequested(Payload):
    """Someone asked ``source_node`` to push now."""

    event_type: ClassVar[EventType] = EventType.PRIORITY_SYNC_REQUESTED
    reason: str
    source_node: str
    config_key: str | None


@dataclass(frozen=True)
class ReplicasVerified(Payload):
    """A verification run re-hashed every replica ``node`` holds (one summary per run).

    ``mismatched`` counts copies whose bytes no longer match their artifact's SHA-256
    (stored copies are quarantined; a changed own source is left for the scanner);
    ``missing`` counts replicas whose file is gone. Neither counts as a copy any more.
    """

    event_type: ClassVar[EventType] = EventType.REPLICAS_VERIFIED
    node: str
    checked: int
    matched: int
    mismatched: int
    missing: int
    seconds: float
    requested_by: str


@dataclass(frozen=True)
class ReplicaQuarantined(Payload):
    """A copy on ``node`` stopped counting: its bytes hash to ``actual_sha256`` (None: the
    file is missing) instead of ``expected_sha256``. ``quarantined_to`` is where the bad
    bytes were moved, relative to the data root (None when there was nothing to move)."""

    event_type: ClassVar[EventType] = EventType.REPLICA_QUARANTINED
    severity: ClassVar[Severity] = Severity.ERROR
    node: str
    artifact: str
    expected_sha256: str
    actual_sha256: str | None
    quarantined_to: str | None


@dataclass(frozen=True)
class DiskPressureChanged(Payload):
    """``node``'s usage crossed a threshold: ``level`` is ``normal`` (below push_percent),
    ``push``, ``urgent`` or ``cleanup``; ``percent`` is used/total of its capacity (its quota
    when one is configured, else its disk)."""

    event_type: ClassVar[EventType] = EventType.DISK_PRESSURE_CHANGED
    severity: ClassVar[Severity] = Severity.WARNING
    node: str
    level: str
    previous: str
    percent: float
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class ArtifactDeleted(Payload):
    """``node`` deleted its source of ``artifact`` to free space, after each node in
    ``vouched_by`` (never ``node`` itself) answered, asked at that moment, that it stores a
    copy whose SHA-256 is ``sha256``."""

    event_type: ClassVar[EventType] = EventType.ARTIFACT_DELETED
    node: str
    artifact: str
    sha256: str
    bytes: int
    vouched_by: list[str]
    reason: str


@dataclass(frozen=True)
class CleanupCompleted(Payload):
    """One cleanup run on ``node``: what it deleted and freed, usage before and after, and
    why the rest stayed (``short_of_copies``: fewer live vouches than ``required``;
    ``unfinished``: being written or changed since hashed; ``busy``: being pushed)."""

    event_type: ClassVar[EventType] = EventType.CLEANUP_COMPLETED
    node: str
    deleted: int
    freed_bytes: int
    percent_before: float
    percent_after: float
    required: int
    short_of_copies: int
    unfinished: int
    busy: int


@dataclass(frozen=True)
class ArtifactSafe(Payload):
    """An ephemeral ``node``'s artifact is verified on the durable (non-ephemeral) nodes
    ``durable_on``: losing ``node`` now loses nothing of it. ``queued_seconds`` is how long it
    waited in the write-through queue."""

    event_type: ClassVar[EventType] = EventType.ARTIFACT_SAFE
    node: str
    artifact: str
    sha256: str
    bytes: int
    durable_on: list[str]
    queued_seconds: float


@dataclass(frozen=True)
class CircuitBreakerChanged(Payload):
    """``node``'s breaker for transfers to ``target`` went from ``previous`` to ``state``
    (``closed``, ``open``, ``half_open``) after ``failures`` consecutive failures;
    ``retry_in_seconds`` is when an open breaker lets a probe through."""

    event_type: ClassVar[EventType] = EventType.CIRCUIT_BREAKER_CHANGED
    severity: ClassVar[Severity] = Severity.WARNING
    node: str
    target: str
    state: str
    previous: str
    failures: int
    retry_in_seconds: float | None
    error: str | None


@dataclass(frozen=True)
class HookFailed(Payload):
    """The hook ``hook`` (its command's first word) run for ``event`` (and ``artifact``,
    when it is about one) failed: exit ``exit_code`` (None: it could not start or was killed
    after its timeout), with the end of its stderr in ``error``."""

    event_type: ClassVar[EventType] = EventType.HOOK_FAILED
    severity: ClassVar[Severity] = Severity.ERROR
    node: str
    hook: str
    event: str
    artifact: str | None
    exit_code: int | None
    error: str
    seconds: float


@dataclass(frozen=True)
class ComponentFailed(Payload):
    """The long-running component ``component`` of ``node`` failed (``error``): the
    ``streak``-th failure in a row; the supervisor starts it again in ``restart_in_seconds``
    (None: it was stopping and is not restarted)."""

    event_type: ClassVar[EventType] = EventType.COMPONENT_FAILED
    severity: ClassVar[Severity] = Severity.ERROR
    node: str
    component: str
    error: str
    streak: int
    restart_in_seconds: float | None


@dataclass(frozen=True)
class ComponentRecovered(Payload):
    """``component`` of ``node`` ran a step without failing after ``failures`` failures in a
    row, the first ``down_seconds`` ago."""

    event_type: ClassVar[EventType] = EventType.COMPONENT_RECOVERED
    node: str
    component: str
    failures: int
    down_seconds: float


PAYLOADS: dict[EventType, type[Payload]] = {
    cls.event_type: cls for cls in Payload.__subclasses__()  # type: ignore[misc]
}
assert set(PAYLOADS) == set(EventType), "every event type needs exactly one payload class"


@dataclass(frozen=True)
class Event:
    """One emitted event: the envelope around a payload."""

    seq: int
    """The emitting node's event sequence number (monotonic, survives restarts)."""
    ts: float
    """Unix time of emission."""
    node: str
    """The emitting node."""
    payload: Payload
    """The typed payload; its class fixes the type."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def type(self) -> EventType:
        return self.payload.event_type

    @property
    def severity(self) -> Severity:
        return self.payload.severity

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "node": self.node, "type": self.type.value,
                "severity": self.severity.value, "payload": self.payload.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        """Parse an envelope; raises ValueError when the payload does not fit its type."""
        try:
            payload_cls = PAYLOADS[EventType(data["type"])]
            names = {f.name for f in dataclasses.fields(payload_cls)}
            given = set(data["payload"])
            if given != names:
                raise ValueError(f"{data['type']} payload fields {sorted(given)} != {sorted(names)}")
            payload = payload_cls(**data["payload"])
            return cls(int(data["seq"]), float(data["ts"]), str(data["node"]), payload)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an event envelope: {exc}") from exc
