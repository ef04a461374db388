"""Typed events, the per-node bus with its JSONL log, and SSE framing."""

from engine.events.bus import EventBus, Subscription
from engine.events.types import (
    PAYLOADS, ArtifactDeleted, ArtifactSafe, BackpressureActivated, BackpressureReleased,
    CircuitBreakerChanged, CleanupCompleted, ComponentFailed, ComponentRecovered, DataSyncCompleted, DataSyncFailed, DataSyncStarted,
    DiskPressureChanged, Event, EventType, HookFailed, ModelDistributed, ModelPromoted, NodeDown,
    NodeRecovered, NodeSuspect, Payload, PrioritySyncRequested, ReplicaQuarantined,
    ReplicasVerified, Severity, SyncPaused, SyncResumed,
)

__all__ = [
    "PAYLOADS", "ArtifactDeleted", "ArtifactSafe", "BackpressureActivated",
    "BackpressureReleased", "CircuitBreakerChanged", "CleanupCompleted", "ComponentFailed",
    "ComponentRecovered", "DataSyncCompleted",
    "DataSyncFailed", "DataSyncStarted", "DiskPressureChanged", "Event", "EventBus", "EventType",
    "HookFailed", "ModelDistributed", "ModelPromoted", "NodeDown", "NodeRecovered",
    "NodeSuspect", "Payload", "PrioritySyncRequested", "ReplicaQuarantined", "ReplicasVerified",
    "Severity", "Subscription", "SyncPaused", "SyncResumed",
]
